"""A rule's ``publish`` request on the bus: the JSON text it travels as, and its reading by the bridge."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.clock import VirtualClock
from core.events import PUBLISH_ENTITY, EventFactory, Kind, PublishRequest, publish_request

EVENTS = EventFactory(VirtualClock())


@settings(max_examples=300)
@given(topic=st.text(min_size=1), payload=st.text(), retain=st.booleans())
def test_a_request_is_written_as_the_json_text_the_rules_have_always_emitted(
    topic: str, payload: str, retain: bool
) -> None:
    wire = json.dumps({"topic": topic, "payload": payload, "retain": retain})
    assert PublishRequest(topic, payload, retain).to_json() == wire


@settings(max_examples=300)
@given(topic=st.text(min_size=1), payload=st.text(), retain=st.booleans())
def test_a_request_read_back_from_its_text_is_the_request_written(topic: str, payload: str, retain: bool) -> None:
    request = PublishRequest(topic, payload, retain)
    assert PublishRequest.from_json(request.to_json()) == request


def test_the_bridge_gets_the_request_the_rule_just_wrote_without_reading_its_text_again() -> None:
    request = PublishRequest("alarm/temperature", "25.3")
    event = EVENTS.make(Kind.SYSTEM, PUBLISH_ENTITY, request.to_json())
    assert publish_request(event) is request


def test_an_equal_text_that_is_not_the_one_written_here_is_read_and_checked() -> None:
    request = PublishRequest("alarm/temperature", "25.3")
    text = request.to_json()
    from_disk = json.loads(json.dumps([text]))[0]  # equal, but another object: as read back after a restart
    assert from_disk == text and from_disk is not text
    read = publish_request(EVENTS.make(Kind.SYSTEM, PUBLISH_ENTITY, from_disk))
    assert read == request and read is not request


def test_an_earlier_request_is_still_read_right_once_a_later_one_was_written() -> None:
    first = PublishRequest("notify/one", "1")
    first_text = first.to_json()
    PublishRequest("notify/two", "2", retain=True).to_json()
    assert publish_request(EVENTS.make(Kind.SYSTEM, PUBLISH_ENTITY, first_text)) == first


def test_a_malformed_request_is_refused_even_right_after_a_request_was_written() -> None:
    PublishRequest("notify/one", "1").to_json()
    with pytest.raises(ValueError, match="topic"):
        publish_request(EVENTS.make(Kind.SYSTEM, PUBLISH_ENTITY, '{"payload": "no topic"}'))


@pytest.mark.parametrize(("topic", "payload", "retain", "reason"), [
    ("", "x", False, "topic"), ("t", 3, False, "payload"), ("t", "x", 1, "retain"), ("t", "x", "false", "retain"),
])
def test_a_request_that_could_not_be_read_back_cannot_be_made(
    topic: object, payload: object, retain: object, reason: str,
) -> None:
    """The bridge gets the request the rule made without reading its text: the checks the text had are the request's."""
    with pytest.raises(ValueError, match=reason):
        PublishRequest(topic, payload, retain)  # type: ignore[arg-type]
