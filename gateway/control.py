"""The status socket: how ``gateway status`` reads the running service.

The service listens on an ``AF_UNIX`` stream socket in its runtime directory
(``/run/gateway/control.sock`` under systemd; mode 0660, so only root and the
service's group can connect; the directory itself is 0750). Each connection
carries one JSON request line and gets one JSON reply line::

    {"cmd": "status"}   ->   {"ok": true, "status": {...}}

The server thread only moves bytes. Every request is answered on the
dispatcher thread (:meth:`ControlServer.serve_pending`, called from the
dispatcher's idle hook), because only that thread may read state and
counters. So a hung dispatcher shows up here too: the reply is "the dispatcher
did not answer", which is exactly what an installer needs to know.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.guard import guarded
from drivers.envelope import EnvelopeState

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 4096
"""Bytes: a request is one short JSON line; anything longer is refused."""

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(Exception):
    """``gateway status`` could not get an answer; the message tells a person what to do."""


class NotRunning(ControlError):
    """Nothing listens on the socket: the service is stopped (or never started)."""


@dataclass(slots=True)
class _Request:
    payload: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None


class ControlServer:
    """Accepts status requests on ``path``; answers them on the dispatcher thread."""

    def __init__(self, path: Path, wake: Callable[[], None], *, answer_timeout: float = 3.0) -> None:
        self.path = path
        self._wake = wake
        self._answer_timeout = answer_timeout
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        """Bind and listen; raises OSError (with a reason) when the socket cannot be made."""
        _claim(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o660)
            sock.listen(4)
        except OSError:
            sock.close()
            raise
        # accept() blocks with no timeout: an idle gateway must not wake every second for nothing, and
        # stop()'s shutdown() ends a blocked accept() at once on Linux.
        self._sock = sock
        self._thread = threading.Thread(target=guarded("status socket")(self._serve), name="control", daemon=True)
        self._thread.start()
        log.info("status socket at %s", self.path)

    def stop(self) -> None:
        """Close the socket; a request still waiting is told the gateway is stopping."""
        self._stopping.set()
        self.serve_pending(lambda payload: {"ok": False, "error": "the gateway is stopping"})
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes accept() at once on Linux
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sock = None
        self._thread = None

    def serve_pending(self, handle: Handler) -> None:
        """Answer every waiting request; call on the dispatcher thread only."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                request.reply = handle(request.payload)
            except Exception as exc:
                log.exception("status request %r failed", request.payload.get("cmd"))
                request.reply = {"ok": False, "error": f"the request failed inside the gateway: {exc}"}
            request.done.set()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            with conn:
                self._answer(conn)

    @guarded("status request")
    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(2.0)
        try:
            payload = json.loads(_read_line(conn))
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            _send(conn, {"ok": False, "error": f"bad request: {exc}"})
            return
        request = _Request(payload)
        self._requests.put(request)
        self._wake()
        if request.done.wait(self._answer_timeout) and request.reply is not None:
            _send(conn, request.reply)
        else:
            _send(conn, {
                "ok": False,
                "error": f"the service is running but its dispatcher did not answer within "
                         f"{self._answer_timeout:g} s: it may be hung (the systemd watchdog restarts it)",
            })


