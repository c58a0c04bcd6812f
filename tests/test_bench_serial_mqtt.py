"""Benchmark 3 measures forwarding, not the flood guard: its sensor declares a rate above the ladder's top.

Without the declaration, a stream beyond the default 2,000 lines/s is a flood, read coalesced to each read's newest
value, and the ladder counted the coalesced lines as lost (9,317 of 10,000 at 5,000 lines/s)."""

from __future__ import annotations

from pathlib import Path

from bench.serial_mqtt import DEVICE_RATE, LADDER, gateway_config
from gateway.config import load_config


def test_benchmark_3s_sensor_declares_a_rate_above_the_ladders_top(tmp_path: Path) -> None:
    config = load_config(gateway_config(tmp_path, 1883, "/dev/ttyBENCH"))
    sensor = next(device for device in config.devices if device.id == "climate")
    assert getattr(sensor, "max_lines_per_s", None) == DEVICE_RATE > max(LADDER)
