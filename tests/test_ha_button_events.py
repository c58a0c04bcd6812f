"""A button's gesture reaches Home Assistant's ``event`` entity: the rest (null) that follows a gesture at once
never replaces the gesture on its way to the hub (found with a real Home Assistant:
``scripts/ha_check.py --house drivers`` saw no press at all while the gateway pressed the button every 20 s)."""

from __future__ import annotations

from pathlib import Path

from core.entities import Component, EntitySpec
from core.events import Kind
from tests.conftest import Broker
from tests.mqtt_support import make_bridge, make_config, recorder, wait_until

BUTTON = {"hall_button": EntitySpec("hall_button", Component.EVENT, device_class="button",
                                    options=("press", "double_press", "long_press"))}


def test_a_press_and_the_rest_after_it_both_reach_the_hub_in_order(broker: Broker, tmp_path: Path) -> None:
    harness = make_bridge(make_config("button-events", tmp_path / "state", broker.port), BUTTON)
    topic = f"{harness.base}/state/hall_button"
    with recorder(broker.host, broker.port, topic) as hub:
        harness.bridge.start()
        try:
            for value in ("press", None, "long_press", None):  # as the driver posts them: a gesture, then rest
                harness.bridge.forward(harness.events.make(Kind.STATE, "hall_button", value))
            wait_until(lambda: [m for m in hub.on(topic) if m.json() == "long_press"], what="the second gesture")
        finally:
            harness.bridge.stop()
    assert [m.json() for m in hub.on(topic) if m.json() is not None] == ["press", "long_press"]


def test_a_gesture_is_not_retained_so_a_hub_that_subscribes_later_sees_the_button_at_rest(
    broker: Broker, tmp_path: Path
) -> None:
    harness = make_bridge(make_config("button-retained", tmp_path / "state", broker.port), BUTTON)
    topic = f"{harness.base}/state/hall_button"
    with recorder(broker.host, broker.port, topic) as live:
        harness.bridge.start()
        try:
            harness.bridge.forward(harness.events.make(Kind.STATE, "hall_button", "press"))
            harness.bridge.forward(harness.events.make(Kind.STATE, "hall_button", None))
            wait_until(lambda: [m for m in live.on(topic) if m.json() == "press"], what="the press")
            with recorder(broker.host, broker.port, topic) as later:
                wait_until(lambda: later.on(topic), what="the retained state")
                assert [(m.json(), m.retain) for m in later.on(topic)] == [(None, True)]
        finally:
            harness.bridge.stop()


def test_a_press_older_than_the_moment_limit_when_the_broker_can_take_it_is_never_sent(broker: Broker) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from core.clock import VirtualClock
    from core.events import EventFactory
    from gateway.mqtt.health import BridgeCounters
    from gateway.mqtt.retained import MOMENT_MAX_AGE, RetainedTopics
    from gateway.mqtt.topics import Topics

    clock = VirtualClock()
    events = EventFactory(clock)
    retained = RetainedTopics(Topics("gateway/stale-press"), BUTTON, None, BridgeCounters(), lambda *_: True,
                              monotonic=clock.monotonic)
    topic = "gateway/stale-press/state/hall_button"
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        with recorder(broker.host, broker.port, topic) as hub:
            retained.update_state(events.make(Kind.STATE, "hall_button", "press"))  # the broker is away...
            clock.advance(MOMENT_MAX_AGE + 1)  # ...longer than a press is worth sending
            retained.update_state(events.make(Kind.STATE, "hall_button", "double_press"))
            retained.send(client)
            wait_until(lambda: hub.on(topic), what="the fresh gesture")
    finally:
        client.disconnect()
        client.loop_stop()
    assert [m.json() for m in hub.on(topic)] == ["double_press"]
    assert retained.moments_dropped == 1
