"""Remote rules: a rule bundle published to ``<base>/rules/set`` replaces the rule files in force.

Off by default (``[mqtt] remote_rules = false``): the rule files in ``rules.dir`` are then the only
source of truth and nothing here runs. On, a fleet manager publishes (QoS 1, **not** retained)::

    {"version": "2026-12-01.3", "files": {"house.toml": "version = 1\\n[[rule]]\\n...", "heating.toml": "..."}}

and the gateway answers on ``<base>/rules/result`` (QoS 1, not retained)::

    {"status": "applied", "version": "2026-12-01.3", "in_force": "2026-12-01.3", "summary": "..."}
    {"status": "rejected", "version": "2026-12-01.4", "in_force": "2026-12-01.3", "problems": ["house.toml: ..."]}
    {"status": "failed", "version": "...", "in_force": "2026-12-01.3", "problems": ["did not start: ..."]}

A bundle is checked exactly as ``gateway check`` checks a rules directory (:func:`rules.loader.load_rules`
against the configured devices), then applied with the same semantics as a local reload (all or
nothing; the timers of unchanged rules kept): the engine's ``replace`` and the hub's registrations,
through the application's ``swap``. If the new set fails to start, the previous one is put back and
the answer is ``failed``.

On disk, under ``<state_dir>/remote-rules/``: ``staging/`` (the bundle being checked), ``active/`` (the
bundle in force, with its ``VERSION``) and ``previous/``. The swap is two renames; a crash between
them leaves ``previous/`` and no ``active/``, which start-up takes as the bundle in force. At start,
with remote rules on and an ``active/`` bundle present, it is the rules directory (the local files
are the seed until the first bundle arrives); the rule-file watcher is off (the set changes only
through ``rules/set``, or SIGHUP, which reloads the bundle in force). Turning ``remote_rules`` off
goes back to the local files at the next start.

Threads: the message arrives on paho's network thread and is only queued; :meth:`RemoteRules.on_idle`
(a dispatcher idle hook) checks, applies and answers, on the dispatcher thread like any reload.

Who may publish a bundle is the broker's ACL: only the fleet manager's account may write
``gateway/+/rules/set`` (docs/fleet.md). Signed bundles (Ed25519) are future work.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config import Config
from rules.loader import RulesError, RuleSet, load_rules

log = logging.getLogger(__name__)

LOCAL = "local"
"""The version reported while the local rule files are in force."""
MAX_BUNDLE_BYTES = 512 * 1024
"""A bundle larger than this is refused unread."""
PENDING = 4
"""Bundles waiting for the dispatcher; older ones beyond this are dropped (the newest wins anyway)."""
VERSION_FILE = "VERSION"

FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\.toml$")]


class Bundle(BaseModel):
    # defer_build: built at the first bundle received, not at every start of every gateway
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    version: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$")
    files: dict[FileName, str] = Field(min_length=1, max_length=64)


def remote_dir(config: Config) -> Path:
    return config.gateway.state_dir / "remote-rules"


def effective_config(config: Config) -> Config:
    """``config`` as it runs: with remote rules on, the bundle in force (if any) is the rules directory
    and the rule-file watcher is off. Unchanged with remote rules off."""
    if not config.mqtt.remote_rules:
        return config
    base = remote_dir(config)
    if not (base / "active").is_dir() and (base / "previous").is_dir():  # a crash between the two renames
        try:
            (base / "previous").rename(base / "active")
        except OSError as exc:
            log.error("remote rules: cannot restore %s: %s", base / "previous", exc)
    active = base / "active"
    update: dict[str, Any] = {"watch": False}
    if active.is_dir():
        update["dir"] = active
    return config.model_copy(update={"rules": config.rules.model_copy(update=update)})


def version_in_force(config: Config) -> str:
    """The bundle version of ``config``'s rules directory, or ``local``."""
    try:
        return (config.rules.dir / VERSION_FILE).read_text(encoding="utf-8").strip() or LOCAL
    except OSError:
        return LOCAL


