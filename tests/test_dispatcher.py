"""The dispatcher: one thread applies state, rules, commands and timers, in order."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from core.clock import VirtualClock
from core.entities import Component, EntitySpec
from core.events import Event, Kind, Value
from drivers.base import Actuator, DriverContext
from gateway.bus import Bus
from gateway.dispatcher import MAX_CHAIN, Dispatcher
from tests.helpers import virtual_events


class FakeRelay(Actuator):
    """An actuator with no hardware behind it: the dispatcher's contract is what is tested here."""

    def __init__(self, fail: bool = False) -> None:
        self.value: Value = False
        self.fail = fail
        self.safe_calls = 0

    @property
    def id(self) -> str:
        return "relay"

    def entities(self) -> Sequence[EntitySpec]:
        return [EntitySpec("relay", Component.SWITCH, safe_value=False)]

    def start(self, ctx: DriverContext) -> None: ...

    def stop(self) -> None: ...

    def apply(self, entity: str, value: Value) -> Value:
        if self.fail:
            raise OSError("GPIO chip gone")
        self.value = value
        return value

    def to_safe_state(self) -> None:
        self.safe_calls += 1
        self.value = False


def make(actuator: FakeRelay | None = None) -> tuple[Dispatcher, list[Event]]:
    _, events = virtual_events()
    forwarded: list[Event] = []
    dispatcher = Dispatcher(
        Bus(), events, actuators={"relay": actuator or FakeRelay()}, forward=forwarded.append
    )
    return dispatcher, forwarded


def test_every_event_is_forwarded_and_folded_into_state() -> None:
    dispatcher, forwarded = make()
    dispatcher.bus.post(dispatcher.events.reading("temp", 21.5, "°C"))
    dispatcher.drain()
    assert [e.value for e in forwarded] == [21.5]
    assert dispatcher.state.value("temp") == 21.5


def test_a_command_is_applied_and_its_confirmed_state_names_the_command_as_cause() -> None:
    relay = FakeRelay()
    dispatcher, forwarded = make(relay)
    dispatcher.bus.post(dispatcher.events.make(Kind.COMMAND, "relay", True, rule="r1"))
    dispatcher.drain()
    command, state = forwarded
    assert relay.value is True
    assert (state.kind, state.value, state.rule, state.cause) == (Kind.STATE, True, "r1", command.id)


def test_an_actuator_whose_driver_fails_goes_to_its_safe_state_and_the_refusal_is_an_event() -> None:
    relay = FakeRelay(fail=True)
    dispatcher, forwarded = make(relay)
    dispatcher.bus.post(dispatcher.events.make(Kind.COMMAND, "relay", True))
    dispatcher.drain()
    assert relay.safe_calls == 1
    rejected = forwarded[-1]
    assert rejected.kind is Kind.REJECTED and rejected.detail is not None and "GPIO chip gone" in rejected.detail


def test_effects_are_processed_before_the_next_bus_event() -> None:
    dispatcher, forwarded = make()

    class TurnOnWithMotion:
        def handle(self, event: Event) -> None:
            if event.entity == "motion" and event.value is True:
                dispatcher.command("relay", True, cause=event.id)

    dispatcher.reactor = TurnOnWithMotion()
    dispatcher.bus.post(dispatcher.events.reading("motion", True))
    dispatcher.bus.post(dispatcher.events.reading("temp", 20.0))
    dispatcher.drain()
    assert [(e.kind, e.entity) for e in forwarded] == [
        (Kind.READING, "motion"), (Kind.COMMAND, "relay"), (Kind.STATE, "relay"), (Kind.READING, "temp"),
    ]


def test_rules_that_trigger_each_other_forever_are_cut_at_the_chain_limit() -> None:
    dispatcher, forwarded = make()

    class PingPong:
        def handle(self, event: Event) -> None:
            if event.kind is Kind.STATE:
                dispatcher.command("relay", not event.value, rule="ping", cause=event.id)

    dispatcher.reactor = PingPong()
    dispatcher.bus.post(dispatcher.events.make(Kind.COMMAND, "relay", True))
    dispatcher.drain()
    assert dispatcher.counters.chains_cut == 1
    assert len(forwarded) == MAX_CHAIN + 1


def test_a_timer_fires_at_its_deadline_in_virtual_time_and_not_before() -> None:
    dispatcher, _ = make()
    fired: list[float] = []
    dispatcher.call_later(300, lambda: fired.append(dispatcher.clock.monotonic()))
    start = dispatcher.clock.monotonic()
    dispatcher.advance(299.9)
    assert fired == []
    dispatcher.advance(0.2)
    assert fired == [start + 300]


def test_a_cancelled_timer_never_fires() -> None:
    dispatcher, _ = make()
    fired: list[bool] = []
    timer = dispatcher.call_later(5, lambda: fired.append(True))
    timer.cancel()
    dispatcher.advance(10)
    assert fired == []


