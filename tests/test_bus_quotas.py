"""A device that keeps to its declared rate is no flood: the bus holds half a second of it per entity before it
coalesces (gateway.bus.rate_quotas; issue 14: at 10,000 lines/s the flood quota of 256 readings was 26 ms)."""

from __future__ import annotations

from pathlib import Path

from gpiozero.pins.mock import MockFactory

from gateway.app import Gateway, declared_rates
from gateway.bus import PER_ENTITY, Bus, rate_quotas
from gateway.config import load_config
from tests.helpers import RecordingForwarder, virtual_events, write_config

SERIAL_HOUSE = """
[gateway]
id = "quota"
state_dir = "state"

[[devices]]
id = "climate"
driver = "serial.kv"
port = "/dev/ttyUSB7"
max_lines_per_s = 20000
[devices.fields.temp]
entity = "temperature"
[devices.fields.hum]
entity = "humidity"
"""


def drain_values(bus: Bus) -> list[object]:
    out: list[object] = []
    while (event := bus.get_nowait()) is not None:
        out.append(event.value)
    return out


def test_a_declared_rate_gives_each_entity_half_a_second_of_it_and_never_less_than_the_flood_quota() -> None:
    assert rate_quotas({"fast": 10_000, "slow": 1.0}) == {"fast": 5_000, "slow": PER_ENTITY}


def test_a_stream_within_its_declared_rate_loses_nothing_while_the_dispatcher_pauses_for_0_4_s() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=10_000, quotas=rate_quotas({"temperature": 10_000}))
    for i in range(4_000):  # 0.4 s of a 10,000 lines/s sensor, nobody draining
        bus.post(events.reading("temperature", i))
    assert drain_values(bus) == list(range(4_000))
    assert bus.counters.coalesced == 0


def test_an_entity_without_a_declared_rate_keeps_the_flood_quota() -> None:
    _, events = virtual_events()
    bus = Bus(capacity=10_000, quotas=rate_quotas({"temperature": 10_000}))
    for i in range(1_000):
        bus.post(events.reading("chatter", i))
    assert len(drain_values(bus)) == PER_ENTITY + 1  # the quota, and the newest from the side table
    assert bus.quota("chatter") == PER_ENTITY


def test_the_gateway_gives_a_serial_devices_entities_the_quota_of_its_max_lines_per_s(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, SERIAL_HOUSE, rules="version = 1\n"))
    assert declared_rates(config.drivers()) == {"temperature": 20_000, "humidity": 20_000}
    gateway = Gateway(config, pin_factory=MockFactory(), forwarder=RecordingForwarder(), mqtt=False)
    assert gateway.bus.quota("temperature") == 10_000
    assert gateway.bus.quota("humidity") == 10_000
    assert gateway.bus.quota("anything_else") == PER_ENTITY
