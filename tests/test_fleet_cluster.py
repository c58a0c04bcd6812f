"""The gateway on a real clustered broker: a 3-node RabbitMQ cluster with its MQTT plugin.

Slow (the cluster's cold start alone takes 15 to 25 s), so marked ``cluster`` and deselected by default;
``scripts/test-cluster`` installs RabbitMQ if needed and runs this file. What these tests found is
written up in docs/fleet.md, *RabbitMQ's MQTT plugin compared with Mosquitto*.

The failover test kills node 1 and comes last; tests before it may use any node."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import Config
from tests.cluster_support import RabbitCluster, installed
from tests.mqtt_support import make_bridge, wait_until

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    if not installed():
        pytest.fail("RabbitMQ is not installed: run scripts/test-cluster (it installs rabbitmq-server)")
    nodes = RabbitCluster(tmp_path_factory.mktemp("rabbitmq"), queue_type="quorum")
    nodes.start()
    yield nodes
    nodes.stop()


@dataclass
class Consumer:
    """A plain MQTT 3.1.1 client (RabbitMQ 3.10 speaks nothing newer) that keeps what it receives."""

    client: mqtt.Client
    messages: list[mqtt.MQTTMessage] = field(default_factory=list)
    granted: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def values(self, prefix: str) -> list[Any]:
        with self.lock:
            return [json.loads(m.payload)["value"] for m in self.messages if m.topic.startswith(prefix)]

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]


def consumer(port: int, topic: str, *, client_id: str = "", session: bool = False, qos: int = 1) -> Consumer:
    """Connected and subscribed; with ``session``, clean_session=False: the broker keeps its queue."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                         clean_session=not session)
    sink = Consumer(client)
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with sink.lock:
            sink.messages.append(message)

    def on_subscribe(client: mqtt.Client, userdata: object, mid: int, reasons: list[Any], props: object) -> None:
        sink.granted.extend(int(r.value) for r in reasons)
        subscribed.set()

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *args: c.subscribe(topic, qos)
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert subscribed.wait(10), "subscription not acknowledged"
    return sink


def close(sink: Consumer) -> None:
    sink.client.disconnect()
    sink.client.loop_stop()


def cluster_config(gateway_id: str, state_dir: Path, cluster: RabbitCluster) -> Config:
    return Config.model_validate({
        "gateway": {"id": gateway_id, "state_dir": str(state_dir)},
        "mqtt": {"hosts": [f"127.0.0.1:{n.mqtt}" for n in cluster.nodes], "protocol": "3.1.1",
                 "reconnect_min": 1, "reconnect_max": 2, "drain_rate": 100_000,
                 "max_inflight": 100},  # below the 200 events sent: the duplicates' bound can fail
        "outbox": {"batch_ms": 5, "synchronous": "OFF"},
    })


def test_an_mqtt5_connect_gets_no_connack_so_gateways_must_speak_3_1_1(cluster: RabbitCluster) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="probe-v5", protocol=mqtt.MQTTv5)
    answered = threading.Event()
    client.on_connect = lambda *args: answered.set()
    client.connect("127.0.0.1", cluster.nodes[0].mqtt)
    client.loop_start()
    try:
        assert not answered.wait(3)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_gateway_left_on_mqtt5_never_connects_and_says_the_broker_is_unreachable(
    tmp_path: Path, cluster: RabbitCluster
) -> None:
    config = cluster_config("rmq5", tmp_path / "state", cluster)
    config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"protocol": "5"})})
    bridge = make_bridge(config).bridge
    bridge.start()
    try:
        wait_until(lambda: bridge.health()["connection"] == "unreachable", 10, "the outage noticed")
        assert not bridge.connected
    finally:
        bridge.stop()


def test_a_client_id_connecting_on_another_node_takes_the_session_over(cluster: RabbitCluster) -> None:
    lost = threading.Event()
    first = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="same-id", protocol=mqtt.MQTTv311)
    first.on_disconnect = lambda *args: lost.set()
    first.connect("127.0.0.1", cluster.nodes[0].mqtt)
    first.loop_start()
    second = consumer(cluster.nodes[2].mqtt, "probe/same", client_id="same-id")
    try:
        assert lost.wait(10)
    finally:
        first.loop_stop()
        close(second)