class RemoteRules:
    """Receives bundles (paho thread), checks and applies them (dispatcher thread), answers."""

    def __init__(
        self, config: Config, *, current: Callable[[], RuleSet], swap: Callable[[RuleSet], None],
        answer: Callable[[bytes], None],
    ) -> None:
        self._config = config
        self._base = remote_dir(config)
        self._current = current
        self._swap = swap
        self._answer = answer
        self._pending: deque[bytes] = deque(maxlen=PENDING)
        self._lock = threading.Lock()
        self.version = version_in_force(config)
        self.counts = {"applied": 0, "rejected": 0, "failed": 0}

    @property
    def rules_dir(self) -> Path:
        return self._base / "active"

    def health(self) -> dict[str, object]:
        return {"version": self.version, **self.counts}

    def on_message(self, client: object, userdata: object, message: Any) -> None:
        """paho's thread: queue the bundle for the dispatcher; a retained one is refused (it would be
        re-applied on every connection)."""
        if message.retain:
            self._answer(_result("rejected", None, self.version,
                                 ["a rules bundle must not be retained: publish it with retain off"]))
            return
        with self._lock:
            self._pending.append(bytes(message.payload))

    def on_idle(self) -> None:
        """Dispatcher thread: handle what arrived."""
        while True:
            with self._lock:
                if not self._pending:
                    return
                payload = self._pending.popleft()
            self._answer(self.handle(payload))

    def handle(self, payload: bytes) -> bytes:
        """Check and apply one bundle (dispatcher thread); the answer's payload."""
        try:
            bundle = self._parse(payload)
            if bundle.version == self.version:  # QoS 1 may deliver it twice
                return _result("applied", bundle.version, self.version, summary="already in force")
            return self._apply(bundle, self._check(bundle))
        except _Answer as answer:
            return answer.payload

    def _parse(self, payload: bytes) -> Bundle:
        if len(payload) > MAX_BUNDLE_BYTES:
            raise self._refuse(None, [f"bundle of {len(payload)} bytes: the limit is {MAX_BUNDLE_BYTES}"])
        try:
            return Bundle.model_validate_json(payload)
        except ValidationError as exc:
            raise self._refuse(None, [f"{'.'.join(str(p) for p in e['loc']) or 'bundle'}: {e['msg']}"
                                      for e in exc.errors()]) from None

    def _check(self, bundle: Bundle) -> Path:
        """The bundle written to ``staging/`` and checked as ``gateway check`` checks a rules directory."""
        staging = self._base / "staging"
        try:
            self._write(staging, bundle)
            load_rules(staging, self._config.entities())
        except RulesError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise self._refuse(bundle.version, [p.replace(f"{staging}{os.sep}", "") for p in exc.problems]) from None
        except OSError as exc:
            raise self._fail(bundle.version, [f"cannot store the bundle in {self._base}: {exc}"]) from None
        return staging

    def _apply(self, bundle: Bundle, staging: Path) -> bytes:
        previous = self._current()
        try:
            self._promote(staging)
            ruleset = load_rules(self.rules_dir, self._config.entities())
        except (OSError, RulesError) as exc:
            self._demote()
            raise self._fail(bundle.version, [f"cannot put the bundle in force: {exc}"]) from None
        try:
            self._swap(ruleset)
        except Exception as exc:  # the new set did not start: the old one goes back
            log.exception("remote rules %s did not start: the previous rules are put back", bundle.version)
            self._demote()
            self._swap(previous)
            raise self._fail(bundle.version, [f"did not start: {type(exc).__name__}: {exc}"]) from None
        self.version = bundle.version
        self.counts["applied"] += 1
        log.info("remote rules %s in force: %s", bundle.version, ruleset.summary())
        return _result("applied", bundle.version, self.version, summary=ruleset.summary())

    def _write(self, staging: Path, bundle: Bundle) -> None:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name, text in bundle.files.items():
            (staging / name).write_text(text, encoding="utf-8")
        (staging / VERSION_FILE).write_text(bundle.version + "\n", encoding="utf-8")

    def _promote(self, staging: Path) -> None:
        """``active`` becomes ``previous``, ``staging`` becomes ``active`` (two renames, same file system)."""
        previous, active = self._base / "previous", self.rules_dir
        shutil.rmtree(previous, ignore_errors=True)
        if active.exists():
            active.rename(previous)
        staging.rename(active)

    def _demote(self) -> None:
        """Undo :meth:`_promote`: the bundle that failed is kept as ``failed`` for a post-mortem."""
        failed, previous, active = self._base / "failed", self._base / "previous", self.rules_dir
        try:
            shutil.rmtree(failed, ignore_errors=True)
            if active.exists():
                active.rename(failed)
            if previous.exists():
                previous.rename(active)
        except OSError as exc:
            log.error("remote rules: cannot restore the previous bundle on disk: %s", exc)

    def _refuse(self, version: str | None, problems: list[str]) -> _Answer:
        self.counts["rejected"] += 1
        log.error("remote rules %s refused: %s", version or "(unreadable)", "; ".join(problems[:5]))
        return _Answer(_result("rejected", version, self.version, problems))

    def _fail(self, version: str, problems: list[str]) -> _Answer:
        self.counts["failed"] += 1
        log.error("remote rules %s failed: %s", version, "; ".join(problems[:5]))
        return _Answer(_result("failed", version, self.version, problems))


class _Answer(Exception):
    """Not an error: the answer that ends the handling of a bundle early."""

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload


def _result(status: str, version: str | None, in_force: str, problems: list[str] | None = None,
            summary: str | None = None) -> bytes:
    body: dict[str, object] = {"status": status, "version": version, "in_force": in_force}
    if problems:
        body["problems"] = problems[:50]
    if summary is not None:
        body["summary"] = summary
    return json.dumps(body, separators=(",", ":")).encode()
