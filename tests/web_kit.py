"""A running gateway with its web page on loopback (mock pins, no broker), and the shipped house's day in
virtual time for the plots: shared by tests/test_web*.py and bench/web.py."""

from __future__ import annotations

import base64
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from core.events import Event, Kind
from gateway.app import Gateway
from gateway.config import load_config
from gateway.history import HISTORY_FILE, History
from gateway.service import Service
from gateway.simulate import World
from gateway.web import LiveFeed, Sources, WebServer, start_web
from tests.conftest import free_port
from tests.helpers import RecordingForwarder
from tests.houses import GPIO_RULES, house_config

PASSWORD = "correct horse battery"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Site:
    gateway: Gateway
    web: WebServer
    pins: MockFactory
    url: str


@contextmanager
def running_site(tmp_path: Path, *, commands: bool = False, rules: str = GPIO_RULES,
                 mqtt: bool = False, light_envelope: str = "") -> Iterator[Site]:
    """The test house (motion on GPIO17, light relay on GPIO22) running, its page on a free loopback port;
    with ``mqtt`` the real MQTT bridge (to a port where no broker listens: commands are checked at its edge all
    the same), else a recording stand-in."""
    (tmp_path / "web-password").write_text(PASSWORD + "\n")
    port = free_port()
    extra = (f'[web]\nenabled = true\nlisten = "127.0.0.1:{port}"\npassword_file = "web-password"\n'
             f"commands = {'true' if commands else 'false'}\n[history]\nflush_s = 0.2\n")
    config = load_config(house_config(tmp_path, extra=extra, rules=rules, light_envelope=light_envelope))
    pins = MockFactory()
    gateway = Gateway(config, pin_factory=pins, forwarder=None if mqtt else RecordingForwarder())
    service = Service(gateway)
    web = start_web(config, gateway, service.snapshot)
    assert web is not None
    gateway.start()
    loop = threading.Thread(target=gateway.run, args=(0.2,), daemon=True)
    loop.start()
    try:
        yield Site(gateway, web, pins, f"http://127.0.0.1:{port}")
    finally:
        web.stop()
        gateway.request_stop()
        loop.join(5)
        gateway.shutdown()


def fetch(url: str, *, password: str | None = None, data: bytes | None = None,
          cookie: str | None = None) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of one request; a 4xx is an answer, not an exception."""
    request = urllib.request.Request(url, data=data)
    if password is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"installer:{password}".encode()).decode())
    if cookie is not None:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        with exc:  # it holds the connection
            return exc.code, exc.read().decode(), dict(exc.headers)


# Ends of the shipped house's simulated day (UTC; the house is in Europe/London, GMT in December). At 22:58 the
# schedule's 17 °C is in force and the room is at 18 °C: the heater is off at the window's left edge and first
# switches on 50 minutes in, at the run's fraction of a second (the browser test failed at 22:58 when that
# fraction was under half a second). At noon it is heating at the left edge.
OFF_AT_THE_EDGE_EARLY_IN_A_SECOND = 1_796_165_888.3  # 2026-12-01 22:58:08.3
OFF_AT_THE_EDGE_LATE_IN_A_SECOND = 1_796_165_888.7
ON_AT_THE_EDGE = 1_796_126_400.3  # 2026-12-01 12:00:00.3


def shipped_house_day(state_dir: Path, end: float | None = None) -> tuple[Path, list[Event]]:
    """The shipped house (config.toml, rules.d) for 24 h in virtual time, ending at ``end`` (now): the
    living room cools 0.03 °C a minute and warms 0.06 °C a minute while the heater is on; one reading a
    minute. Every event goes into a history file; returns it and the heater's confirmed states."""
    from gateway.rulesets import load_ruleset

    config = load_config(ROOT / "config.toml")
    end = time.time() if end is None else end
    history = History(state_dir / HISTORY_FILE)
    history.open()
    world = World(config.entities(), load_ruleset(config), timezone=config.gateway.timezone, start=end - 86_400,
                  on_event=history.record)
    world.start()
    temperature = 18.0
    for _ in range(24 * 60):
        world.post("living_temperature", round(temperature, 2), unit="°C")
        world.advance(60)
        heater = world.dispatcher.actuators["heater"]
        temperature += 0.06 if getattr(heater, "value", False) else -0.03
        history.flush()
    history.stop()
    heater_states = [e for e in world.seen if e.entity == "heater" and e.kind is Kind.STATE]
    return history.path, heater_states


def plot_sources(history: Path, now: float | None = None) -> Sources:
    """What the page reads for the plot of ``history`` alone (the shipped house's thermostat); with ``now``, its
    plots end there rather than at the wall clock's time (give it the ``end`` of :func:`shipped_house_day`)."""
    from gateway.rulesets import load_ruleset

    config = load_config(ROOT / "config.toml")
    ruleset = load_ruleset(config)
    return Sources(gateway_id="house-01", status=lambda: {"gateway": "house-01", "entities": []}, live=LiveFeed(),
                   history=history, thermostats=lambda: [d.item for d in ruleset.thermostats],
                   wall=time.time if now is None else lambda: now)


def plot_site(history: Path, now: float | None = None) -> tuple[WebServer, str]:
    """A page over ``history`` alone (see :func:`plot_sources`), for the plot's tests."""
    web = WebServer(plot_sources(history, now), PASSWORD, port=free_port())
    web.start()
    return web, f"http://127.0.0.1:{web.port}"


BAND = re.compile(r'<rect class="band" data-output="heater" data-start="(\d+)" data-end="(\d+)"')


@dataclass
class HeaterBands:
    """The heater's bands as the page drew them, next to where the simulation switched it, in the page's
    resolution (whole seconds, rounded as the page's ``data-start``/``data-end`` are)."""

    spans: list[tuple[int, int]]
    starts: list[int]
    """The page's band starts after the plot's left edge (a band cut by the edge starts at it)."""
    switched_on: list[int]
    ends: list[int]
    """The page's band ends, as many as the simulation's switch-offs inside the window."""
    switched_off: list[int]


def heater_bands(dom: str, heater: list[Event]) -> HeaterBands:
    """Read the heater's bands from a plot page (``dom``) and the simulation's heater states (``heater``).

    The window's left edge is taken as the first band's start: the plot's edge if the heater was on then, else
    its first switch-on, which both lists then leave out. The event times are compared after rounding, as the
    page writes them: an event at 23:43:08.3 is drawn from ``data-start`` 23:43:08, and comparing the event's
    unrounded time with that rounded edge counted it as a switch-on the page had not drawn (the test failed
    whenever the heater was off at the window's start and the run's wall clock was in the first half of a
    second)."""
    spans = [(int(start), int(end)) for start, end in BAND.findall(dom)]
    window_start = spans[0][0] if spans else 0
    switched_on = [round(e.ts) for e in heater if e.value is True and round(e.ts) > window_start]
    switched_off = [round(e.ts) for e in heater if e.value is False and round(e.ts) > window_start]
    return HeaterBands(spans=spans, starts=[start for start, _ in spans if start > window_start],
                       switched_on=switched_on, ends=[end for _, end in spans][: len(switched_off)],
                       switched_off=switched_off)
