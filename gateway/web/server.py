"""The local web page: live states, who holds each output, 24 h plots, traces, rule checks (docs/web.md).

Standard library only (``http.server``, ``ssl``, ``hmac``, ``secrets``): on a Pi, fewer dependencies.
One thread per connection (``ThreadingHTTPServer``); none of them touches the house's state. What the
page shows comes from :class:`Sources`: the status is the same snapshot ``gateway status`` prints,
answered on the dispatcher thread; live changes come from :class:`LiveFeed`, a tap the dispatcher
feeds without ever blocking; plots and history come from the history file (:mod:`gateway.history`).

Security: every page, the live stream included, needs the password (HTTP Basic, or the login form;
compared in constant time) and then a session cookie (``HttpOnly``, ``SameSite=Strict``); every POST
carries the session's CSRF token; five wrong passwords a minute close the door for a minute; pages
never show a secret or a file path; the server binds to loopback unless ``[web] listen`` says otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import os
import queue
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from core.events import Event, Kind
from core.guard import guarded
from gateway.web import pages
from gateway.web.commands import Outcome

log = logging.getLogger(__name__)

SESSION_COOKIE = "gw_session"
SESSION_S = 12 * 3600.0
LOCKOUT_FAILURES = 5
"""Wrong passwords within :data:`LOCKOUT_S` before every login is refused for :data:`LOCKOUT_S`."""
LOCKOUT_S = 60.0
KEEPALIVE_S = 15.0
"""A comment on the live stream this often, so a phone notices a dead link and reconnects."""
CLIENT_QUEUE = 256
MAX_BODY = 4096


class LiveFeed:
    """Fans processed events out to the live streams; :meth:`publish` is a gateway tap (dispatcher thread).

    With no client it returns at once; a client that cannot keep up loses events (counted), never
    the dispatcher's time."""

    def __init__(self) -> None:
        self._clients: list[queue.Queue[Event | None]] = []
        self._lock = threading.Lock()
        self.dropped = 0

    def publish(self, event: Event) -> None:
        if not self._clients or event.kind not in (Kind.READING, Kind.STATE, Kind.AVAILABILITY, Kind.ALARM):
            return
        for client in self._clients:
            try:
                client.put_nowait(event)
            except queue.Full:
                self.dropped += 1

    def subscribe(self) -> queue.Queue[Event | None]:
        """A client's queue of events; ``None`` in it means the server is stopping."""
        client: queue.Queue[Event | None] = queue.Queue(maxsize=CLIENT_QUEUE)
        with self._lock:
            self._clients = [*self._clients, client]  # copy on write: publish iterates without the lock
        return client

    def unsubscribe(self, client: queue.Queue[Event | None]) -> None:
        with self._lock:
            self._clients = [c for c in self._clients if c is not client]

    def close(self) -> None:
        """End every live stream now (the server stops)."""
        for client in self._clients:
            with contextlib.suppress(queue.Full):
                client.put_nowait(None)

    @property
    def clients(self) -> int:
        return len(self._clients)


class OnDispatcher:
    """Runs a function on the dispatcher thread for a web thread, and waits for its answer.

    :meth:`serve` is a dispatcher idle hook; ``wake`` makes the dispatcher run its hooks now."""

    def __init__(self, wake: Callable[[], None], timeout: float = 3.0) -> None:
        self._wake = wake
        self._timeout = timeout
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] = queue.SimpleQueue()

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()``'s result; TimeoutError if the dispatcher does not answer in time (it may be hung)."""
        box: list[Any] = []
        done = threading.Event()
        self._calls.put((fn, box, done))
        self._wake()
        if not done.wait(self._timeout):
            raise TimeoutError("the dispatcher did not answer")
        return box[0]

    def serve(self) -> None:
        while True:
            try:
                fn, box, done = self._calls.get_nowait()
            except queue.Empty:
                return
            try:
                box.append(fn())
            except Exception as exc:
                log.exception("web page request failed on the dispatcher")
                box.append({"error": str(exc)})
            done.set()