def test_a_wall_clock_step_does_not_move_a_timer() -> None:
    dispatcher, _ = make()
    clock = dispatcher.clock
    assert isinstance(clock, VirtualClock)
    fired: list[bool] = []
    dispatcher.call_later(60, lambda: fired.append(True))
    clock.set_wall(clock.time() + 3600)
    dispatcher.advance(30)
    assert fired == []
    dispatcher.advance(30)
    assert fired == [True]


def test_a_failing_timer_callback_is_counted_and_the_loop_goes_on() -> None:
    dispatcher, _ = make()
    fired: list[bool] = []

    def boom() -> None:
        raise RuntimeError("bad callback")

    dispatcher.call_later(1, boom)
    dispatcher.call_later(2, lambda: fired.append(True))
    dispatcher.advance(3)
    assert dispatcher.counters.errors == 1 and fired == [True]


def test_an_actuator_that_fails_to_apply_is_reported_to_its_supervisor() -> None:
    dispatcher, _ = make(FakeRelay(fail=True))
    reported: list[tuple[str, str]] = []
    dispatcher.outputs.on_driver_failure = lambda driver, reason: reported.append((driver, reason))
    dispatcher.bus.post(dispatcher.events.make(Kind.COMMAND, "relay", True))
    dispatcher.drain()
    assert reported == [("relay", "apply failed: GPIO chip gone")]


class Batches:
    """A ``batch_scope`` recording the forwarded events each batch held; it stops the loop after ``stop_after``."""

    def __init__(self, dispatcher: Dispatcher, forwarded: list[Event], stop_after: int) -> None:
        self.dispatcher, self.forwarded, self.stop_after = dispatcher, forwarded, stop_after
        self.held: list[list[float]] = []

    @contextlib.contextmanager
    def __call__(self) -> Iterator[Callable[[], None]]:
        start = len(self.forwarded)
        yield lambda: None
        self.held.append([float(str(e.value)) for e in self.forwarded[start:]])
        if len(self.forwarded) >= self.stop_after:
            self.dispatcher.stop()


def test_a_batch_of_bus_events_is_forwarded_inside_the_batch_scope_the_uplink_corks() -> None:
    dispatcher, forwarded = make()
    batches = Batches(dispatcher, forwarded, stop_after=3)
    dispatcher.batch_scope = batches
    dispatcher.on_idle.append(lambda: dispatcher.stop() if len(forwarded) >= 3 else None)
    for value in (1.0, 2.0, 3.0):
        dispatcher.bus.post(dispatcher.events.reading("temp", value, "°C"))
    dispatcher.run(tick=0.01)
    assert batches.held == [[1.0, 2.0, 3.0]]


def test_a_lone_bus_event_is_forwarded_without_the_batch_scope() -> None:
    dispatcher, forwarded = make()
    batches = Batches(dispatcher, forwarded, stop_after=1)
    dispatcher.batch_scope = batches
    dispatcher.on_idle.append(lambda: dispatcher.stop() if forwarded else None)
    dispatcher.bus.post(dispatcher.events.reading("temp", 1.0, "°C"))
    dispatcher.run(tick=0.01)
    assert [e.value for e in forwarded] == [1.0]
    assert batches.held == []


def test_a_batch_whose_scope_fails_to_open_is_processed_all_the_same_and_the_loop_goes_on() -> None:
    dispatcher, forwarded = make()

    def broken() -> contextlib.AbstractContextManager[Callable[[], None]]:
        raise OSError("the uplink's socket is gone")

    dispatcher.batch_scope = broken
    dispatcher.on_idle.append(lambda: dispatcher.stop() if len(forwarded) >= 2 else None)
    for value in (1.0, 2.0):
        dispatcher.bus.post(dispatcher.events.reading("temp", value, "°C"))
    dispatcher.run(tick=0.01)
    assert [e.value for e in forwarded] == [1.0, 2.0]
    assert dispatcher.counters.errors == 1


def test_a_commands_settled_hook_hears_each_command_once_everything_it_caused_was_processed() -> None:
    dispatcher, forwarded = make()
    heard: list[tuple[str, int]] = []
    dispatcher.commands_settled.append(lambda event: heard.append((event.entity, len(forwarded))))
    dispatcher.bus.post(dispatcher.events.reading("temp", 21.5, "°C"))
    dispatcher.bus.post(dispatcher.events.make(Kind.COMMAND, "relay", True))
    dispatcher.drain()
    # only the command, after its STATE (the relay's) was forwarded: not the reading, not the STATE it caused
    assert heard == [("relay", 3)]


def test_a_failing_commands_settled_hook_is_counted_and_the_next_hook_still_runs() -> None:
    dispatcher, _ = make()
    heard: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    dispatcher.commands_settled.extend([broken, lambda event: heard.append(event.entity)])
    dispatcher.bus.post(dispatcher.events.make(Kind.COMMAND, "relay", True))
    dispatcher.drain()
    assert heard == ["relay"]
    assert dispatcher.counters.errors == 1
