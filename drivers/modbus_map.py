"""Modbus register maps without I/O: value types, word order, read planning, CRC, and built-in presets.

Pure functions shared by the driver (:mod:`drivers.modbus`), its twin
(:mod:`drivers.sim.modbus`) and the bench, tested alone:

* :func:`decode` / :func:`encode`: 16-bit registers to a value and back, for
  ``int16``, ``uint16``, ``int32``, ``uint32`` and ``float32``. Within a
  register the bytes are always big-endian (the Modbus standard); ``word_order``
  says which register of a 32-bit value comes first: ``"big"`` (high word first,
  Eastron, most meters) or ``"little"`` (low word first, many inverters and PLCs).
* :func:`plan_reads`: the requests one poll of a slave needs. Registers of one
  function whose addresses are consecutive (or at most ``max_gap`` apart) are
  read in one request of at most :data:`MAX_READ` registers: on a 9,600-baud
  line each request costs a turnaround of several milliseconds plus the
  3.5-character silences, so five float32 values read at once take a third of
  the time of five requests.
* :func:`crc16`: CRC-16/Modbus (poly 0xA001 reflected, init 0xFFFF), sent low byte first.
* :data:`PRESETS`: register maps of meters installers wire most, so they name a
  preset instead of typing addresses (``preset = "sdm120"``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
WordOrder = Literal["big", "little"]
Function = Literal["holding", "input"]

WORDS: dict[str, int] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
"""Registers each type takes."""

_STRUCT: dict[str, str] = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}

FUNCTION_CODE: dict[str, int] = {"holding": 3, "input": 4}
"""The read function code of each register table."""

MAX_READ = 125
"""Registers one read request may ask for (the standard's limit for function codes 3 and 4)."""

MAX_ADDRESS = 0xFFFF


def decode(registers: Sequence[int], kind: RegisterType, word_order: WordOrder = "big") -> float | int:
    """The value ``registers`` (each 0..65535, as read) hold; ``ValueError`` for the wrong count.

    A float32 NaN or infinity is returned as it is; the caller decides (the driver refuses it).
    """
    words = WORDS[kind]
    if len(registers) != words:
        raise ValueError(f"{kind} takes {words} register(s), got {len(registers)}")
    ordered = list(registers) if word_order == "big" else list(reversed(registers))
    raw = b"".join(r.to_bytes(2, "big") for r in ordered)
    value: float | int = struct.unpack(_STRUCT[kind], raw)[0]
    return value


def encode(value: float, kind: RegisterType, word_order: WordOrder = "big") -> list[int]:
    """The registers that hold ``value`` (rounded for integer types); ``ValueError`` when it does not fit."""
    if kind != "float32":
        value = round(value)
    try:
        raw = struct.pack(_STRUCT[kind], value)
    except struct.error as exc:
        raise ValueError(f"{value!r} does not fit in a {kind} register value: {exc}") from None
    registers = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    return registers if word_order == "big" else list(reversed(registers))


def crc16(frame: bytes) -> int:
    """CRC-16/Modbus of ``frame``; on the wire it follows the frame low byte first."""
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(frame: bytes) -> bytes:
    return frame + crc16(frame).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    """True when the last two bytes of ``frame`` are the CRC of the rest."""
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


@dataclass(frozen=True, slots=True)
class Span:
    """One register definition as the planner sees it: which table, where, how wide, and whose."""

    function: Function
    address: int
    words: int
    key: str
    """The entity (what the caller maps the decoded value to)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers of ``function`` from ``address``, and the spans it carries."""

    function: Function
    address: int
    count: int
    spans: tuple[Span, ...]

    def registers_of(self, span: Span, registers: Sequence[int]) -> Sequence[int]:
        start = span.address - self.address
        return registers[start : start + span.words]


def plan_reads(spans: Iterable[Span], *, max_gap: int = 0, max_count: int = MAX_READ) -> list[Block]:
    """Group ``spans`` into as few requests as the rules allow, in function then address order.

    A span joins the current block when it is of the same function, starts at most ``max_gap`` registers
    after the block's end, and the block stays within ``max_count`` registers. ``max_gap = 0``: only
    truly consecutive registers share a request (some devices answer a read that covers an unmapped
    register with an exception, so reading across gaps is opt-in).
    """
    blocks: list[Block] = []
    ordered = sorted(spans, key=lambda s: (s.function, s.address))
    current: list[Span] = []

    def close() -> None:
        if current:
            start = current[0].address
            end = max(s.address + s.words for s in current)
            blocks.append(Block(current[0].function, start, end - start, tuple(current)))

    for span in ordered:
        if current:
            start = current[0].address
            end = max(s.address + s.words for s in current)
            fits = (span.function == current[0].function and span.address - end <= max_gap
                    and span.address + span.words - start <= max_count)
            if not fits:
                close()
                current = []
        current.append(span)
    close()
    return blocks


def overlaps(spans: Sequence[Span]) -> list[tuple[Span, Span]]:
    """Pairs of spans of one table that share a register, each pair once, in address order."""
    out: list[tuple[Span, Span]] = []
    ordered = sorted(spans, key=lambda s: (s.function, s.address))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b.function != a.function or b.address >= a.address + a.words:
                break
            out.append((a, b))
    return out


@dataclass(frozen=True, slots=True)
class PresetRegister:
    """One register of a preset: its entity is ``<prefix>_<suffix>``."""

    suffix: str
    address: int
    kind: RegisterType
    unit: str
    device_class: str
    state_class: str
    function: Function = "input"
    word_order: WordOrder = "big"
    sim_value: float = 0.0
    """A plausible reading for the simulated twin."""


SDM120: tuple[PresetRegister, ...] = (
    PresetRegister("voltage", 0x0000, "float32", "V", "voltage", "measurement", sim_value=230.0),
    PresetRegister("current", 0x0006, "float32", "A", "current", "measurement", sim_value=2.0),
    PresetRegister("power", 0x000C, "float32", "W", "power", "measurement", sim_value=450.0),
    PresetRegister("frequency", 0x0046, "float32", "Hz", "frequency", "measurement", sim_value=50.0),
    PresetRegister("energy", 0x0048, "float32", "kWh", "energy", "total_increasing", sim_value=1234.5),
)
"""Eastron SDM120-Modbus (and the SDM120CT, SDM72's first registers): float32, high word first, input
registers (function 4), from Eastron's protocol document; the SDM630 has the same layout for phase 1."""

PRESETS: dict[str, tuple[PresetRegister, ...]] = {"sdm120": SDM120}
