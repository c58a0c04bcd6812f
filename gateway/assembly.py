"""The house assembled: what every way of running it shares (dispatcher, arbiter, envelope, rules, controllers).

``gateway run`` (:mod:`gateway.app`) and ``gateway simulate`` and the tests'
houses (:mod:`gateway.simulate`) build it here and nowhere else, so a dry run
arbitrates, defers and refuses exactly as the live gateway does; only the
actuators differ (real drivers, or echoes that confirm what they are told).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.events import Event, EventFactory
from drivers.base import Actuator
from drivers.envelope import Envelope
from gateway.bus import Bus
from gateway.config import Config
from gateway.dispatcher import Dispatcher
from gateway.rulesets import load_ruleset
from rules.engine import RuleEngine, Runtime


def assemble(
    events: EventFactory,
    bus: Bus,
    actuators: Mapping[str, Actuator],
    *,
    envelope: Envelope,
    forward: Callable[[Event], None],
    make_engine: Callable[[Dispatcher], RuleEngine],
) -> tuple[Dispatcher, RuleEngine]:
    """The dispatcher (with the outputs' :class:`~gateway.authority.Authority` and ``envelope``) and the
    rules engine reacting on it. ``actuators`` maps each output entity to the actuator that drives it."""
    dispatcher = Dispatcher(bus, events, actuators=actuators, forward=forward, envelope=envelope)
    engine = make_engine(dispatcher)
    dispatcher.reactor = engine
    return dispatcher, engine


def build_engine(config: Config, runtime: Runtime, **options: Any) -> RuleEngine:
    """The engine for ``config``: its rules, time zone and state directory (raises RulesError); it watches the
    rule files when ``rules.watch`` is set."""
    options.setdefault("timezone", config.gateway.timezone)
    options.setdefault("state_dir", config.gateway.state_dir)
    options.setdefault("unsynced_clock", config.rules.unsynced_clock)
    options.setdefault("trace_size", config.rules.trace_size)
    engine = RuleEngine(load_ruleset(config), runtime, **options)
    if config.rules.watch:
        engine.watch(config.rules.dir, lambda: load_ruleset(config))
    return engine
