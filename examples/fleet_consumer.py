"""A fleet's event consumer that scales out: run one instance, or five, against the same broker.

Every gateway publishes its events on ``gateway/<id>/event/<entity>`` (QoS 1, at least once; each
payload carries an ``id``, see docs/mqtt.md). A consumer that reads the whole fleet subscribes with an
MQTT 5 **shared subscription**::

    $share/<group>/gateway/+/event/#

and the broker hands each message to *one* of the group's connected members: start a second
instance with the same ``--group`` and the load splits between them (Mosquitto, EMQX, HiveMQ and
VerneMQ support it; RabbitMQ's MQTT plugin lists shared subscriptions among its limitations, and
3.10, the Debian 12 package, speaks MQTT 3.1.1 only: see docs/fleet.md).

At-least-once delivery means duplicates: a gateway re-sends what a broker never acknowledged (after a
failover or an outage), and a broker redelivers to another member what a member received but did
not acknowledge before it died. So the consumer drops what it has already seen, by event id. The
:class:`SeenIds` here is in memory (bounded, oldest forgotten first): enough for the duplicates one
instance sees. Instances that share a group should share the check too, where the events end up: a
unique key on the event id in the database they write to. The test (tests/test_fleet_consumer.py)
passes one :class:`SeenIds` to both instances to stand for that.

Run it::

    python examples/fleet_consumer.py --host broker.example.net --port 1883 --group fleet-db

It prints one JSON line per new event (gateway id added). Only paho-mqtt is needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

EVENTS = "gateway/+/event/#"


class SeenIds:
    """Event ids already handled, the newest ``size`` of them; thread-safe (one per process, or shared)."""

    def __init__(self, size: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self.duplicates = 0

    def first_time(self, event_id: str) -> bool:
        """True the first time ``event_id`` is offered, False for a duplicate (counted)."""
        with self._lock:
            if event_id in self._ids:
                self._ids.move_to_end(event_id)
                self.duplicates += 1
                return False
            self._ids[event_id] = None
            if len(self._ids) > self._size:
                self._ids.popitem(last=False)
            return True


Handler = Callable[[str, dict[str, Any]], None]
"""Called with (gateway id, event payload) once per event id, on the consumer's network thread."""


class FleetConsumer:
    """One member of a shared-subscription group. ``client_id`` with ``session_expiry`` > 0 keeps the
    member's session (and what the broker queued for it) across its own restarts."""

    def __init__(self, host: str, port: int, group: str, handle: Handler, *, seen: SeenIds | None = None,
                 client_id: str = "", session_expiry: int = 0) -> None:
        self.topic = f"$share/{group}/{EVENTS}"
        self.seen = seen if seen is not None else SeenIds()
        self.received = 0
        """Messages delivered to this instance, duplicates included."""
        self._handle = handle
        self._host, self._port = host, port
        self._session_expiry = session_expiry
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._on_message

    def start(self) -> None:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho's is unannotated
        properties.SessionExpiryInterval = self._session_expiry
        self.client.connect(self._host, self._port, clean_start=self._session_expiry == 0, properties=properties)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe(self.topic, qos=1)  # again on every connection

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.received += 1
        try:
            payload = json.loads(message.payload)
            event_id = str(payload["id"])
        except (ValueError, KeyError, TypeError):
            print(f"not an event on {message.topic}: {message.payload[:100]!r}", file=sys.stderr)
            return
        if self.seen.first_time(event_id):
            self._handle(message.topic.split("/")[1], payload)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--group", default="fleet")
    parser.add_argument("--client-id", default="")
    parser.add_argument("--session-expiry", type=int, default=0)
    args = parser.parse_args(argv)

    def show(gateway: str, event: dict[str, Any]) -> None:
        print(json.dumps({"gateway": gateway, **event}), flush=True)

    consumer = FleetConsumer(args.host, args.port, args.group, show, client_id=args.client_id,
                             session_expiry=args.session_expiry)
    consumer.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        consumer.stop()


if __name__ == "__main__":
    main()
