"""Benchmark 8: the floods of issue 17, against a real gateway process.

Each flood runs against a fresh ``gateway run`` (mock pins, real ptys, a private
Mosquitto on loopback; see :mod:`bench.proc`), so the peak RSS (``VmHWM``) is that
flood's own:

* **a, hub commands**: a paho publisher in a process of its own sends
  ``<base>/set/light`` ON/OFF (QoS 0) as fast as it can;
* **b, serial**: a process writes ``t=<n>`` lines into the sensor's pty as fast as the
  pty takes them;
* **c, births**: a paho publisher sends ``homeassistant/status`` = ``online`` as fast as it can;
* **d, broker down**: the broker is stopped, ``outbox.max_events`` is small, a rule toggles
  the light on every temperature reading (fed at 1,000 lines/s), and the alarm is armed
  during the outage; then the broker comes back and the alarm's events are counted.

During every flood an *unrelated* serial sensor (``outdoor_temp``, on a pty of its own)
gets a new value every 50 ms; the latency is from the write to the value's event on
``event/outdoor_temp`` at a subscriber in this process (the flooders run in other
processes, so they do not share this one's GIL). The event stream carries every
reading, so a value that never arrives was lost: counted at the wait's end, and the p99
is then not met. The retained ``state/outdoor_temp`` is "latest wins" and sent at most
once per ``READING_STATE_INTERVAL`` per entity (docs/mqtt.md), so for it the figure is
the lag of the hub's view: until it holds the value or a newer one. The alarm is armed (by a rule on
``outdoor_temp``, exit delay 1 s) in the middle of each flood; ``arming`` and
``armed_away`` must both reach ``event/house_alarm``. What was shed is read from the
retained ``<base>/health`` (every second here): every counter whose name says
dropped, shed, coalesced, rejected or refused, whatever the tree calls it.

Goals (issue 17): peak RSS ≤ 64 MB under every flood; back to idle + 5 MB within a
minute (a few seconds with ``--quick``); unrelated p99 ≤ 50 ms; every alarm event kept.

    PYTHONPATH=. .venv/bin/python -m bench --only 8 [--quick]
    PYTHONPATH=. .venv/bin/python -m bench.floods hub HOST PORT TOPIC PAYLOADS SECONDS [COUNT]   # a flooder alone
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.figures import Figure, percentile, status_kb
from bench.proc import ROOT, Pty, start_gateway, stop
from gateway.mqtt.retained import READING_STATE_INTERVAL
from tests import toml_kit as toml
from tests.conftest import Broker, free_port
from tests.helpers import wait_until
from tests.houses import house_config

BENCH = "8 floods"
BASE = "gateway/bench"
ALARM = "house_alarm"
FLOODED = "temperature"
"""The entity of the sensor flood b floods (``climate`` in tests/houses.py)."""
ARM_VALUE = 100_000
PROBE_EVERY = 0.05
PEAK_GOAL_MB = 64.0
BACK_GOAL_MB = 5.0
P99_GOAL_MS = 50.0
CYCLE_GOAL_MS = 100.0
FRESH_GOAL_MS = P99_GOAL_MS + READING_STATE_INTERVAL * 1e3
"""The retained state's lag: the event's goal plus the documented interval between a reading's states."""
"""Issue 17: a flooding device's newest value no more than one dispatcher cycle old. A cycle (256 events)
took 4-17 ms in benchmark 8; the goal allows the reader's pause and the way to the subscriber too."""
SHED_KEY = re.compile(r"drop|shed|coalesc|reject|refus|limit|overflow|evict", re.IGNORECASE)

