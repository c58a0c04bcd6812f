"""The core every way of running the house shares: dispatcher, arbiter, envelope, rules, controllers.

``gateway run`` (:mod:`gateway.app`) and ``gateway simulate`` and the tests'
houses (:mod:`gateway.simulate`) build it here and nowhere else, so a dry run
arbitrates, defers and refuses exactly as the live gateway does; only the
actuators differ (real drivers, or echoes that confirm what they are told).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from drivers.base import Actuator
from drivers.envelope import Envelope
from gateway.bus import Bus
from gateway.dispatcher import Dispatcher
from gateway.events import Event, EventFactory
from rules.engine import RuleEngine


def build_core(
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
