"""Serial protocol parsers alone: readings, resynchronisation, checksums, and fuzzing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.protocols import (
    MHZ19_READ,
    PARSERS,
    JsonLinesParser,
    KeyValueParser,
    Mhz19Parser,
    NmeaParser,
    Parser,
    Pms5003Parser,
    mhz19_checksum,
    mhz19_response,
    nmea_sentence,
    pms5003_frame,
)

GGA = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"
RMC = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"
PMS_VALUES = [5, 8, 9, 6, 8, 9, 900, 300, 50, 10, 2, 1]


def feed_bytewise(parser: Parser, data: bytes) -> list[dict[str, float]]:
    out = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    return out


def test_nmea_gga_gives_position_altitude_and_satellites() -> None:
    [record] = NmeaParser().feed(GGA)
    assert record == {
        "fix_quality": 1.0, "latitude": 48.1173, "longitude": 11.5166667, "satellites": 8.0, "altitude": 545.4,
    }


def test_nmea_rmc_gives_speed_in_kmh_and_course() -> None:
    [record] = NmeaParser().feed(RMC)
    assert record["speed_kmh"] == pytest.approx(41.485, abs=0.001)
    assert record["course"] == 84.4


def test_nmea_southern_and_western_hemispheres_are_negative() -> None:
    [record] = NmeaParser().feed(nmea_sentence("GNGGA,1,3351.000,S,15112.000,W,1,05,1,10,M,,M,,"))
    assert (record["latitude"], record["longitude"]) == (-33.85, -151.2)


def test_nmea_with_a_bad_checksum_is_counted_never_a_reading() -> None:
    parser = NmeaParser()
    assert parser.feed(GGA.replace(b"*47", b"*48")) == []
    assert parser.counters.bad_checksum == 1


def test_nmea_without_a_checksum_is_refused() -> None:
    parser = NmeaParser()
    assert parser.feed(b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,\r\n") == []
    assert parser.counters.malformed == 1


def test_nmea_without_a_fix_reports_only_the_fix_quality() -> None:
    assert NmeaParser().feed(nmea_sentence("GPRMC,1,V,,,,,,,010126,,,N")) == [{"fix_quality": 0.0}]


def test_nmea_ignores_sentences_it_does_not_read() -> None:
    parser = NmeaParser()
    assert parser.feed(nmea_sentence("GPGSV,3,1,11,03,03,111,00")) == []
    assert parser.counters.malformed == 0


def test_line_parsers_resynchronise_after_an_overlong_line() -> None:
    parser = NmeaParser()
    assert parser.feed(b"x" * 1000 + GGA + GGA) != []
    assert parser.counters.malformed == 1


def test_json_lines_flatten_nested_objects_and_skip_non_numbers() -> None:
    record = JsonLinesParser().feed(b'{"env": {"t": 21.5, "ok": true}, "id": "abc", "n": null}\n')
    assert record == [{"env.t": 21.5, "env.ok": 1.0}]


@pytest.mark.parametrize("line", [b"[1, 2]\n", b"{bad\n", b"42\n"])
def test_json_lines_that_are_not_objects_are_counted(line: bytes) -> None:
    parser = JsonLinesParser()
    assert parser.feed(line) == []
    assert parser.counters.malformed == 1


def test_kv_lines_split_anywhere_are_reassembled() -> None:
    assert feed_bytewise(KeyValueParser(), b"t=21.5 h=48\r\n") == [{"t": 21.5, "h": 48.0}]


def test_pms5003_frame_gives_the_twelve_values() -> None:
    [record] = Pms5003Parser().feed(pms5003_frame(PMS_VALUES))
    assert record["pm2_5"] == 8.0 and record["pm10"] == 9.0 and record["n0_3"] == 900.0
    assert len(record) == 12


def test_pms5003_resynchronises_after_garbage_and_a_false_header() -> None:
    parser = Pms5003Parser()
    records = parser.feed(b"\x00\x42\xff\x42\x4d\x00" + pms5003_frame(PMS_VALUES))
    assert len(records) == 1
    assert parser.counters.discarded_bytes == 6


def test_pms5003_bad_checksum_is_counted_never_a_reading() -> None:
    frame = bytearray(pms5003_frame(PMS_VALUES))
    frame[10] ^= 0x01
    parser = Pms5003Parser()
    assert parser.feed(bytes(frame)) == []
    assert parser.counters.bad_checksum == 1


def test_mhz19_response_gives_co2_and_temperature() -> None:
    assert Mhz19Parser().feed(mhz19_response(812, 24)) == [{"co2": 812.0, "temperature": 24.0}]


def test_mhz19_read_command_carries_its_own_checksum() -> None:
    assert mhz19_checksum(MHZ19_READ) == MHZ19_READ[8]


def test_mhz19_bad_checksum_is_counted_never_a_reading() -> None:
    parser = Mhz19Parser()
    response = bytearray(mhz19_response(812, 24))
    response[3] ^= 0x10
    assert parser.feed(bytes(response)) == []
    assert parser.counters.bad_checksum == 1


# -- properties -------------------------------------------------------------------------------

VALID = {
    "kv": b"t=21.5\n",
    "json": b'{"t": 21.5}\n',
    "nmea": GGA,
    "pms5003": pms5003_frame(PMS_VALUES),
    "mhz19": mhz19_response(812, 24),
}
BINARY: dict[str, Callable[[], Parser]] = {"nmea": NmeaParser, "pms5003": Pms5003Parser, "mhz19": Mhz19Parser}


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(st.binary(max_size=64), max_size=20))
def test_any_byte_stream_never_raises(name: str, chunks: list[bytes]) -> None:
    parser = PARSERS[name]()
    for chunk in chunks:
        for record in parser.feed(chunk):
            assert all(isinstance(v, float) for v in record.values())


@pytest.mark.parametrize("name", sorted(BINARY))
@settings(max_examples=150, deadline=None)
@given(data=st.data(), garbage=st.binary(max_size=40), split=st.integers(min_value=1, max_value=64))
def test_a_corrupted_frame_never_becomes_a_reading(
    name: str, data: st.DataObject, garbage: bytes, split: int
) -> None:
    """Garbage, then a frame with one flipped bit, then a good frame: exactly the good frame's record."""
    good = VALID[name]
    body_end = len(good) - 2 if name == "nmea" else len(good)  # keep NMEA's CRLF so the line ends
    index = data.draw(st.integers(min_value=0, max_value=body_end - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    bad = bytearray(good)
    bad[index] ^= 1 << bit
    stream = garbage + b"\n" + bytes(bad) + good
    parser = BINARY[name]()
    records = []
    for i in range(0, len(stream), split):
        records += parser.feed(stream[i : i + split])
    expected = BINARY[name]().feed(good)
    assert records == expected


def _flip(frame: bytes, index: int, bit: int) -> bytes:
    index %= len(frame)
    return frame[:index] + bytes([frame[index] ^ (1 << bit)]) + frame[index + 1 :]


def valid_frames(parser: Parser, stream: bytes) -> list[dict[str, float]]:
    """Every record some checksum-valid frame or line anywhere in ``stream`` would give."""
    found: list[dict[str, float]] = []
    if isinstance(parser, NmeaParser):
        for line in stream.split(b"\n"):
            try:
                record = parser.parse_line(line.strip(b"\r \t\0"))
            except ValueError:
                continue
            if record is not None:
                found.append(record)
        return found
    assert isinstance(parser, Pms5003Parser | Mhz19Parser)
    for start in range(len(stream) - parser.length + 1):
        frame = stream[start : start + parser.length]
        if frame.startswith(parser.header):
            try:
                found.append(parser.parse_frame(frame))
            except ValueError:
                continue
    return found


@pytest.mark.parametrize("name", sorted(BINARY))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_every_reading_comes_from_a_frame_whose_checksum_holds(name: str, data: st.DataObject) -> None:
    """Random bytes, good frames and frames with one flipped bit, in any order and any split."""
    good = VALID[name]
    piece = st.one_of(
        st.binary(max_size=40),
        st.just(good),
        st.builds(_flip, st.just(good), st.integers(0, len(good) - 3), st.integers(0, 7)),
    )
    stream = b"".join(data.draw(st.lists(piece, max_size=8)))
    split = data.draw(st.integers(min_value=1, max_value=50))
    parser = BINARY[name]()
    records = []
    for i in range(0, len(stream), split):
        records += parser.feed(stream[i : i + split])
    allowed = valid_frames(BINARY[name](), stream)
    for record in records:
        assert record in allowed


# -- a flooding device: only the newest lines of a read are parsed (drivers/serial_link.py) ------------------

def test_feeding_the_newest_lines_parses_only_them_and_counts_the_rest_unparsed() -> None:
    parser = KeyValueParser()
    data = b"".join(b"t=%d\n" % n for n in range(100)) + b"t=10"  # and the start of the next line
    records = parser.feed_newest(data, 3)
    assert records == [{"t": 97.0}, {"t": 98.0}, {"t": 99.0}]
    assert (parser.counters.records, parser.counters.malformed, parser.counters.unparsed) == (3, 0, 97)
    assert parser.feed(b"0\n") == [{"t": 100.0}]  # the partial line was kept for the next read


def test_a_malformed_newest_line_falls_back_on_the_line_before_it() -> None:
    parser = KeyValueParser()
    records = parser.feed_newest(b"t=1\nt=2\nt=3\nt=?? garbage\n", 2)
    assert records == [{"t": 3.0}]
    assert (parser.counters.records, parser.counters.malformed, parser.counters.unparsed) == (1, 1, 2)


def test_the_newest_lines_kept_are_lines_with_something_in_them_not_the_blanks_of_crlf_endings() -> None:
    # The reader turns every CR into a line end, so a CRLF device's lines each bring a blank one.
    parser = KeyValueParser()
    records = parser.feed_newest(b"".join(b"t=%d\n\n" % n for n in range(10)), 3)
    assert records == [{"t": 7.0}, {"t": 8.0}, {"t": 9.0}]
    assert parser.counters.unparsed == 7


def test_blank_lines_and_the_rest_of_an_overlong_line_are_not_counted_as_unparsed_lines() -> None:
    parser = KeyValueParser()
    parser.feed(b"x" * (KeyValueParser.max_line + 10))  # an over-long line: counted malformed once
    records = parser.feed_newest(b"xxxx\n\n\nt=1\n\nt=2\n\nt=3\n", 1)
    assert records == [{"t": 3.0}]
    assert (parser.counters.records, parser.counters.malformed, parser.counters.unparsed) == (1, 1, 2)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.sampled_from([b"t=1", b"t=2 h=3", b"garbage", b"", b"  ", b"t=nan"]), max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    keep=st.integers(min_value=1, max_value=4),
)
def test_feeding_the_newest_lines_counts_every_line_that_feeding_all_of_them_counts(
    lines: list[bytes], cuts: list[int], keep: int,
) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    chunks = [stream[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(stream)], strict=True)]
    every, newest = KeyValueParser(), KeyValueParser()
    for chunk in chunks:
        every.feed(chunk)
        newest.feed_newest(chunk, keep)
    counted = newest.counters.records + newest.counters.malformed + newest.counters.unparsed
    assert counted == every.counters.records + every.counters.malformed
    assert newest.counters.malformed <= every.counters.malformed
