"""Serial sensor protocols: bytes in, records out, and nothing about threads or ports.

Shaped like pyserial's ``serial.threaded`` protocols: a :class:`Parser` is fed
whatever bytes the port produced (any split, any garbage) and returns the
records it completed, each a ``{field: number}`` dict. The reader thread in
:mod:`drivers.serial_link` owns the port; parsers are pure and tested with
hypothesis (any byte stream never raises, never yields a reading from a frame
with a bad checksum).

Every parser resynchronises after garbage: line parsers drop an over-long or
malformed line and carry on at the next newline; frame parsers drop one byte
and search for the next header. What they drop is counted in
:attr:`Parser.counters`.
"""

from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

Record = dict[str, float]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FieldInfo:
    unit: str | None = None
    device_class: str | None = None


@dataclass(slots=True)
class ParserCounters:
    records: int = 0
    malformed: int = 0
    """Lines or frames that could not be parsed (garbage, truncated, not the protocol)."""
    bad_checksum: int = 0
    """Frames that were complete but failed their checksum: never a reading."""
    discarded_bytes: int = 0
    """Bytes skipped while searching for the next frame header."""
    unparsed: int = 0
    """Lines of a flood counted and not parsed (:meth:`LineParser.feed_newest`): whether they were
    well-formed is not known, so they are neither records nor malformed."""


class ParseError(ValueError):
    """One line or frame is not valid; the parser counts it and carries on."""


class ChecksumError(ParseError):
    """A complete frame whose checksum does not match."""


class Parser(ABC):
    """Bytes in, records out. ``known_fields`` is None when any field name may appear (kv, JSON)."""

    known_fields: ClassVar[dict[str, FieldInfo] | None] = None

    def __init__(self) -> None:
        self.counters = ParserCounters()

    @abstractmethod
    def feed(self, data: bytes) -> list[Record]: ...

    @abstractmethod
    def reset(self) -> None:
        """Forget a partial line or frame (the port was closed and reopened)."""

    def _count(self, exc: ParseError) -> None:
        if isinstance(exc, ChecksumError):
            self.counters.bad_checksum += 1
        else:
            self.counters.malformed += 1

    def _unexpected(self, exc: Exception) -> ParseError:
        """A bug in a parser or a field mapping: counted as malformed and logged (first, then every 1000th);
        it costs one line or frame, never the rest of the read."""
        self.counters.malformed += 1
        if self.counters.malformed == 1 or self.counters.malformed % 1000 == 0:
            log.error("%s could not handle its input (%d malformed so far)", type(self).__name__,
                      self.counters.malformed, exc_info=exc)
        return ParseError(f"{type(exc).__name__}: {exc}")


_PADDING = b"\r \t\0"
"""Stripped from both ends of a line; a line of nothing else is blank (skipped, never counted)."""


