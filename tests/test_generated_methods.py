"""The methods dataclasses write are compiled once per install and read back at the next start
(core.lean_imports.GeneratedCode; docs/performance.md)."""

from __future__ import annotations

import dataclasses
import importlib.util
import marshal
import typing
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.lean_imports import GeneratedCode, cache_generated_methods, save_generated_methods


@pytest.fixture
def cache_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pycache" / "methods"
    try:
        yield path
    finally:
        save_generated_methods()  # gives dataclasses its builtin exec back, whatever the test did


def a_start(path: Path) -> tuple[GeneratedCode, type]:
    """What a start does: the cache serves, a class is made, the start ends (the file written)."""
    generated = cache_generated_methods(path)
    assert generated is not None

    @dataclasses.dataclass(frozen=True, slots=True)
    class Reading:
        entity: str
        value: float = 0.0

    save_generated_methods()
    return generated, Reading


def test_a_class_made_while_the_cache_serves_behaves_as_a_dataclass(cache_file: Path) -> None:
    _, reading = a_start(cache_file)

    first = reading("hall", 21.5)
    assert first == reading("hall", 21.5)
    assert repr(first).endswith("Reading(entity='hall', value=21.5)")
    assert hash(first) == hash(reading("hall", 21.5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.value = 3.0


def test_the_methods_annotations_are_the_types_as_exec_would_give_them(cache_file: Path) -> None:
    # core.lean_imports has `from __future__ import annotations`: the cache must not pass that flag to the
    # methods it compiles (their annotations would be the names of dataclasses' locals, as strings)
    cache_generated_methods(cache_file)
    reading = dataclasses.make_dataclass("Reading", [("entity", str), ("value", float, 0.0)])
    save_generated_methods()

    assert vars(reading)["__init__"].__annotations__ == {"entity": str, "value": float, "return": None}


def test_the_next_start_compiles_nothing_it_compiled_before(cache_file: Path) -> None:
    first, _ = a_start(cache_file)
    assert first.compiled > 0 and cache_file.exists()

    second, reading = a_start(cache_file)

    assert second.compiled == 0
    assert reading("porch").value == 0.0


def test_a_corrupt_cache_file_is_ignored_and_replaced(cache_file: Path) -> None:
    cache_file.parent.mkdir()
    cache_file.write_bytes(b"\x00not marshal at all")

    generated, reading = a_start(cache_file)

    assert generated.compiled > 0
    assert reading("hall").entity == "hall"
    assert cache_generated_methods(cache_file) is not None and save_generated_methods() is False  # it reads


def test_a_cache_that_cannot_be_written_leaves_the_start_as_it_was(tmp_path: Path) -> None:
    blocked = tmp_path / "a file"
    blocked.write_text("")
    try:
        cache_generated_methods(blocked / "methods")

        @dataclasses.dataclass
        class Point:
            x: int

        assert save_generated_methods() is False
    finally:
        save_generated_methods()
    assert Point(1) == Point(1)


def test_once_the_start_is_over_dataclasses_uses_the_builtin_exec_again(cache_file: Path) -> None:
    a_start(cache_file)

    assert "exec" not in vars(dataclasses)


def test_a_cache_file_written_under_another_bytecode_magic_number_is_not_used(
    cache_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An interpreter upgrade that keeps the cache tag (cpython-311) may still change the bytecode, as a .pyc's
    # magic number says; code of another bytecode would be run as is at every start. Another Python cannot be
    # installed here: its magic number is what the test changes.
    monkeypatch.setattr(importlib.util, "MAGIC_NUMBER", b"\xff\xff\r\n")
    a_start(cache_file)
    monkeypatch.undo()

    second, reading = a_start(cache_file)

    assert second.compiled > 0
    assert reading("hall").entity == "hall"


def test_a_cache_file_with_a_corrupt_code_object_is_ignored_and_every_command_still_starts(cache_file: Path) -> None:
    # Every `gateway` command reads the file as it starts, `safe-state` included; marshal raises more than the
    # errors its documentation names for a damaged file (SystemError for a code object whose name slot holds a
    # number: one flipped type byte, as a damaged SD card gives), and a start it failed would never rewrite it.
    name = "a_name_the_damage_hits"
    intact = marshal.dumps({"text": compile(name, "<string>", "exec")})
    assert intact.count(name.encode()) == 1  # the name, stored once as a short interned string (2 bytes before)
    at = intact.index(name.encode())
    damaged = intact[: at - 2] + b"\xe9" + (7).to_bytes(4, "little") + intact[at + len(name) :]  # an int instead
    with pytest.raises(SystemError):
        marshal.loads(damaged)
    cache_file.parent.mkdir()
    checksum = zlib.crc32(damaged).to_bytes(4, "little")  # damaged before it was written: its CRC-32 matches
    cache_file.write_bytes(importlib.util.MAGIC_NUMBER + checksum + damaged)

    generated, reading = a_start(cache_file)

    assert generated.compiled > 0
    assert reading("hall").entity == "hall"


def test_a_cache_file_damaged_into_other_valid_code_is_not_run(cache_file: Path) -> None:
    # Half of the files with a byte or two changed still unmarshal, into code that is not what the text says:
    # here the field's name in the compiled __init__, one letter changed (the texts, the keys, are intact).
    def a_start_with_a_setpoint() -> tuple[GeneratedCode, type]:
        generated = cache_generated_methods(cache_file)
        assert generated is not None

        @dataclasses.dataclass
        class Setting:
            thermostat_setpoint: float

        save_generated_methods()
        return generated, Setting

    a_start_with_a_setpoint()
    name = b"\x13thermostat_setpoint"  # the name as marshal stores it in the code (its length, 19, before it)
    written = cache_file.read_bytes()
    assert name in written
    cache_file.write_bytes(written.replace(name, b"\x13thermostat_setpoinz"))

    generated, setting = a_start_with_a_setpoint()

    assert generated.compiled > 0
    assert vars(setting(21.0)) == {"thermostat_setpoint": 21.0}


def forward_references(texts: list[str]) -> list[typing.ForwardRef]:
    """What a TypedDict or a pydantic model of a module with ``from __future__ import annotations`` makes."""
    return [typing.ForwardRef(text) for text in texts]


def test_a_forward_references_text_is_compiled_once_in_a_start_and_not_at_the_next(cache_file: Path) -> None:
    first = cache_generated_methods(cache_file)
    assert first is not None
    references = forward_references(["dict[str, Any]", "dict[str, Any]", "float | None"])
    save_generated_methods()
    assert first.compiled == 2
    assert references[0].__forward_code__ is references[1].__forward_code__

    second = cache_generated_methods(cache_file)
    assert second is not None
    forward_references(["float | None", "dict[str, Any]"])
    save_generated_methods()
    assert second.compiled == 0


def test_a_forward_reference_made_while_the_cache_serves_evaluates_as_typings_own(cache_file: Path) -> None:
    cache_generated_methods(cache_file)
    served = forward_references(["list[Celsius] | None"])[0]
    save_generated_methods()

    namespace = {"Celsius": float}
    assert served._evaluate(namespace, None, frozenset()) == list[float] | None
    assert served == typing.ForwardRef("list[Celsius] | None")


def test_once_the_start_is_over_typing_uses_the_builtin_compile_again(cache_file: Path) -> None:
    a_start(cache_file)

    assert "compile" not in vars(typing)