ARM_RULE = f"""
[[rules]]
id = "arm_on_outdoor"
[[rules.triggers]]
type = "numeric"
entity = "outdoor_temp"
above = {ARM_VALUE - 1}
[[rules.actions]]
type = "alarm"
alarm = "{ALARM}"
command = "arm_away"

[[alarms]]
id = "{ALARM}"
exit_delay = "1s"
entry_delay = "30s"
[alarms.sensors]
armed_away = ["motion"]
"""
TOGGLE_RULE = """
[[rules]]
id = "toggle_on_reading"
[[rules.triggers]]
type = "state"
entity = "temperature"
[[rules.actions]]
type = "toggle"
entity = "light"
"""


@dataclass
class Flood:
    key: str
    title: str
    rules: str = "version = 1\n" + ARM_RULE
    outbox: str = ""
    broker_down: bool = False


FLOODS = (
    Flood("a", "hub commands, as fast as paho publishes"),
    Flood("b", "serial lines, as fast as the pty takes them"),
    Flood("c", "homeassistant/status online births"),
    Flood("d", "broker down, outbox.max_events=100, toggle on every reading, alarm armed",
          rules="version = 1\n" + ARM_RULE + TOGGLE_RULE, outbox="\n[outbox]\nmax_events = 100\n", broker_down=True),
)


# -- the process being flooded ---------------------------------------------------------------------------------

def mb(kb: int) -> float:
    return kb / 1024