@dataclass(slots=True)
class Sources:
    """Where the page gets what it shows. Every callable must be safe to call from a web thread."""

    gateway_id: str
    status: Callable[[], Mapping[str, Any]]
    """The ``gateway status`` snapshot (:meth:`gateway.service.Service.snapshot`)."""
    live: LiveFeed = field(default_factory=LiveFeed)
    history: Path | None = None
    thermostats: Callable[[], Sequence[Any]] = lambda: ()
    """The rule set's thermostats (``rules.model.Thermostat``)."""
    check: Callable[[], tuple[bool, list[str]]] = lambda: (True, [])
    """``gateway check`` of the rule files on disk: (valid, lines)."""
    traces: Callable[[str | None], str] = lambda rule: ""
    command: Callable[[str, str], Outcome] | None = None
    """Send a command as the hub does (rate limit, validation, authority) and wait for its outcome
    (:meth:`gateway.web.commands.PageCommands.send`). None: read-only."""
    outcomes: Callable[[], Mapping[str, Outcome]] = dict
    """Per output, the latest outcome of a command from the page (shown next to it)."""
    timezone: Any = None
    wall: Callable[[], float] = time.time
    """The wall clock a plot's window ends at (its "now"): a test pins it to the end of a simulated day, so the
    page draws the same window whatever the time of day the test runs at."""