def _claim(path: Path) -> None:
    """Remove a stale socket left by a killed process; refuse if a live gateway answers on it."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        return
    except OSError:
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise OSError(f"another gateway is already running: its status socket {path} answers")


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(1024)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError(f"longer than {MAX_REQUEST} bytes")
    return data.split(b"\n", 1)[0]


def _send(conn: socket.socket, reply: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(reply, separators=(",", ":"), default=str).encode() + b"\n")


def request(path: Path, payload: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the service at ``path`` and return its reply; :class:`ControlError` if none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if data.endswith(b"\n"):
                break
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotRunning(
            f"the gateway is not running: nothing answers on {path} (see: systemctl status gateway)"
        ) from None
    except PermissionError:
        raise ControlError(
            f"permission denied on {path}: run as root, or join the service's group "
            "(sudo usermod -aG gateway $USER, then log in again)"
        ) from None
    except TimeoutError:
        raise ControlError(f"the gateway did not answer on {path} within {timeout:g} s") from None
    except OSError as exc:
        raise ControlError(f"cannot reach the gateway on {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"the gateway sent an unreadable reply on {path}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"the gateway sent an unreadable reply on {path}")
    return reply


def _engine_line(engine: dict[str, Any]) -> str:
    if not engine:
        return ""
    clock = "clock synchronised" if engine.get("clock_synchronised") else "CLOCK NOT SYNCHRONISED: schedules wait"
    cuts = {rule: f["chain_cuts"] for rule, f in (engine.get("per_rule") or {}).items() if f.get("chain_cuts")}
    loops = "; loops cut: " + ", ".join(f"{rule} x{n}" for rule, n in sorted(cuts.items())) if cuts else ""
    return f", {engine.get('timers', 0)} timers pending; {clock}{loops}"


def _identity_lines(mqtt: dict[str, Any]) -> list[str]:
    """What the duplicate-identity guards of both connections say (gateway/mqtt/identity.py)."""
    lines = []
    for key, which in (("identity", "client id"), ("inlet_identity", "inlet's client id (<client id>-in)")):
        if mqtt.get(key) == "duplicate":
            lines.append(f"broker: KEEPING OFF: another MQTT client keeps taking this gateway's {which} (two "
                         "gateways with one id?); retrying every 15 minutes. Give each its own gateway.id, "
                         "then restart")
        elif mqtt.get(key) == "contested":
            lines.append(f"broker: another MQTT client took the session of this gateway's {which} recently "
                         "(a duplicate id?)")
    return lines


def format_status(status: dict[str, Any], now: float | None = None) -> str:
    """The status as an installer reads it on site: one block per topic, newest facts first."""
    now = time.time() if now is None else now
    lines = [
        f"gateway {status.get('gateway')} (pid {status.get('pid')}), up {_duration(status.get('uptime', 0))}"
        + (", simulated hardware" if status.get("simulate") else ""),
        f"rules: {status.get('rules')} loaded"
        + (f" (version {status['rules_version']})" if status.get("rules_version", "local") != "local" else "")
        + _engine_line(status.get("engine") or {}),
        *_reload_lines(status.get("reload"), now),
    ]
    mqtt = status.get("mqtt") or {}
    if mqtt.get("enabled"):
        oldest = mqtt.get("outbox_oldest_age")
        lines.append(
            f"broker: {mqtt.get('connection')}; outbox: {mqtt.get('outbox_depth')} queued"
            + (f" (oldest {_duration(oldest)})" if oldest is not None else "")
            + f", {mqtt.get('outbox_dropped')} dropped; {mqtt.get('events_out')} events sent"
        )
        if mqtt.get("broker"):
            failovers = mqtt.get("failovers") or 0
            since = f" ({failovers} failovers since start)" if failovers else ""
            lines.append(f"broker in use: {mqtt['broker']}{since}")
        lines.append(f"inlet (the connection hub commands come in on): {mqtt.get('inlet', 'unknown')}")
        if purged := mqtt.get("inlet_backlog_purged"):
            lines.append(f"inlet backlog dropped {purged} time(s): a flood of hub messages arrived faster than "
                         "the gateway reads them")
        lines.extend(_identity_lines(mqtt))
        shed = mqtt.get("outbox_shed_by_kind") or {}
        if shed:
            lines.append("outbox shed (never sent): "
                         + ", ".join(f"{count} {kind}" for kind, count in sorted(shed.items(), key=lambda kv: -kv[1])))
        if mqtt.get("forwarding", "ok") != "ok":
            lines.append(f"forwarding: DEGRADED ({mqtt.get('forwarding_reason')}); "
                         "events are not kept through a restart: local control is not affected")
    else:
        lines.append("broker: MQTT disabled")
    bus = status.get("bus") or {}
    lines.append(
        f"bus: {bus.get('queued')} queued, {bus.get('coalesced')} coalesced, {bus.get('dropped')} dropped; "
        f"dispatcher: {bus.get('processed')} events, {bus.get('errors')} errors; "
        f"commands: {bus.get('commands', 0)} ({bus.get('deferred', 0)} deferred, {bus.get('refused', 0)} refused "
        f"by the envelope, {bus.get('apply_failures', 0)} failed in a driver)"
    )
    lines.append("devices:")
    for device in status.get("devices", []):
        lines.append(f"  {device['id']:<24} {device['driver']:<12} {device['health']}")
    outputs = status.get("outputs") or {}
    if outputs:
        lines.append("outputs (the claim in force first, then those waiting):")
        lines.extend(_output_line(entity, output) for entity, output in outputs.items())
    lines.append("entities (last value):")
    for entity in status.get("entities", []):
        value = entity["value"] if entity["available"] else "unavailable"
        unit = f" {entity['unit']}" if entity.get("unit") else ""
        age = "never" if entity.get("age") is None else _duration(entity["age"])
        lines.append(f"  {entity['id']:<24} {value}{unit}  ({age} ago)")
    firings = status.get("firings", [])
    lines.append("recent rule firings:" if firings else "recent rule firings: none")
    for firing in firings:
        lines.append(
            f"  {_duration(now - firing['ts'])} ago  {firing['rule']}: {firing['entity']} -> {firing['value']}"
        )
    failures = status.get("failures") or {}
    if failures:
        lines.append("callback failures: " + ", ".join(f"{k} x{v}" for k, v in sorted(failures.items())))
    return "\n".join(lines)


def _reload_lines(reload: dict[str, Any] | None, now: float) -> list[str]:
    """``last reload: REFUSED at 14:02:11 (3m ago): 2 problems; the rules in force stay`` and the problems;
    nothing before the first reload."""
    if not reload:
        return []
    at = reload.get("at") or now
    when = f"at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))} ({_duration(now - at)} ago)"
    if reload.get("result") == "ok":
        return [f"last reload: ok {when}" + (f": {reload['summary']}" if reload.get("summary") else "")]
    count = int(reload.get("count") or 0)
    problems = list(reload.get("problems") or [])
    lines = [f"last reload: REFUSED {when}: {count} problem{'' if count == 1 else 's'}; the rules in force stay"]
    lines += [f"  {problem}" for problem in problems]
    if count > len(problems):
        lines.append(f"  ... and {count - len(problems)} more (see the gateway's log)")
    return lines


def _output_line(entity: str, output: dict[str, Any]) -> str:
    claims = output.get("claims") or []
    held = "; ".join(f"{c['holder']} ({c['level']}) {c['value']!r}" for c in claims)
    held = held or f"no claim: default {output.get('default')!r}"
    owner = f" [owned by {output['owner']}]" if output.get("owner") else ""
    line = f"  {entity:<24} {output.get('value')!r:<6} {held}{owner}"
    limits = envelope_words(output.get("envelope"))
    return f"{line}\n  {'':<24} envelope: {limits}" if limits else line


def envelope_words(fields: dict[str, Any] | None) -> str:
    """The envelope's state of one output (the ``envelope`` of a status output), in words; ``""`` if none."""
    if not fields:
        return ""
    try:
        return EnvelopeState(**fields).describe()
    except TypeError:  # a status from a gateway of another version
        return ""


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172_800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"
