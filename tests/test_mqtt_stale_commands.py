"""Hub commands the broker kept while the gateway was away, and the state topic that must equal the pin.

The gateway's session is persistent (MQTT 5 ``clean_start = false``, QoS 1 subscriptions), so the
broker queues the hub's commands while the gateway is stopped or cut off, and delivers them at the
next connection. Such a command may be minutes or hours old: switching a siren on for it is wrong.
A real Mosquitto, the real application and gpiozero's mock pins.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from gpiozero.pins.mock import MockFactory
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.app import Gateway
from gateway.config import load_config
from tests import toml_kit as toml
from tests.conftest import Broker
from tests.helpers import write_config
from tests.mqtt_support import Recorder, bridge_of, recorder, running, wait_until

SIREN_PIN = 17

def siren_config(gateway_id: str, port: int, pin: int) -> str:
    return toml.config(toml.gateway(gateway_id), toml.mqtt(port, reconnect_max=1),
                       toml.device("siren", "gpio.siren", pin=pin, off_s=0))


class SlowToOpenPins(MockFactory):  # type: ignore[misc]
    """GPIO that takes its time to open, as a real board's may (an overlay, a busy SPI expander):
    a pin opens only once ``ready()`` says so. Lets a test hold the drivers' start until the broker's
    backlog has arrived, the order the defect needed, without racing the clock."""

    def __init__(self) -> None:
        super().__init__()
        self.ready: Callable[[], bool] = lambda: True

    def pin(self, name: Any, pin_class: Any = None, **kwargs: Any) -> Any:
        wait_until(self.ready, timeout=10, what="the pin allowed to open")
        return super().pin(name, pin_class, **kwargs)


def _gateway(tmp_path: Path, gateway_id: str, port: int, pins: MockFactory) -> Gateway:
    text = siren_config(gateway_id, port, SIREN_PIN)
    return Gateway(load_config(write_config(tmp_path, text)), pin_factory=pins)


def _results(hub: Recorder, base: str) -> list[dict[str, Any]]:
    return [m.json() for m in hub.on(f"{base}/result/siren")]


def _leave_a_persistent_session(tmp_path: Path, gateway_id: str, broker: Broker, hub: Recorder) -> None:
    """Run the gateway once until it is subscribed (a refused probe comes back), then stop it:
    the broker keeps its session and queues its commands from now on."""
    base = f"gateway/{gateway_id}"
    pins = MockFactory()
    with running(_gateway(tmp_path, gateway_id, broker.port, pins)):
        def subscribed() -> bool:
            # Not an entity: refused, nothing driven. A probe still in flight at the stop is kept by
            # the broker and refused in the next run's backlog, on result/probe, apart from the siren's.
            hub.publish(f"{base}/set/probe", "ON")
            return bool(hub.on(f"{base}/result/probe"))

        wait_until(subscribed, what="the gateway's subscription")
    pins.reset()
    hub.clear()


def _queue_command(hub: Recorder, topic: str, payload: str, expiry: int | None = None) -> None:
    """QoS 1, not retained, while the gateway is away: the broker keeps it in the gateway's session."""
    properties = None
    if expiry is not None:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.MessageExpiryInterval = expiry
    info: mqtt.MQTTMessageInfo = hub.client.publish(topic, payload, qos=1, properties=properties)
    info.wait_for_publish(5)


def test_a_command_queued_while_the_gateway_was_down_is_refused_and_never_drives_the_pin(
    broker: Broker, tmp_path: Path
) -> None:
    gateway_id = "stale-refused"
    base = f"gateway/{gateway_id}"
    with recorder(broker.host, broker.port, f"{base}/result/#", f"{base}/state/#") as hub:
        _leave_a_persistent_session(tmp_path, gateway_id, broker, hub)
        _queue_command(hub, f"{base}/set/siren", "ON")
        pins = MockFactory()
        with running(_gateway(tmp_path, gateway_id, broker.port, pins)) as gateway:
            refused = wait_until(lambda: [r for r in _results(hub, base) if r["status"] == "rejected"],
                                 what="the queued command refused")
            wait_until(lambda: hub.on(f"{base}/state/siren"), what="the siren's state")
            pin_states = [s.state for s in pins.pin(SIREN_PIN).states]
            health = bridge_of(gateway).health()
        pins.reset()
    assert not any(pin_states), pin_states
    assert "offline" in refused[0]["reason"]
    assert [r["status"] for r in _results(hub, base)] == ["rejected"]
    assert health["commands"]["stale_refused"] >= 1  # the siren's, and maybe a probe of the first run
    assert all(m.json() is False for m in hub.on(f"{base}/state/siren"))


def test_a_queued_command_with_a_message_expiry_is_applied_and_the_state_topic_ends_equal_to_the_pin(
    broker: Broker, tmp_path: Path
) -> None:
    """The pins open slowly, so the backlog reaches the gateway while its drivers start: the
    drivers' "safe state at start" report must not overwrite the state the command confirmed."""
    gateway_id = "stale-expiry"
    base = f"gateway/{gateway_id}"
    with recorder(broker.host, broker.port, f"{base}/result/#", f"{base}/state/#") as hub:
        _leave_a_persistent_session(tmp_path, gateway_id, broker, hub)
        _queue_command(hub, f"{base}/set/siren", "ON", expiry=300)
        pins = SlowToOpenPins()
        gateway = _gateway(tmp_path, gateway_id, broker.port, pins)
        bridge: Any = gateway.forwarder
        # Hold the pins until the bridge has posted the queued command, if it runs already.
        pins.ready = lambda: not bridge.started or len(gateway.bus) > 0
        with running(gateway):
            wait_until(lambda: [r for r in _results(hub, base) if r["status"] == "done"],
                       what="the queued command done")
            wait_until(lambda: len(gateway.bus) == 0 and bridge.outbox.depth == 0, what="everything forwarded")
            pins.ready = lambda: True
            pin_on = pins.pin(SIREN_PIN).state
            stored = gateway.dispatcher.state.get("siren")
            stored_value = None if stored is None else stored.value
            wait_until(lambda: hub.on(f"{base}/state/siren")
                       and hub.on(f"{base}/state/siren")[-1].json() is bool(pin_on),
                       timeout=3, what="the state topic equal to the pin")
        pins.reset()
    assert pin_on
    assert stored_value is True


def test_a_command_sent_once_the_gateway_is_back_is_applied(broker: Broker, tmp_path: Path) -> None:
    gateway_id = "stale-then-live"
    base = f"gateway/{gateway_id}"
    with recorder(broker.host, broker.port, f"{base}/result/#") as hub:
        _leave_a_persistent_session(tmp_path, gateway_id, broker, hub)
        _queue_command(hub, f"{base}/set/siren", "ON")
        pins = MockFactory()
        with running(_gateway(tmp_path, gateway_id, broker.port, pins)):
            wait_until(lambda: [r for r in _results(hub, base) if r["status"] == "rejected"],
                       what="the queued command refused")
            hub.publish(f"{base}/set/siren", "ON")
            wait_until(lambda: [r for r in _results(hub, base) if r["status"] == "done"], what="the live command done")
            pin_on = pins.pin(SIREN_PIN).state
        pins.reset()
    assert pin_on