class WebServer:
    """The page's HTTP(S) server; :meth:`start` and :meth:`stop` from the main thread."""

    def __init__(self, sources: Sources, password: str, *, host: str = "127.0.0.1", port: int = 8080,
                 tls: ssl.SSLContext | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if not password:
            raise ValueError("the web page needs a password")
        self.sources = sources
        self._password = password.encode()
        self._secret = secrets.token_bytes(32)
        self._sessions: dict[str, float] = {}
        self._failures: list[float] = []
        self._lock = threading.Lock()
        self._clock = clock
        self._stopping = threading.Event()
        handler = type("Handler", (_Handler,), {"web": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=guarded("web server")(self._serve), name="web", daemon=True)
        self._thread.start()
        log.info("web page on %s:%d", *self.httpd.server_address[:2])

    def _serve(self) -> None:
        """Accept connections until :meth:`stop`. Not ``serve_forever``: it polls twice a second, and an
        idle page must cost no wake-up; here the thread sleeps in ``accept`` until a client comes."""
        self.httpd.timeout = None
        while not self._stopping.is_set():
            self.httpd.handle_request()

    def stop(self) -> None:
        self._stopping.set()
        self.sources.live.close()
        with contextlib.suppress(OSError):
            self.httpd.socket.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread at once on Linux
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self.httpd.server_close()

    # -- authentication ----------------------------------------------------------------------

    def password_ok(self, given: str) -> bool:
        """Constant-time compare; refuses everything while locked out after repeated failures."""
        now = self._clock()
        with self._lock:
            self._failures = [t for t in self._failures if now - t < LOCKOUT_S]
            if len(self._failures) >= LOCKOUT_FAILURES:
                return False
            ok = hmac.compare_digest(given.encode(), self._password)
            if not ok:
                self._failures.append(now)
                if len(self._failures) == LOCKOUT_FAILURES:
                    log.warning("web page: %d wrong passwords within %.0f s: logins refused for %.0f s",
                                LOCKOUT_FAILURES, LOCKOUT_S, LOCKOUT_S)
            return ok

    def new_session(self) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            now = self._clock()
            self._sessions = {k: v for k, v in self._sessions.items() if v > now}
            self._sessions[token] = now + SESSION_S
        return token

    def session_ok(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expiry = self._sessions.get(token)
        return expiry is not None and expiry > self._clock()

    def end_session(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def csrf(self, session: str) -> str:
        return hmac.new(self._secret, session.encode(), "sha256").hexdigest()[:32]


class _Handler(BaseHTTPRequestHandler):
    web: WebServer
    _new_cookie: str | None = None
    """A session opened by this request, sent back as the cookie."""
    timeout = 30.0
    """Seconds a connection may stall reading or writing (a slow or vanished client)."""
    server_version = "gateway"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web: %s", format % args)

    # -- routing -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            if url.path == "/login" and method == "POST":
                self._login()
            elif (session := self._session()) is None:
                self._unauthorised()
            elif method == "POST":
                self._post(url.path, session)
            elif url.path == "/live":
                self._live()
            elif (page := self._get(url.path, query, session)) is not None:
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode())
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except ValueError:
            self._send(HTTPStatus.BAD_REQUEST, "text/plain", b"bad request")

    def _get(self, path: str, query: Mapping[str, str], session: str) -> str | None:
        sources = self.web.sources
        if path == "/":
            return pages.dashboard(sources, self.web.csrf(session))
        if path == "/plot":
            return pages.plot_page(sources, query.get("entity", ""), float(query.get("hours", "24")))
        if path == "/traces":
            return pages.traces_page(sources, query.get("rule"))
        return None

    def _post(self, path: str, session: str) -> None:
        form = self._form()
        if not hmac.compare_digest(form.get("csrf", ""), self.web.csrf(session)):
            self._send(HTTPStatus.FORBIDDEN, "text/plain", b"missing or wrong CSRF token")
        elif path == "/command":
            self._command(form)
        elif path == "/logout":
            self.web.end_session(session)
            self._redirect("/login", clear=True)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found")

    # -- authentication ----------------------------------------------------------------------

    def _session(self) -> str | None:
        """The request's session: its cookie, or a right Basic password (which opens a new one)."""
        cookies = dict(part.strip().split("=", 1) for part in self.headers.get("Cookie", "").split(";")
                       if "=" in part)
        token = cookies.get(SESSION_COOKIE)
        if self.web.session_ok(token):
            return token
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            with contextlib.suppress(ValueError):
                _, _, password = base64.b64decode(auth[6:], validate=True).decode().partition(":")
                if self.web.password_ok(password):
                    self._new_cookie = self.web.new_session()
                    return self._new_cookie
        return None

    def _unauthorised(self) -> None:
        self._send(HTTPStatus.UNAUTHORIZED, "text/html; charset=utf-8", pages.login_page().encode(),
                   extra={"WWW-Authenticate": 'Basic realm="gateway", charset="UTF-8"'})

    def _login(self) -> None:
        form = self._form()
        if self.web.password_ok(form.get("password", "")):
            self._new_cookie = self.web.new_session()
            self._redirect("/")
        else:
            self._unauthorised()

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length", "0"))
        if length > MAX_BODY:
            raise ValueError("body too long")
        body = self.rfile.read(length).decode("utf-8", "replace")
        return {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}

    # -- answers -----------------------------------------------------------------------------

    def _command(self, form: Mapping[str, str]) -> None:
        send = self.web.sources.command
        if send is None:
            self._send(HTTPStatus.FORBIDDEN, "text/plain", b"commands from the page are off ([web] commands)")
            return
        outcome = send(form.get("entity", ""), form.get("value", ""))
        if "application/json" in self.headers.get("Accept", ""):  # the page's script: no reload
            body = json.dumps({"entity": outcome.entity, "status": outcome.status, "reason": outcome.reason,
                               "value": outcome.value, "words": outcome.words()})
            self._send(HTTPStatus.OK, "application/json", body.encode())
        else:  # a plain form (no script): back to the dashboard, which shows the outcome next to the output
            self._redirect(f"/#o-{urllib.parse.quote(outcome.entity)}")

    def _live(self) -> None:
        """Server-sent events: one ``data:`` line of JSON per change, until the client goes."""
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self._cookie_header()
        self.end_headers()
        feed = self.web.sources.live
        client = feed.subscribe()
        try:
            self.wfile.write(b"retry: 3000\n\n")
            self.wfile.flush()
            while not self.web._stopping.is_set():
                try:
                    event = client.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
                    continue
                if event is None:
                    return
                data = json.dumps({"entity": event.entity, "kind": str(event.kind), "value": event.value,
                                   "unit": event.unit, "ts": event.ts})
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()
        finally:
            feed.unsubscribe(client)
            self.close_connection = True

    def _page(self, body: str) -> None:
        self._send(HTTPStatus.OK, "text/html; charset=utf-8", body.encode())

    def _redirect(self, to: str, clear: bool = False) -> None:
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", to)
        self.send_header("Content-Length", "0")
        if clear:
            self._new_cookie = None
            self.send_header("Set-Cookie", f"{SESSION_COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict")
        self._cookie_header()
        self.end_headers()

    def _cookie_header(self) -> None:
        token = self._new_cookie
        if token:
            secure = "; Secure" if isinstance(self.connection, ssl.SSLSocket) else ""
            self.send_header("Set-Cookie", f"{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")

    def _send(self, status: HTTPStatus, kind: str, body: bytes, extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy",
                         "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
                         "img-src 'self' data:")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self._cookie_header()
        self.end_headers()
        self.wfile.write(body)


def read_password(password_file: Path | None, env: Mapping[str, str] | None = None) -> str | None:
    """The page's password: the first line of ``password_file``, else ``$GATEWAY_WEB_PASSWORD``."""
    if password_file is not None:
        try:
            return password_file.read_text().splitlines()[0].strip() or None
        except (OSError, IndexError):
            return None
    return (env if env is not None else os.environ).get("GATEWAY_WEB_PASSWORD") or None