class LineParser(Parser):
    """Newline-terminated text; a line longer than ``max_line`` is dropped up to the next newline."""

    max_line: ClassVar[int] = 512

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._overflow = False
        self.last_error: ParseError | None = None

    def feed(self, data: bytes) -> list[Record]:
        records: list[Record] = []
        buffer = self._buffer
        buffer += data
        end = buffer.rfind(b"\n")
        if end >= 0:
            # Every complete line at once: one split and one cut of the buffer per read, where a find, a copy
            # and a cut of the buffer's head per line cost as much as parsing the line (issue 14).
            lines = bytes(buffer[:end]).split(b"\n")
            del buffer[: end + 1]
            if self._overflow:  # the rest of an over-long line, already counted as malformed
                self._overflow = False
                del lines[0]
            self._lines(lines, records)
        if len(buffer) > self.max_line:
            self._buffer.clear()
            if not self._overflow:
                self._overflow = True
                self._count(ParseError("line too long"))
        return records

    def feed_newest(self, data: bytes, keep: int) -> list[Record]:
        """Like :meth:`feed`, but only the newest ``keep`` non-blank lines of what is complete are parsed: the
        lines before them are counted in ``counters.unparsed`` (blank lines are not counted, as
        :meth:`feed` skips them) and dropped unparsed. For a device that floods, whose readings are
        coalesced to the newest anyway: parsing each of 600 lines a read only to keep the last held
        the interpreter ~1 ms a read. Keeping a few lines rather than one lets a malformed newest line
        fall back on the line before it, and a device that sends its fields on separate lines (NMEA's
        GGA and RMC) still delivers each of them."""
        self._buffer += data
        buffer = self._buffer
        start = buffer.rfind(b"\n")
        kept = 0
        while start >= 0 and kept < keep:  # back over ``keep`` lines with something in them (CRLF brings blanks)
            before = buffer.rfind(b"\n", 0, start)
            if buffer[before + 1 : start].strip(_PADDING):
                kept += 1
            start = before
        if start >= 0:  # lines before the newest ``keep``: counted, not parsed
            head = bytes(self._buffer[: start + 1])
            del self._buffer[: start + 1]
            lines = head.split(b"\n")[:-1]
            if self._overflow:  # the rest of an over-long line, already counted as malformed
                self._overflow = False
                lines = lines[1:]
            self.counters.unparsed += sum(1 for line in lines if line.strip(_PADDING))
        return self.feed(b"")

    def _lines(self, lines: list[bytes], records: list[Record]) -> None:
        """Each line isolated: whatever it raises costs that line only, never the lines around it. One loop per read
        over :meth:`parse_line` (a call per line to a helper doing this was a tenth of the parse; issue 14)."""
        parse = self.parse_line
        for line in lines:
            line = line.strip(_PADDING)  # noqa: PLW2901 - the stripped line is the line
            if not line:
                continue
            try:
                record = parse(line)
            except ParseError as exc:
                self.last_error = exc
                self._count(exc)
                continue
            except Exception as exc:
                self.last_error = self._unexpected(exc)
                continue
            if record is not None:
                records.append(record)
        self.counters.records += len(records)

    @abstractmethod
    def parse_line(self, line: bytes) -> Record | None:
        """One stripped line -> a record, None (valid but carries nothing), or ParseError."""

    def reset(self) -> None:
        self._buffer.clear()
        self._overflow = False


