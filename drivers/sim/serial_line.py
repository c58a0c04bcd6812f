"""The serial sensors' world: each device on a pseudo-terminal, speaking its protocol (now and then a
corrupted byte, as a noisy cable gives)."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

from drivers.base import SimWorld
from drivers.protocols import MHZ19_READ, mhz19_response, nmea_sentence, pms5003_frame
from drivers.serial_line import SerialConfig
from drivers.sim.base import PtyTwin, ThermalModel, corrupt, heater_on


def kv_line(values: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.2f}" for k, v in values.items())


def json_line(values: dict[str, float]) -> str:
    nested: dict[str, Any] = {}
    for path, value in values.items():
        node = nested
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = round(value, 2)
    return json.dumps(nested)


class _FieldWalk:
    """Every configured field random-walks; temperature-like fields follow a thermal model."""

    def __init__(self, config: SerialConfig, start: float = 20.0) -> None:
        self.config = config
        self.values = {name: start for name in config.fields}
        self.thermal = ThermalModel(temperature=start)
        self._lock = threading.Lock()

    def step(self, world: SimWorld, rng: random.Random, dt: float) -> dict[str, float]:
        with self._lock:
            heating = heater_on(world, self.config.sim_heater)
            temperature = self.thermal.step(dt, heating, rng.gauss)
            for name, field in self.config.fields.items():
                if "temp" in name or "temp" in field.entity:
                    self.values[name] = temperature
                else:
                    self.values[name] += rng.gauss(0.0, 0.1)
            return {name: (v - f.offset) / (f.scale or 1.0) for (name, v), f in
                    zip(self.values.items(), self.config.fields.values(), strict=True)}


class LineTwin(PtyTwin):
    def __init__(self, config: SerialConfig, render: Any, interval: float | None = None) -> None:
        super().__init__(config.port, config.id, interval or min(config.report_interval or 5.0, 5.0))
        self._walk = _FieldWalk(config)
        self._render = render

    def produce(self, world: SimWorld, dt: float) -> bytes:
        line = (self._render(self._walk.step(world, self.rng, dt)) + "\n").encode()
        return corrupt(line, self.rng.random, self.rng.randrange, 0.02)


class NmeaTwin(PtyTwin):
    """A GPS that stays near one spot, sending GGA and RMC once a second."""

    def __init__(self, config: SerialConfig) -> None:
        super().__init__(config.port, config.id, 1.0)
        self._lat, self._lon = 51.4779, -0.0015

    def produce(self, world: SimWorld, dt: float) -> bytes:
        rng = self.rng
        self._lat += rng.gauss(0, 0.00001)
        self._lon += rng.gauss(0, 0.00001)
        lat = f"{int(self._lat):02d}{(self._lat % 1) * 60:07.4f}"
        lon_abs = abs(self._lon)
        lon = f"{int(lon_abs):03d}{(lon_abs % 1) * 60:07.4f}"
        ew = "W" if self._lon < 0 else "E"
        gga = nmea_sentence(f"GPGGA,120000.00,{lat},N,{lon},{ew},1,08,0.9,{45 + rng.gauss(0, 0.5):.1f},M,46.9,M,,")
        rmc = nmea_sentence(f"GPRMC,120000.00,A,{lat},N,{lon},{ew},{abs(rng.gauss(0, 0.2)):.2f},0.0,010126,,,A")
        return corrupt(gga, rng.random, rng.randrange, 0.02) + rmc


class Pms5003Twin(PtyTwin):
    def __init__(self, config: SerialConfig) -> None:
        super().__init__(config.port, config.id, 1.0)
        self._pm25 = 8.0

    def produce(self, world: SimWorld, dt: float) -> bytes:
        rng = self.rng
        self._pm25 = max(0.0, self._pm25 + rng.gauss(0, 0.5))
        pm = round(self._pm25)
        frame = pms5003_frame([pm // 2, pm, pm + 3, pm // 2, pm, pm + 3, pm * 90, pm * 30, pm * 5, pm, 1, 0])
        return corrupt(frame, rng.random, rng.randrange, 0.02)


class Mhz19Twin(PtyTwin):
    """Answers each read command with a response; CO2 rises and falls slowly."""

    def __init__(self, config: SerialConfig) -> None:
        super().__init__(config.port, config.id, 3600.0)
        self._co2 = 600.0
        self._buffer = b""

    def respond(self, world: SimWorld, request: bytes) -> bytes:
        self._buffer = (self._buffer + request)[-64:]
        if MHZ19_READ not in self._buffer:
            return b""
        self._buffer = b""
        rng = self.rng
        self._co2 = min(4000.0, max(400.0, self._co2 + rng.gauss(0, 15)))
        return corrupt(mhz19_response(round(self._co2), 23), rng.random, rng.randrange, 0.02)
