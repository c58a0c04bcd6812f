"""The one formatter of validation errors, as config.toml and the rule files both use it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import did_you_mean, located_errors


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Lamp(_Strict):
    kind: Literal["lamp"]
    id: str
    watts: int = Field(ge=0)


class _Fan(_Strict):
    kind: Literal["fan"]
    id: str


class _House(_Strict):
    name: str = Field(max_length=5)
    things: list[Annotated[_Lamp | _Fan, Field(discriminator="kind")]] = Field(default_factory=list)


def _lines(data: dict[str, Any], **options: Any) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        _House.model_validate(data)
    return located_errors("house.toml", caught.value, data, tags=("kind",), **options)


def test_the_path_leaves_out_the_union_tag_and_names_the_entry_by_its_id() -> None:
    data = {"name": "home", "things": [{"kind": "lamp", "id": "desk", "watts": -1}]}
    assert _lines(data) == ["house.toml: things[0] (desk).watts: Input should be greater than or equal to 0 (got -1)"]


def test_a_named_table_names_its_entry_in_front() -> None:
    data = {"name": "home", "things": [{"kind": "lamp", "id": "desk", "watts": -1}]}
    assert _lines(data, named={"things": "thing"}) == [
        "house.toml: thing desk: watts: Input should be greater than or equal to 0 (got -1)"
    ]


def test_an_unknown_tag_gets_the_nearest_allowed_one() -> None:
    data = {"name": "home", "things": [{"kind": "lmap", "id": "desk"}]}
    assert _lines(data) == [
        "house.toml: things[0] (desk).kind: unknown kind 'lmap'; did you mean 'lamp'? (allowed here: lamp, fan)"
    ]


def test_a_missing_tag_names_the_key() -> None:
    assert _lines({"name": "home", "things": [{"id": "desk"}]}) == ["house.toml: things[0] (desk): missing 'kind'"]


def test_a_long_value_is_cut_after_got() -> None:
    (line,) = _lines({"name": "x" * 100})
    assert line.startswith("house.toml: name: String should have at most 5 characters (got 'xxxx")
    assert line.endswith("...)") and "x" * 58 not in line


def test_no_suggestion_when_nothing_is_close() -> None:
    assert did_you_mean("zzz", ["lamp", "fan"]) == ""
    assert did_you_mean("fna", ["lamp", "fan"]) == "; did you mean 'fan'?"