def _finite(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ParseError(f"not a number: {raw[:20]!r}") from None
    if not math.isfinite(value):
        raise ParseError(f"not a finite number: {raw[:20]!r}")
    return value


_isfinite = math.isfinite


def _text(line: bytes) -> str:
    try:
        return line.decode("ascii")
    except UnicodeDecodeError:
        raise ParseError("not ASCII text") from None


class KeyValueParser(LineParser):
    """``t=21.4 h=48`` (spaces, commas or semicolons between pairs)."""

    def parse_line(self, line: bytes) -> Record:
        try:  # _text, inlined: a call per line (issue 14)
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise ParseError("not ASCII text") from None
        pairs: Record = {}
        for token in text.replace(",", " ").replace(";", " ").split():
            key, sep, raw = token.partition("=")
            if not sep or not key:
                raise ParseError(f"not key=value: {token[:20]!r}")
            try:  # _finite, inlined: a call per field was a fifth of the parse (issue 14)
                value = float(raw)
            except ValueError:
                raise ParseError(f"not a number: {raw[:20]!r}") from None
            if not _isfinite(value):
                raise ParseError(f"not a finite number: {raw[:20]!r}")
            pairs[key] = value
        if not pairs:
            raise ParseError("empty line")
        return pairs


class JsonLinesParser(LineParser):
    """One JSON object per line; nested objects flatten to dotted keys (``{"a": {"t": 1}}`` -> ``a.t``).

    Numbers and booleans become fields; strings, nulls and lists are ignored.
    """

    max_line = 4096

    def parse_line(self, line: bytes) -> Record:
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            raise ParseError("not JSON") from None
        if not isinstance(data, dict):
            raise ParseError("not a JSON object")
        record: Record = {}
        self._flatten(data, "", record)
        return record

    def _flatten(self, data: dict[str, object], prefix: str, out: Record) -> None:
        for key, value in data.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                self._flatten(value, f"{name}.", out)
            elif isinstance(value, int | float):  # bool is an int: true -> 1.0
                try:
                    number = float(value)
                except OverflowError:
                    continue
                if math.isfinite(number):
                    out[name] = number


def nmea_checksum(body: bytes) -> int:
    """XOR of every byte between ``$`` and ``*``."""
    total = 0
    for byte in body:
        total ^= byte
    return total


def nmea_sentence(body: str) -> bytes:
    """``GPGGA,...`` -> ``$GPGGA,...*hh\\r\\n`` (simulators and tests)."""
    return f"${body}*{nmea_checksum(body.encode()):02X}\r\n".encode()


class NmeaParser(LineParser):
    """NMEA 0183 GGA (fix, position, altitude, satellites) and RMC (position, speed, course).

    Any talker (``GP``, ``GN``, ``GL``, ...). The checksum is mandatory: a
    sentence without one or with a wrong one is never a reading. A sentence
    without a fix (GGA quality 0, RMC status ``V``) yields only ``fix_quality``.
    """

    max_line = 128
    known_fields: ClassVar[dict[str, FieldInfo] | None] = {
        "latitude": FieldInfo("°"),
        "longitude": FieldInfo("°"),
        "altitude": FieldInfo("m", "distance"),
        "satellites": FieldInfo(),
        "fix_quality": FieldInfo(),
        "speed_kmh": FieldInfo("km/h", "speed"),
        "course": FieldInfo("°"),
    }

    def parse_line(self, line: bytes) -> Record | None:
        text = _text(line)
        if not text.startswith("$") or len(text) < 4 or text[-3] != "*":
            raise ParseError("not an NMEA sentence with a checksum")
        body = text[1:-3]
        try:
            expected = int(text[-2:], 16)
        except ValueError:
            raise ParseError("checksum is not hex") from None
        if nmea_checksum(body.encode()) != expected:
            raise ChecksumError("NMEA checksum mismatch")
        parts = body.split(",")
        kind = parts[0][2:]
        if kind == "GGA":
            return self._gga(parts)
        if kind == "RMC":
            return self._rmc(parts)
        return None  # a valid sentence we do not read (GSV, VTG, ...)

    def _gga(self, p: list[str]) -> Record:
        if len(p) < 10:
            raise ParseError("GGA sentence too short")
        quality = _finite(p[6]) if p[6] else 0.0
        record: Record = {"fix_quality": quality}
        if quality > 0:
            record["latitude"] = _coordinate(p[2], p[3], "NS")
            record["longitude"] = _coordinate(p[4], p[5], "EW")
            if p[7]:
                record["satellites"] = _finite(p[7])
            if p[9]:
                record["altitude"] = _finite(p[9])
        return record

    def _rmc(self, p: list[str]) -> Record:
        if len(p) < 9:
            raise ParseError("RMC sentence too short")
        if p[2] != "A":
            return {"fix_quality": 0.0}
        record: Record = {
            "latitude": _coordinate(p[3], p[4], "NS"),
            "longitude": _coordinate(p[5], p[6], "EW"),
        }
        if p[7]:
            record["speed_kmh"] = round(_finite(p[7]) * 1.852, 3)
        if p[8]:
            record["course"] = _finite(p[8])
        return record


def _coordinate(raw: str, hemisphere: str, signs: str) -> float:
    """``4807.038``, ``N`` -> 48.1173 (ddmm.mmmm to decimal degrees)."""
    if hemisphere not in signs or not raw or "." not in raw:
        raise ParseError(f"bad coordinate {raw[:15]!r} {hemisphere[:2]!r}")
    value = _finite(raw)
    degrees, minutes = divmod(value, 100)
    if minutes >= 60:
        raise ParseError(f"bad coordinate minutes {raw[:15]!r}")
    result = degrees + minutes / 60
    limit = 90 if signs == "NS" else 180
    if result > limit:
        raise ParseError(f"coordinate out of range {raw[:15]!r}")
    return round(-result if hemisphere == signs[1] else result, 7)


class FrameParser(Parser):
    """Fixed-length binary frames starting with ``header``; resynchronises byte by byte."""

    header: ClassVar[bytes]
    length: ClassVar[int]

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Record]:
        self._buffer += data
        records: list[Record] = []
        while True:
            start = self._buffer.find(self.header)
            if start < 0:
                keep = len(self.header) - 1
                self._discard(max(0, len(self._buffer) - keep))
                return records
            self._discard(start)
            if len(self._buffer) < self.length:
                return records
            frame = bytes(self._buffer[: self.length])
            try:
                record = self.parse_frame(frame)
            except ParseError as exc:
                self._count(exc)
                self._discard(1)  # the header may have been chance bytes: search again after it
                continue
            except Exception as exc:
                self._unexpected(exc)
                self._discard(1)
                continue
            del self._buffer[: self.length]
            self.counters.records += 1
            records.append(record)

    def _discard(self, count: int) -> None:
        if count:
            del self._buffer[:count]
            self.counters.discarded_bytes += count

    @abstractmethod
    def parse_frame(self, frame: bytes) -> Record:
        """A ``length``-byte frame starting with ``header`` -> a record, or ParseError/ChecksumError."""

    def reset(self) -> None:
        self._buffer.clear()


