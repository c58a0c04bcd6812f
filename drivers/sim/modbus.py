"""A Modbus RTU slave on a pseudo-terminal: the twin of ``modbus.rtu`` lines, for tests, the bench and ``--simulate``.

:class:`RtuSlave` answers on a pty as the devices on an RS-485 line do: one
or more slave ids, each with its holding and input registers, function codes
3 (read holding), 4 (read input), 6 (write one register) and 16 (write
several); an unmapped register gets exception 2 (illegal data address), an
unknown function exception 1; a request with a bad CRC, or for an id nobody
has, gets no answer at all (as on a real line). Faults are injected per slave
id: :attr:`RtuSlave.silent` (powered off, wrong id, A/B swapped: no answer)
and :attr:`RtuSlave.garbled` (a noisy cable: the answer's CRC is wrong).

Why our own slave and not pymodbus's server: the gateway's client side is
pymodbus, and the twin must be an *independent* implementation of the frame
and the CRC (a library talking to itself proves nothing about the wire); it
also has to inject faults per slave id and run on a plain thread like the
other pty twins, where pymodbus's server is asyncio with its own serial
transport. The slave is about a hundred lines (:mod:`drivers.modbus_map` has
the CRC).

``pace_baud``: a pty delivers bytes at once, where a real 9,600-baud line takes
about 1.15 ms a byte. With ``pace_baud`` set, each answer waits for the wire
time of the request and the answer, so the bench can show both the software's
own cost and a realistic cycle time.

:class:`ModbusTwin` is the ``--simulate`` twin: it builds an :class:`RtuSlave`
from a line's config (each register of each slave, presets included) and
moves the values plausibly: measurements wander around a typical value,
energy counters only climb.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import threading
import tty
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.guard import guarded
from drivers.base import SimWorld
from drivers.modbus_map import WORDS, crc_ok, encode, with_crc
from drivers.sim.base import ThreadTwin, twin_rng

if TYPE_CHECKING:
    from drivers.modbus import ModbusLineConfig

FRAME_GAP_S = 0.05
"""A partial request left this long is dropped (a real slave resets on 3.5 characters of silence)."""


@dataclass(slots=True)
class Memory:
    """One slave's registers: address -> 16-bit value, per table."""

    holding: dict[int, int] = field(default_factory=dict)
    input: dict[int, int] = field(default_factory=dict)

    def put(self, table: str, address: int, registers: list[int]) -> None:
        target = self.holding if table == "holding" else self.input
        for i, value in enumerate(registers):
            target[address + i] = value