def test_a_shared_subscription_is_not_served(cluster: RabbitCluster) -> None:
    shared = consumer(cluster.nodes[0].mqtt, "$share/group/probe/shared")
    plain = consumer(cluster.nodes[0].mqtt, "probe/shared")
    try:
        plain.client.publish("probe/shared", b"x", qos=1).wait_for_publish(5)
        wait_until(lambda: plain.on("probe/shared"), 5, "the plain subscriber's copy")
        assert shared.messages == []
    finally:
        close(shared)
        close(plain)


def test_a_qos_2_subscription_is_granted_as_qos_1(cluster: RabbitCluster) -> None:
    sink = consumer(cluster.nodes[1].mqtt, "probe/qos2", qos=2)
    close(sink)
    assert sink.granted == [1]


def test_retained_messages_stay_on_the_node_they_were_published_to(cluster: RabbitCluster) -> None:
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    publisher.connect("127.0.0.1", cluster.nodes[0].mqtt)
    publisher.loop_start()
    publisher.publish("probe/retained", b"kept", qos=1, retain=True).wait_for_publish(5)
    publisher.disconnect()
    publisher.loop_stop()
    same, other = consumer(cluster.nodes[0].mqtt, "probe/retained"), consumer(cluster.nodes[2].mqtt, "probe/retained")
    try:
        wait_until(lambda: same.on("probe/retained"), 5, "the retained message on its own node")
        assert other.on("probe/retained") == []
    finally:
        close(same)
        close(other)


def test_the_gateway_fails_over_from_a_killed_node_and_a_consumer_on_another_node_loses_nothing(
    tmp_path: Path, cluster: RabbitCluster
) -> None:
    a, b, c = cluster.nodes
    harness = make_bridge(cluster_config("rmq1", tmp_path / "state", cluster))
    bridge, prefix = harness.bridge, f"{harness.base}/event/"
    # the consumer's session is kept (clean_session=False): its queue is a quorum queue with a member on every
    # node, and it expires 24 h (mqtt.subscription_ttl) after the consumer last went away
    sink = consumer(c.mqtt, f"{prefix}#", client_id="fleet-consumer-c", session=True)
    queues = cluster.ctl(3, "list_queues", "name", "type", "members", "arguments").splitlines()
    [queue] = [line for line in queues if line.startswith("mqtt-subscription-fleet-consumer-cqos1\t")]
    assert "\tquorum\t" in queue
    assert all(node.name in queue for node in cluster.nodes), queue
    assert '{"x-expires",86400000}' in queue, queue
    bridge.start()
    try:
        wait_until(lambda: bridge.connected, 20, "connected to node A")
        assert bridge.health()["broker"] == f"127.0.0.1:{a.mqtt}"
        for i in range(100):
            bridge.forward(harness.events.reading("living_temp", i))
        wait_until(lambda: len(sink.values(prefix)) >= 50, 10, "the stream flowing through A to C")
        cluster.kill(1)  # some of the 100 may still be unacknowledged: the outbox owns them
        for i in range(100, 200):
            bridge.forward(harness.events.reading("living_temp", i))
        wait_until(lambda: bridge.connected and bridge.outbox.depth == 0, 30, "failed over, outbox drained")
        health = bridge.health()
        assert health["broker"] == f"127.0.0.1:{b.mqtt}"
        assert health["failovers"] >= 1
        wait_until(lambda: set(sink.values(prefix)) >= set(range(200)), 15, "every event at the consumer on C")
        received = sink.values(prefix)
        assert sorted(set(received)) == list(range(200))
        duplicates = len(received) - 200
        assert duplicates <= bridge.config.mqtt.max_inflight
        # retained topics are per node: the gateway re-published its status on B when it connected there
        late = consumer(b.mqtt, f"{harness.base}/status")
        try:
            wait_until(lambda: late.on(f"{harness.base}/status"), 5, "the retained status on node B")
            assert late.on(f"{harness.base}/status")[-1].payload == b"online"
        finally:
            close(late)
    finally:
        bridge.stop()
        close(sink)
