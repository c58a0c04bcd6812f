"""The local web page (docs/web.md): :func:`start_web` wires it into a running gateway."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from gateway.web.commands import Outcome, PageCommands
from gateway.web.server import LiveFeed, OnDispatcher, Sources, WebServer, read_password

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.config import Config

__all__ = ["LiveFeed", "OnDispatcher", "Outcome", "PageCommands", "Sources", "WebServer", "read_password", "start_web"]

log = logging.getLogger(__name__)

CHECK_EVERY = 30.0
"""Seconds a ``gateway check`` of the rule files on disk is reused by the page."""


def start_web(config: Config, gateway: Gateway, snapshot: Any) -> WebServer | None:
    """Serve the page for ``gateway``; ``snapshot`` is the ``gateway status`` snapshot (called on the
    dispatcher thread). None, with the reason logged, when it cannot start: the house runs on without it."""
    password = read_password(config.web.password_file)
    if password is None:
        log.error("web page not started: no password (set [web] password_file, or GATEWAY_WEB_PASSWORD)")
        return None
    calls = OnDispatcher(gateway.bus.wake)
    gateway.dispatcher.on_idle.append(calls.serve)
    live = LiveFeed()
    gateway.taps.append(live.publish)
    commands = _commands(gateway) if config.web.commands else None
    sources = Sources(
        gateway_id=config.gateway.id,
        status=lambda: calls.call(snapshot),
        live=live,
        history=gateway.history.path if gateway.history is not None else None,
        thermostats=lambda: [declared.item for declared in gateway.engine.ruleset.thermostats],
        check=_cached_check(config),
        traces=lambda rule: _traces(config, rule),
        command=commands.send if commands is not None else None,
        outcomes=commands.latest if commands is not None else dict,
        timezone=ZoneInfo(config.gateway.timezone),
    )
    tls = None
    if config.web.https and config.mqtt.tls is not None and config.mqtt.tls.cert_file and config.mqtt.tls.key_file:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(config.mqtt.tls.cert_file, config.mqtt.tls.key_file)
    try:
        server = WebServer(sources, password, host=config.web.host, port=config.web.port, tls=tls)
    except OSError as exc:
        log.error("web page not started: cannot listen on %s: %s", config.web.listen, exc.strerror or exc)
        return None
    server.start()
    return server


def _cached_check(config: Config) -> Any:
    from gateway.rulesets import check_ruleset

    lock = threading.Lock()
    cache: list[Any] = [0.0, (True, [])]

    def check() -> tuple[bool, list[str]]:
        with lock:
            if time.monotonic() - cache[0] > CHECK_EVERY or cache[0] == 0.0:
                ruleset, lines = check_ruleset(config)
                cache[:] = [time.monotonic(), (ruleset is not None, [_no_paths(config, line) for line in lines])]
            result: tuple[bool, list[str]] = cache[1]
            return result

    return check


def _no_paths(config: Config, line: str) -> str:
    """A check line without the rule directory's path (pages show no file paths): ``house.toml: ...``."""
    return line.replace(f"{config.rules.dir}/", "")


def _traces(config: Config, rule: str | None) -> str:
    from rules.traces import format_traces, read_traces

    return format_traces(read_traces(config.gateway.state_dir), rule, 20)


def _commands(gateway: Gateway) -> PageCommands | None:
    """Commands from the page take the hub's path (:mod:`gateway.web.commands`): they need the MQTT bridge."""
    from gateway.mqtt.bridge import MqttBridge

    bridge = gateway.forwarder
    if not isinstance(bridge, MqttBridge):
        log.warning("[web] commands needs the MQTT bridge (its validation and rate limits): the page is read-only")
        return None
    return PageCommands(bridge.inlet)