class Pms5003Parser(FrameParser):
    """Plantower PMS5003: 32-byte frames ``42 4D``, length 28, 13 big-endian words, 16-bit byte-sum checksum."""

    header = b"\x42\x4d"
    length = 32
    known_fields: ClassVar[dict[str, FieldInfo] | None] = {
        "pm1_0_cf1": FieldInfo("µg/m³", "pm1"),
        "pm2_5_cf1": FieldInfo("µg/m³", "pm25"),
        "pm10_cf1": FieldInfo("µg/m³", "pm10"),
        "pm1_0": FieldInfo("µg/m³", "pm1"),
        "pm2_5": FieldInfo("µg/m³", "pm25"),
        "pm10": FieldInfo("µg/m³", "pm10"),
        "n0_3": FieldInfo("/0.1L"),
        "n0_5": FieldInfo("/0.1L"),
        "n1_0": FieldInfo("/0.1L"),
        "n2_5": FieldInfo("/0.1L"),
        "n5_0": FieldInfo("/0.1L"),
        "n10": FieldInfo("/0.1L"),
    }

    def parse_frame(self, frame: bytes) -> Record:
        if int.from_bytes(frame[2:4], "big") != 28:
            raise ParseError("PMS5003 frame length is not 28")
        if sum(frame[:30]) & 0xFFFF != int.from_bytes(frame[30:32], "big"):
            raise ChecksumError("PMS5003 checksum mismatch")
        words = [int.from_bytes(frame[i : i + 2], "big") for i in range(4, 28, 2)]
        return {name: float(value) for name, value in zip(self.known_fields or {}, words, strict=True)}


def pms5003_frame(values: list[int]) -> bytes:
    """The 12 data words (in :attr:`Pms5003Parser.known_fields` order) as a valid frame."""
    body = b"\x42\x4d" + (28).to_bytes(2, "big") + b"".join(v.to_bytes(2, "big") for v in [*values, 0])
    return body + (sum(body) & 0xFFFF).to_bytes(2, "big")


def mhz19_checksum(frame: bytes) -> int:
    return (0xFF - (sum(frame[1:8]) & 0xFF) + 1) & 0xFF


MHZ19_READ = bytes([0xFF, 0x01, 0x86, 0, 0, 0, 0, 0, 0x79])
"""The "read CO2 concentration" command the driver sends every poll."""


def mhz19_response(co2: int, temperature_c: int) -> bytes:
    body = bytes([0xFF, 0x86, co2 >> 8 & 0xFF, co2 & 0xFF, (temperature_c + 40) & 0xFF, 0, 0, 0])
    return body + bytes([mhz19_checksum(body + b"\0")])


class Mhz19Parser(FrameParser):
    """Winsen MH-Z19 responses to :data:`MHZ19_READ`: ``FF 86 HH LL TT ... CS`` (9 bytes)."""

    header = b"\xff\x86"
    length = 9
    known_fields: ClassVar[dict[str, FieldInfo] | None] = {
        "co2": FieldInfo("ppm", "carbon_dioxide"),
        "temperature": FieldInfo("°C", "temperature"),
    }

    def parse_frame(self, frame: bytes) -> Record:
        if mhz19_checksum(frame) != frame[8]:
            raise ChecksumError("MH-Z19 checksum mismatch")
        return {"co2": float(frame[2] * 256 + frame[3]), "temperature": float(frame[4] - 40)}


PARSERS: dict[str, type[Parser]] = {
    "kv": KeyValueParser,
    "json": JsonLinesParser,
    "nmea": NmeaParser,
    "pms5003": Pms5003Parser,
    "mhz19": Mhz19Parser,
}

