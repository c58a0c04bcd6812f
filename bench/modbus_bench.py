"""Modbus RTU poll cycle: 20 registers on 3 slaves at 9,600 baud, in real time over a pty.

    PYTHONPATH=. python bench/modbus_bench.py

The gateway's real line (``drivers.modbus.ModbusLine``, pymodbus's client) polls
the RTU slave twin (``drivers.sim.modbus.RtuSlave``) on a pseudo-terminal:
two SDM120-style meters (5 float32 input registers each) and a heat pump (10
consecutive int16 holding registers). A pty moves bytes at once, so each cycle
is measured twice: as fast as the pty goes (the software's own cost: pymodbus,
the framing, our bookkeeping) and with the twin waiting out each
transaction's wire time at 9,600 baud (a realistic cycle, minus the slave's
own turnaround, which real devices add: 5-50 ms each). The theoretical wire
time counts 10 bits a byte (8N1) and a 3.5-character silence before each frame.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import serial

from core.clock import VirtualClock
from core.events import Event, EventFactory
from drivers.base import DriverContext
from drivers.modbus import ModbusLine, ModbusLineConfig
from drivers.modbus_map import Block, encode, plan_reads
from drivers.sim.modbus import Memory, RtuSlave
from drivers.timing import VirtualScheduler

BAUD = 9600
CYCLES = 20
CHAR_S = 10 / BAUD
SILENCE_S = 3.5 * CHAR_S


def slaves() -> list[dict[str, Any]]:
    pump = [{"entity": f"pump_{i}", "address": i, "type": "int16", "scale": 0.1} for i in range(10)]
    return [
        {"slave": 1, "preset": "sdm120", "prefix": "house", "poll_s": 1},
        {"slave": 2, "preset": "sdm120", "prefix": "pv", "poll_s": 1},
        {"slave": 3, "registers": pump, "poll_s": 1},
    ]


def memory() -> dict[int, Memory]:
    units: dict[int, Memory] = {}
    for unit in (1, 2):
        meter = Memory()
        for address in range(0, 0x4A, 2):
            meter.put("input", address, encode(230.0 + address, "float32"))
        units[unit] = meter
    units[3] = Memory(holding={i: 200 + i for i in range(10)})
    return units


def wire_time(blocks: list[Block]) -> float:
    total = 0.0
    for block in blocks:
        request, answer = 8, 5 + 2 * block.count
        total += 2 * SILENCE_S + (request + answer) * CHAR_S
    return total


def cycle(pace: bool, grouping: str) -> tuple[list[float], int, float]:
    rtu = RtuSlave(memory(), pace_baud=BAUD if pace else None)
    path = rtu.open()
    config = ModbusLineConfig.model_validate({
        "id": "bench", "driver": "modbus.rtu", "port": path, "baudrate": BAUD, "timeout_s": 0.5,
        "gap_s": SILENCE_S, "slaves": slaves(),
    })
    line = ModbusLine(config)
    sched = VirtualScheduler(VirtualClock())
    events: list[Event] = []
    ctx = DriverContext(post=events.append, events=EventFactory(sched.clock, boot="bench"),
                        open_serial=serial.serial_for_url, scheduler=sched)
    line.start(ctx)
    blocks: list[Block] = []
    for slave in line._slaves:  # the bench compares read plans: reach into the running line on purpose
        if grouping == "one request per register":
            slave.blocks = [Block(s.function, s.address, s.words, (s,)) for b in slave.blocks for s in b.spans]
        elif grouping == "across gaps (max_gap 124)":
            slave.blocks = plan_reads(slave.config.spans(), max_gap=124)
        blocks += slave.blocks
    sched.advance(0)  # the first poll opens the port
    times = []
    for _ in range(CYCLES):
        began = time.perf_counter()
        sched.advance(1)
        times.append(time.perf_counter() - began)
    readings = sum(1 for e in events if e.kind.value == "reading")
    line.stop()
    rtu.close()
    if readings != 20 * (CYCLES + 1):  # kept under -OO
        raise RuntimeError(f"{readings} readings, expected {20 * (CYCLES + 1)}")
    return times, len(blocks), wire_time(blocks)


def main() -> None:
    print(f"Modbus RTU, 20 registers on 3 slaves, {BAUD} baud 8N1, {CYCLES} cycles each (median, max)")
    for grouping in ("consecutive (max_gap 0)", "one request per register", "across gaps (max_gap 124)"):
        for pace in (False, True):
            times, requests, wire = cycle(pace, grouping)
            label = "paced at 9600" if pace else "pty, unpaced "
            print(f"  {grouping:28} {label}: {requests:2} requests, {statistics.median(times) * 1000:7.1f} ms "
                  f"(max {max(times) * 1000:6.1f}); theoretical wire time {wire * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
