"""The 1-wire bus's world: a fake ``/sys/bus/w1/devices`` tree written as the kernel would."""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from pathlib import Path

from drivers.base import SimWorld
from drivers.onewire import Ds18b20Config
from drivers.sim.base import ThermalModel, ThreadTwin, heater_on, twin_rng


def write_w1_slave(directory: Path, celsius: float, *, crc_ok: bool = True) -> None:
    """Write a sensor's ``w1_slave`` file as the kernel would (fake trees in tests and ``--simulate``)."""
    directory.mkdir(parents=True, exist_ok=True)
    raw = round(celsius * 1000)
    scratch = "72 01 4b 46 7f ff 0e 10 57"
    text = f"{scratch} : crc=57 {'YES' if crc_ok else 'NO'}\n{scratch} t={raw}\n"
    tmp = directory / "w1_slave.tmp"
    tmp.write_text(text, encoding="ascii")
    os.replace(tmp, directory / "w1_slave")


class Ds18b20Twin(ThreadTwin):
    """A fake ``/sys/bus/w1/devices`` tree whose sensor follows a thermal model (warms with ``sim_heater``).

    Registers ``world.files[base_path]`` so the driver reads the fake tree.
    Now and then a read has a failed CRC or the 85 °C power-on value.
    """

    def __init__(self, config: Ds18b20Config, interval: float = 5.0) -> None:
        super().__init__(config.id)
        self._config = config
        self._interval = interval
        self._dir: str | None = None

    def start(self, world: SimWorld) -> None:
        cfg = self._config
        root = world.files.get(cfg.base_path)
        if root is None:
            root = self._dir = tempfile.mkdtemp(prefix="w1-")
            world.files[cfg.base_path] = root
        sensor = Path(root) / (cfg.sensor or f"28-{zlib.crc32(cfg.id.encode()):012x}")
        model = ThermalModel(temperature=19.0)
        rng = twin_rng(world)

        def tick() -> None:
            temperature = model.step(self._interval, heater_on(world, cfg.sim_heater), rng.gauss)
            roll = rng.random()
            write_w1_slave(sensor, 85.0 if roll < 0.01 else temperature, crc_ok=roll >= 0.03 or roll < 0.01)

        def run() -> None:
            tick()
            while not self._stop.wait(self._interval):
                tick()

        tick()
        self._spawn(run)

    def release(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