@dataclass
class Watch:
    """A subscriber in this process: arrival stamps of the probe's values, alarm states, the latest health."""

    port: int
    probe_arrived: dict[int, float] = field(default_factory=dict)
    alarm_states: list[str] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)
    flooded_arrived: dict[int, float] = field(default_factory=dict)
    """Arrival stamps of the flooded serial sensor's retained states (flood b)."""
    probe_events: dict[int, float] = field(default_factory=dict)
    """Arrival stamps of the probe's values on its event stream (every reading, none coalesced)."""
    flooded_events: dict[int, float] = field(default_factory=dict)
    """Arrival stamps of the flooded sensor's values on its event stream (flood b)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"floods-{os.getpid()}-{id(self)}")
        # Back before the gateway after an outage (its minimum is 1 s); paho takes floats, its stubs say int.
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        topics = [(f"{BASE}/state/outdoor_temp", 1), (f"{BASE}/event/{ALARM}", 1), (f"{BASE}/health", 1),
                  (f"{BASE}/state/{FLOODED}", 1), (f"{BASE}/event/outdoor_temp", 1), (f"{BASE}/event/{FLOODED}", 1)]
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the watcher could not subscribe")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        with self._lock:
            if msg.topic.endswith("/state/outdoor_temp") and isinstance(data, int | float):
                self.probe_arrived.setdefault(int(data), now)
            elif msg.topic.endswith(f"/state/{FLOODED}") and isinstance(data, int | float):
                self.flooded_arrived.setdefault(int(data), now)
            elif msg.topic.endswith("/event/outdoor_temp") and isinstance(data, dict):
                if isinstance(value := data.get("value"), int | float):
                    self.probe_events.setdefault(int(value), now)
            elif msg.topic.endswith(f"/event/{FLOODED}") and isinstance(data, dict):
                if isinstance(value := data.get("value"), int | float):
                    self.flooded_events.setdefault(int(value), now)
            elif msg.topic.endswith(f"/event/{ALARM}") and isinstance(data, dict):
                self.alarm_states.append(str(data.get("value")))
            elif msg.topic.endswith("/health") and isinstance(data, dict):
                self.health = data

    def snapshot(self) -> tuple[dict[int, float], list[str], dict[str, Any]]:
        with self._lock:
            return dict(self.probe_arrived), list(self.alarm_states), dict(self.health)

    def events(self) -> dict[int, float]:
        with self._lock:
            return dict(self.probe_events)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def shed(health: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every non-zero counter in a health report whose name says something was shed; keys may not exist."""
    found: dict[str, float] = {}
    for key, value in health.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found.update(shed(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool) and value and SHED_KEY.search(name):
            found[name] = float(value)
    return found


# -- the flooders (processes of their own) ---------------------------------------------------------------------

def flooder(argv: list[str]) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    fds = tuple(int(a) for a in argv[1:2]) if argv[0] == "serial" else ()
    return subprocess.Popen([sys.executable, "-m", "bench.floods", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, pass_fds=fds)


def run_hub(host: str, port: int, topic: str, payloads: list[str], seconds: float, count: int = 0) -> int:
    """Publish ``payloads`` in turn on ``topic`` at QoS 0 as fast as paho manages for ``seconds`` (or until
    ``count`` are sent, when not 0); the count."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"flooder-{os.getpid()}")
    client.max_queued_messages_set(10_000)
    client.connect(host, port)
    client.loop_start()
    print(STARTED, flush=True)
    sent = 0
    end = time.monotonic() + seconds
    encoded = [p.encode() for p in payloads]
    while time.monotonic() < end and not 0 < count <= sent:
        for _ in range(100):
            if client.publish(topic, encoded[sent % len(encoded)], qos=0).rc == mqtt.MQTT_ERR_SUCCESS:
                sent += 1
    client.loop_stop()
    client.disconnect()
    return sent


def run_serial(fd: int, seconds: float, rate: float) -> int:
    """Write ``t=<n>`` lines into a pty master: as fast as it takes them (``rate`` 0) or paced; the count."""
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    sent = 0
    started = time.monotonic()
    end = started + seconds
    pending = b""
    while (now := time.monotonic()) < end:
        if not pending:
            count = 200 if rate <= 0 else max(0, int((now - started) * rate) - sent)
            if count == 0:
                time.sleep(0.001)
                continue
            pending = b"".join(b"t=%d\n" % (sent + i + 1) for i in range(count))
            sent += count
        try:
            written = os.write(fd, pending)
            pending = pending[written:]
        except BlockingIOError:
            time.sleep(0.0005)
    return sent - pending.count(b"\n")


STARTED = "flooding"
"""The line a flooder prints when it is ready and starts: its start-up (importing paho, connecting) took up
to 8 s on a loaded machine, and a probe or an arming that happens before the flood measures nothing."""


def flooder_main(argv: list[str]) -> int:
    """``hub HOST PORT TOPIC PAYLOADS SECONDS [COUNT]`` | ``serial FD SECONDS RATE``: print ``flooding``, flood,
    then print the count and the ``time.perf_counter()`` of its end (CLOCK_MONOTONIC: the same in every process)."""
    if argv[0] == "hub":
        sent = run_hub(argv[1], int(argv[2]), argv[3], argv[4].split(","), float(argv[5]),
                       int(argv[6]) if len(argv) > 6 else 0)
    elif argv[0] == "serial":
        print(STARTED, flush=True)
        sent = run_serial(int(argv[1]), float(argv[2]), float(argv[3]))
    else:
        print("usage: hub HOST PORT TOPIC PAYLOADS SECONDS [COUNT] | serial FD SECONDS RATE", file=sys.stderr)
        return 2
    print(sent, time.perf_counter(), flush=True)
    return 0


# -- one flood ---------------------------------------------------------------------------------------------------

@dataclass
class Result:
    flood: Flood
    sent: int = 0
    idle_mb: float = 0.0
    peak_mb: float = 0.0
    after_mb: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    """Each probe value: from its line written to its event at the subscriber (the goal's figure). The event
    stream carries every reading, so a value that never arrives was lost: counted at the wait's end."""
    probes: int = 0
    never: int = 0
    """Probe values whose event never reached the subscriber."""
    freshness_ms: list[float] = field(default_factory=list)
    """Each probe value: from its line written until the retained state holds it or a newer value. The state
    is "latest wins" and a reading's state is sent at most once per ``READING_STATE_INTERVAL`` (docs/mqtt.md),
    so a value overtaken by a newer one is never sent as itself: what the hub's view lags, not what is lost."""
    alarm_states: list[str] = field(default_factory=list)
    shed: dict[str, float] = field(default_factory=dict)
    alive: bool = True
    newest_late_ms: float | None = None
    """Flood b: from the flooder's last line to the flooded sensor's retained state carrying it."""
    newest_event_late_ms: float | None = None
    """Flood b: from the flooder's last line to the flooded sensor's event carrying it."""
    note: str = ""
    checks: dict[str, Any] = field(default_factory=dict)
    """What the caller's ``check`` found while the gateway still ran after the flood (the CI test's questions)."""


def gateway_config(directory: Path, broker_port: int, sensor: str, outdoor: str, flood: Flood) -> Path:
    extra = ("health_interval = 1.0\n" + flood.outbox + "\n"
             + toml.serial_kv("outdoor", "outdoor_temp", port=outdoor, baudrate=115200))
    config = house_config(directory, mqtt_port=broker_port, serial_port=sensor, rules=flood.rules, extra=extra)
    # Since [gateway] pin_factory exists, GPIOZERO_PIN_FACTORY alone no longer gives the process mock pins.
    text = config.read_text()
    if "pin_factory" not in text:
        config.write_text(text.replace('state_dir = "state"', 'state_dir = "state"\npin_factory = "mock"', 1))
    return config


@contextlib.contextmanager
def probing(master: int, seconds: float, arm_at: float) -> Iterator[dict[int, float]]:
    """Write a new ``outdoor_temp`` every ``PROBE_EVERY`` s in a thread, and the arming value at ``arm_at``, or
    when the flood ends if that is sooner (a flood capped by a message count may end within a second)."""
    sent: dict[int, float] = {}
    stop_flag = threading.Event()
    armed = threading.Event()

    def run() -> None:
        started = time.monotonic()
        n = 0
        while not stop_flag.is_set() and time.monotonic() - started < seconds:
            if not armed.is_set() and time.monotonic() - started >= arm_at:
                os.write(master, b"t=%d\n" % ARM_VALUE)
                armed.set()
            else:
                n += 1
                os.write(master, b"t=%d\n" % n)
                sent[n] = time.perf_counter()
            stop_flag.wait(PROBE_EVERY)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop_flag.set()
        thread.join(5)
        if not armed.is_set():
            os.write(master, b"t=%d\n" % ARM_VALUE)


Check = Callable[[Path, int], dict[str, Any]]
"""Called with (config path, broker port) after the flood and the wait, while the gateway still runs."""


def run_flood(
    flood: Flood, directory: Path, seconds: float, after: float, check: Check | None = None,
    grace: float | None = None, count: int = 0,
) -> Result:
    """Start a broker and a gateway, idle, flood for ``seconds``, wait ``after`` s (then up to ``grace``,
    default ``after``, for the alarm's events), and measure; the broker and the gateway are stopped whatever
    happens. ``count`` (not 0) caps the hub floods' messages, so that a shortened flood does the same work
    on a busy machine as on an idle one."""
    directory.mkdir(parents=True)
    result = Result(flood)
    broker = Broker(port=free_port(), directory=directory / "mosquitto")
    broker.start()
    sensor, outdoor = Pty(), Pty()
    config = gateway_config(directory, broker.port, sensor.path, outdoor.path, flood)
    log = directory / "gateway.log"
    process = start_gateway(config, log)
    watch = Watch(broker.port)
    try:
        wait_until(lambda: b" started: " in log.read_bytes() or process.poll() is not None, 30, "gateway start")
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited: {log.read_text()[-2000:]}")
        os.write(outdoor.master, b"t=0\n")  # the probe entity's first value (a first value counts as a change)
        wait_until(lambda: 0 in watch.snapshot()[0], 20, "the probe entity's first state")
        time.sleep(2.0)
        pid = process.pid
        result.idle_mb = mb(status_kb(pid, "VmRSS"))
        if flood.broker_down:
            broker.stop()
        args = {
            "a": ["hub", "127.0.0.1", str(broker.port), f"{BASE}/set/light", "ON,OFF", str(seconds), str(count)],
            "b": ["serial", str(sensor.master), str(seconds), "0"],
            "c": ["hub", "127.0.0.1", str(broker.port), "homeassistant/status", "online", str(seconds), str(count)],
            "d": ["serial", str(sensor.master), str(seconds), "1000"],
        }[flood.key]
        flooding = flooder(args)
        assert flooding.stdout is not None
        if flooding.stdout.readline().strip() != STARTED.encode():  # probes and arming begin with the flood
            raise RuntimeError("the flooder did not start")
        peak_rss = 0
        with probing(outdoor.master, seconds, arm_at=seconds / 2) as probe_sent:
            while flooding.poll() is None:
                peak_rss = max(peak_rss, status_kb(pid, "VmRSS"))
                time.sleep(0.1)
        out, _ = flooding.communicate(timeout=10)
        parts = out.split()
        result.sent = int(parts[0]) if parts else 0
        ended = float(parts[1]) if len(parts) > 1 else time.perf_counter()
        if flood.broker_down:
            broker.start()
        # What the flood left behind: late probes still count (against the goal), up to the end of the wait.
        flood_end = time.perf_counter()
        time.sleep(after)
        result.after_mb = mb(status_kb(pid, "VmRSS"))
        result.peak_mb = mb(max(status_kb(pid, "VmHWM"), peak_rss))
        # "Kept" means delivered at all: late alarm events still count, up to a grace after the wait.
        until = time.monotonic() + (after if grace is None else grace)
        while time.monotonic() < until and not {"arming", "armed_away"} <= set(watch.snapshot()[1]):
            time.sleep(0.1)
        if flood.key == "b":  # the flooding device's own newest value (its lines are t=1 .. t=sent)
            newest = watch.flooded_arrived.get(result.sent)
            result.newest_late_ms = None if newest is None else (newest - ended) * 1e3
            newest_event = watch.flooded_events.get(result.sent)
            result.newest_event_late_ms = None if newest_event is None else (newest_event - ended) * 1e3
        arrived, result.alarm_states, health = watch.snapshot()
        events = watch.events()
        result.shed = shed(health)
        result.probes = len(probe_sent)
        result.never = sum(1 for n in probe_sent if n not in events)
        result.latencies_ms = [(events.get(n, flood_end + after) - t) * 1e3 for n, t in probe_sent.items()]
        result.freshness_ms = freshness(probe_sent, arrived, flood_end + after)
        result.alive = process.poll() is None
        if not result.alive:
            result.note = f"gateway exited {process.returncode}"
        elif check is not None:
            result.checks = check(config, broker.port)
    finally:
        watch.close()
        stop(process)
        sensor.close()
        outdoor.close()
        broker.stop()
    return result


def freshness(sent: Mapping[int, float], arrived: Mapping[int, float], end: float) -> list[float]:
    """For each value written at ``sent[n]``: ms until a retained state of ``n`` or a newer value arrived
    (``end`` if none did). Values rise with time, so the first arrival of any ``m >= n`` answers it."""
    out: list[float] = []
    first_from = end  # the earliest arrival among the values >= n, walking n downwards
    for n in sorted(set(sent) | set(arrived), reverse=True):
        first_from = min(first_from, arrived.get(n, end))
        if n in sent:
            out.append((max(first_from, sent[n]) - sent[n]) * 1e3)
    return out


def figures_for(result: Result, after: float) -> list[Figure]:
    flood = result.flood
    name = f"{flood.key}: {flood.title}"
    peak_ok = result.peak_mb <= PEAK_GOAL_MB
    back_ok = result.after_mb <= result.idle_mb + BACK_GOAL_MB
    sent = f"{result.sent:,} {'lines' if flood.key in 'bd' else 'messages'} sent"
    out = [
        Figure(BENCH, f"{name}: peak RSS", result.peak_mb, "MB", f"≤ {PEAK_GOAL_MB:g} MB", peak_ok,
               f"{sent}; idle {result.idle_mb:.1f} MB" + (f"; {result.note}" if result.note else "")),
        Figure(BENCH, f"{flood.key}: RSS {after:g} s after", result.after_mb, "MB",
               f"≤ idle + {BACK_GOAL_MB:g} MB", back_ok, f"idle {result.idle_mb:.1f} MB"),
    ]
    if flood.broker_down:
        out.append(Figure(BENCH, f"{flood.key}: unrelated state p99", None, "",
                          note="broker down: no state reaches MQTT during this flood"))
    elif result.latencies_ms:
        late = sum(1 for x in result.latencies_ms if x > P99_GOAL_MS)
        p99 = percentile(result.latencies_ms, 99)
        out.append(Figure(BENCH, f"{flood.key}: unrelated reading p99", p99, "ms", f"≤ {P99_GOAL_MS:g} ms",
                          p99 <= P99_GOAL_MS, f"{result.probes} probes, {late} over {P99_GOAL_MS:g} ms "
                          f"(p50 {percentile(result.latencies_ms, 50):.1f} ms), from the line to its event; "
                          f"{result.never} never arrived (counted at the wait's end)"))
        fresh = percentile(result.freshness_ms, 99)
        out.append(Figure(BENCH, f"{flood.key}: unrelated retained state, p99 lag", fresh, "ms",
                          f"≤ {FRESH_GOAL_MS:g} ms", fresh <= FRESH_GOAL_MS,
                          f"until the retained state holds the value or a newer one (p50 "
                          f"{percentile(result.freshness_ms, 50):.1f} ms); a reading's state is sent at most every "
                          f"{READING_STATE_INTERVAL * 1e3:g} ms, the event stream carries every value"))
    if flood.key == "b":
        newest_ms, state_ms = result.newest_event_late_ms, result.newest_late_ms
        out.append(Figure(BENCH, f"{flood.key}: the flooding device's newest value", newest_ms, "ms",
                          f"≤ {CYCLE_GOAL_MS:g} ms", newest_ms is not None and newest_ms <= CYCLE_GOAL_MS,
                          "from its last line written to its event at the subscriber"
                          + ("" if newest_ms is not None else "; never arrived")
                          + ("" if state_ms is None else f"; to its retained state {state_ms:.1f} ms "
                             f"(sent at most every {READING_STATE_INTERVAL * 1e3:g} ms)")))
    kept = [s for s in ("arming", "armed_away") if s in result.alarm_states]
    out.append(Figure(BENCH, f"{flood.key}: alarm events kept", len(kept), "of 2", "all", len(kept) == 2,
                      "seen: " + (", ".join(result.alarm_states) or "none")))
    shed_note = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(result.shed.items())) or "nothing counted"
    out.append(Figure(BENCH, f"{flood.key}: shed by kind (health)", sum(result.shed.values()), "",
                      note=shed_note))
    return out


def measure(quick: bool, only: str = "abcd") -> list[Figure]:
    seconds = 3.0 if quick else 10.0
    after = 4.0 if quick else 60.0
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        for flood in FLOODS:
            if flood.key not in only:
                continue
            print(f"   flood {flood.key}: {flood.title}", file=sys.stderr, flush=True)
            try:
                figures += figures_for(run_flood(flood, Path(tmp) / flood.key, seconds, after), after)
            except Exception as exc:  # one flood's failure must not hide the others' figures
                figures.append(Figure(BENCH, f"{flood.key}: {flood.title}", None, "",
                                      note=f"failed: {type(exc).__name__}: {exc}"))
    return figures


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("hub", "serial"):
        return flooder_main(argv)
    from bench.run import table

    quick = "--quick" in argv
    only = next((a for a in argv if not a.startswith("-")), "abcd")
    print(table(measure(quick, only)))
    return 0



if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