class RtuSlave:
    """Slaves on one pty; :meth:`open` returns the path the client opens (``/dev/pts/N``)."""

    def __init__(self, units: dict[int, Memory], *, pace_baud: int | None = None) -> None:
        self.units = units
        self.pace_baud = pace_baud
        self.silent: set[int] = set()
        self.garbled: set[int] = set()
        self.requests = 0
        self.asked: dict[int, int] = {}
        """Requests with a good CRC, per slave id (answered or not)."""
        self.bad_requests = 0
        """Requests dropped for a bad CRC or an impossible length."""
        self.writes: list[tuple[int, int, list[int]]] = []
        """Every write received: (slave id, address, registers)."""
        self.lock = threading.Lock()
        """Held while a request is answered; hold it to change registers consistently."""
        self._fds: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> str:
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        self._fds = (master, slave)
        self._stop.clear()

        def run() -> None:
            self._run(master)

        self._thread = threading.Thread(target=guarded("modbus slave")(run), name="sim-modbus-slave", daemon=True)
        self._thread.start()
        return os.ttyname(slave)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        if self._fds is not None:
            for fd in self._fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._fds = None

    def _run(self, master: int) -> None:
        buffer = b""
        while not self._stop.is_set():
            readable, _, _ = select.select([master], [], [], FRAME_GAP_S if buffer else 0.2)
            if not readable:
                if buffer:
                    self.bad_requests += 1
                buffer = b""
                continue
            try:
                buffer += os.read(master, 512)
            except OSError:
                return
            while (size := _request_size(buffer)) is not None and len(buffer) >= size:
                frame, buffer = buffer[:size], buffer[size:]
                answer = self.answer(frame)
                if answer:
                    if self.pace_baud:
                        self._stop.wait((len(frame) + len(answer)) * 10 / self.pace_baud)
                    with contextlib.suppress(OSError):
                        os.write(master, answer)

    def answer(self, frame: bytes) -> bytes:
        """The bytes a slave sends back for the request ``frame`` (with its CRC), or b"" for none."""
        if not crc_ok(frame):
            self.bad_requests += 1
            return b""
        self.requests += 1
        unit, function = frame[0], frame[1]
        self.asked[unit] = self.asked.get(unit, 0) + 1
        memory = self.units.get(unit)
        if memory is None or unit in self.silent:
            return b""
        with self.lock:
            pdu = self._pdu(unit, memory, function, frame[2:-2])
        reply = with_crc(bytes([unit]) + pdu)
        if unit in self.garbled:
            reply = reply[:-1] + bytes([reply[-1] ^ 0xFF])
        return reply

    def _pdu(self, unit: int, memory: Memory, function: int, data: bytes) -> bytes:
        address, count = int.from_bytes(data[0:2], "big"), int.from_bytes(data[2:4], "big")
        if function in (3, 4):
            table = memory.holding if function == 3 else memory.input
            if not 1 <= count <= 125 or any(address + i not in table for i in range(count)):
                return bytes([function | 0x80, 2])
            values = b"".join(table[address + i].to_bytes(2, "big") for i in range(count))
            return bytes([function, len(values)]) + values
        if function == 6:
            registers = [count]  # the second word of a single write is the value
        elif function == 16:
            registers = [int.from_bytes(data[5 + 2 * i : 7 + 2 * i], "big") for i in range(count)]
        else:
            return bytes([function | 0x80, 1])
        if any(address + i not in memory.holding for i in range(len(registers))):
            return bytes([function | 0x80, 2])
        memory.put("holding", address, registers)
        self.writes.append((unit, address, registers))
        return bytes([function]) + data[0:4]


def _request_size(buffer: bytes) -> int | None:
    """The length of the request at the head of ``buffer``, or None until enough of it has come."""
    if len(buffer) < 2:
        return None
    if buffer[1] == 16:
        return 9 + buffer[6] if len(buffer) >= 7 else None
    return 8


# ---------------------------------------------------------------------------------------------
# The --simulate twin


@dataclass(slots=True)
class _Moving:
    unit: int
    table: str
    address: int
    kind: str
    word_order: str
    scale: float
    offset: float
    value: float
    counter: bool


class ModbusTwin(ThreadTwin):
    """The slaves of one configured line, with values that move; registered in ``world.serial_ports``."""

    STEP_S = 1.0

    def __init__(self, config: ModbusLineConfig) -> None:
        super().__init__(config.id)
        self.config = config
        self.slave: RtuSlave | None = None
        self._moving: list[_Moving] = []
        self.rng = random.Random(0)

    def start(self, world: SimWorld) -> None:
        self.rng = twin_rng(world)
        units: dict[int, Memory] = {}
        for slave in self.config.slaves:
            memory = units.setdefault(slave.slave, Memory())
            for reg in slave.all_registers():
                typical = reg.sim_value if reg.sim_value is not None else 20.0
                self._moving.append(_Moving(slave.slave, reg.function, reg.address, reg.type, reg.word_order,
                                            reg.scale, reg.offset, typical, reg.state_class == "total_increasing"))
            for out in slave.writables():
                memory.put("holding", out.address, out.registers_for(out.safe))
        self.slave = RtuSlave(units)
        self._write_all()
        world.serial_ports[self.config.port] = self.slave.open()
        self._spawn(self._run)

    def _write_all(self) -> None:
        assert self.slave is not None
        with self.slave.lock:
            for m in self._moving:
                raw = (m.value - m.offset) / m.scale
                try:
                    registers = encode(raw, m.kind, m.word_order)  # type: ignore[arg-type]
                except ValueError:
                    registers = [0] * WORDS[m.kind]
                self.slave.units[m.unit].put(m.table, m.address, registers)

    def _run(self) -> None:
        while not self._stop.wait(self.STEP_S):
            for m in self._moving:
                if m.counter:
                    m.value += abs(self.rng.gauss(0.002, 0.001))
                else:
                    m.value += self.rng.gauss(0.0, 0.005 * (abs(m.value) or 1.0))
            self._write_all()

    def release(self) -> None:
        if self.slave is not None:
            self.slave.close()
            self.slave = None
