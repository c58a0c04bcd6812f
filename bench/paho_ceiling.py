"""paho-mqtt's own ceiling here, batched payloads, and a raw-socket floor (issue 14).

``python -m bench.paho_ceiling [REPEATS]`` (default 3) starts a private Mosquitto on loopback and prints one
table: messages/s (or events/s) acknowledged and CPU µs per message (per event) of the publishing process.

Why: issue 14 asks for 10,000 lines/s lossless with a 49 % alarm mix, i.e. about 14,900 QoS 1 messages/s.
Before spending more on the gateway, this tells how much of that paho's Python client can carry at all on
this machine, how much of its cost is paho's bookkeeping rather than Python's (the raw-socket publisher), and
what an array of events per message (a batched payload under backlog) would give.

How: every figure is one fresh child process (``python -m bench.paho_ceiling --one KIND ...``) so that no
thread, socket or allocator state leaks from one figure into the next; the child measures its own CPU time,
user + system of all its threads (``time.process_time()``), from the first ``publish`` to the last
acknowledgement, and prints JSON. The parent runs each figure REPEATS times, interleaved, and reports medians
with the range and ``/proc/loadavg`` (the machine is shared).

- paho: MQTT 5 as the gateway ships it (and 3.1.1 once), ``loop_start``, ``max_inflight`` 20/100/1,000, every
  message handed to ``publish`` at once (paho queues what exceeds the window and sends it as PUBACKs free the
  window: acknowledgement-paced); QoS 0 for comparison (counted when paho has written it).
- batched: the same client publishing a JSON array of N of the gateway's event payloads per message.
- raw: one thread, one non-blocking socket, hand-built MQTT 5 PUBLISH packets, as many as the window allows
  written in one ``send``, PUBACKs parsed from whatever ``recv`` returns: no packet objects, no locks, no
  second thread. ``raw1`` writes one ``send`` per packet, to tell the write coalescing from the rest.
"""

from __future__ import annotations

import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TOPIC = "gateway/house-01/event/living_temp"
BATCH_TOPIC = "gateway/house-01/events"
MESSAGES = 20_000
"""Messages per single-event figure."""
BATCH_EVENTS = 100_000
"""Events per batched figure."""


def event_payloads(count: int) -> list[bytes]:
    """``count`` real ``event/<entity>`` payloads as the gateway encodes them (distinct ids and sequence numbers)."""
    from core.events import Event, Kind
    from gateway.mqtt.topics import event_payload

    ts = 1_767_225_600.0
    return [
        event_payload(Event(f"3f9c2a71-{i}", Kind.READING, "living_temp", 21.5 + (i % 40) / 10, ts + i / 1000,
                            i / 1000, unit="°C"), i)
        for i in range(1, count + 1)
    ]


def cpu() -> float:
    """CPU seconds of the whole process, all threads (user + system), at nanosecond resolution:
    ``os.times()`` counts in 10 ms ticks, too coarse for a batched figure that takes 50 ms."""
    return time.process_time()


# --- the child: one figure ----------------------------------------------------------------------------------


def run_paho(port: int, qos: int, window: int, batch: int, protocol: str) -> dict[str, float]:
    """Publish through paho with ``loop_start``; return messages, events, seconds and CPU seconds."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    events = BATCH_EVENTS if batch > 1 else MESSAGES
    single = event_payloads(events)
    if batch > 1:
        payloads = [b"[" + b",".join(single[i:i + batch]) + b"]" for i in range(0, events, batch)]
        topic = BATCH_TOPIC
    else:
        payloads, topic = single, TOPIC
    mqtt5 = protocol == "5"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ceiling-{os.getpid()}",
                         protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311, clean_session=None if mqtt5 else True)
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)  # unbounded: paho holds what the window does not take yet
    done = threading.Event()
    acked = 0
    total = len(payloads)

    def on_publish(client: Any, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        nonlocal acked
        acked += 1
        if acked == total:
            done.set()

    connected = threading.Event()
    client.on_publish = on_publish
    client.on_connect = lambda *args: connected.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    connected.wait(10)
    started, cpu0 = time.perf_counter(), cpu()
    for payload in payloads:
        client.publish(topic, payload, qos=qos)
    if not done.wait(300):
        raise SystemExit(f"only {acked} of {total} acknowledged")
    elapsed, spent = time.perf_counter() - started, cpu() - cpu0
    client.disconnect()
    client.loop_stop()
    return {"messages": total, "events": events, "seconds": elapsed, "cpu": spent}


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def run_raw(port: int, window: int, coalesce: bool) -> dict[str, float]:
    """Hand-built MQTT 5 QoS 1 PUBLISH packets on one non-blocking socket; PUBACKs counted as they come."""
    payloads = event_payloads(MESSAGES)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = _utf8("MQTT") + bytes([5, 0x02]) + (60).to_bytes(2, "big") + b"\x00" + _utf8(f"raw-{os.getpid()}")
    sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
    connack = sock.recv(64)
    if not connack or connack[0] != 0x20:
        raise SystemExit(f"no CONNACK: {connack!r}")
    topic = _utf8(TOPIC)
    sock.setblocking(False)
    total, sent, acked = len(payloads), 0, 0
    pending = b""
    buffer = b""
    started, cpu0 = time.perf_counter(), cpu()
    while acked < total:
        if not pending and sent < total and sent - acked < window:
            packets = []
            for i in range(sent, min(total, acked + window)):
                mid = i % 65535 + 1
                variable = topic + mid.to_bytes(2, "big") + b"\x00"  # packet id, no properties
                packets.append(b"\x32" + _remaining_length(len(variable) + len(payloads[i])) + variable + payloads[i])
            sent += len(packets)
            if coalesce:
                pending = b"".join(packets)
            else:
                for packet in packets:  # one system call per packet, as a client without write coalescing
                    sock.setblocking(True)
                    sock.sendall(packet)
                sock.setblocking(False)
        readable, writable, _ = select.select([sock], [sock] if pending else [], [], 10)
        if writable:
            pending = pending[sock.send(pending):]
        if readable:
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("the broker closed the connection")
            buffer += chunk
            offset = 0
            while len(buffer) - offset >= 2:
                # a PUBACK's remaining length fits in one byte (2 to 4, or a few more with a reason string)
                length = buffer[offset + 1]
                if len(buffer) - offset < 2 + length:
                    break
                if buffer[offset] == 0x40:
                    acked += 1
                offset += 2 + length
            buffer = buffer[offset:]
    elapsed, spent = time.perf_counter() - started, cpu() - cpu0
    sock.setblocking(True)
    sock.sendall(b"\xe0\x00")
    sock.close()
    return {"messages": total, "events": total, "seconds": elapsed, "cpu": spent}


# --- the parent: the table ------------------------------------------------------------------------------------

FIGURES: list[tuple[str, list[str]]] = [
    ("paho QoS 1, MQTT 5, window 20", ["paho", "1", "20", "1", "5"]),
    ("paho QoS 1, MQTT 5, window 100", ["paho", "1", "100", "1", "5"]),
    ("paho QoS 1, MQTT 5, window 1,000", ["paho", "1", "1000", "1", "5"]),
    ("paho QoS 1, MQTT 3.1.1, window 100", ["paho", "1", "100", "1", "3.1.1"]),
    ("paho QoS 0, MQTT 5", ["paho", "0", "100", "1", "5"]),
    ("paho QoS 1, batch of 10, window 100", ["paho", "1", "100", "10", "5"]),
    ("paho QoS 1, batch of 50, window 100", ["paho", "1", "100", "50", "5"]),
    ("paho QoS 1, batch of 100, window 100", ["paho", "1", "100", "100", "5"]),
    ("paho QoS 1, batch of 500, window 100", ["paho", "1", "100", "500", "5"]),
    ("raw socket QoS 1, MQTT 5, window 100, coalesced writes", ["raw", "100", "1"]),
    ("raw socket QoS 1, MQTT 5, window 100, one send per packet", ["raw", "100", "0"]),
]


def one(port: int, args: list[str]) -> dict[str, float]:
    child = subprocess.run([sys.executable, "-m", "bench.paho_ceiling", "--one", str(port), *args],
                           capture_output=True, text=True, timeout=600, check=False)
    if child.returncode != 0:
        raise SystemExit(f"{args}: {child.stderr.strip()[-2000:]}")
    result: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    return result


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 1)[0]


def main(repeats: int = 3) -> None:
    from tests.conftest import Broker, free_port

    with tempfile.TemporaryDirectory() as name:
        broker = Broker(port=free_port(), directory=Path(name) / "mosquitto")
        broker.start()
        try:
            results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in FIGURES}
            loads = [loadavg()]
            for _ in range(repeats):  # interleaved: each repeat sees the machine at a different moment
                for label, args in FIGURES:
                    results[label].append(one(broker.port, args))
                loads.append(loadavg())
        finally:
            broker.stop()
    size = len(event_payloads(1)[0])
    print(f"event payload {size} bytes on {TOPIC}; {repeats} repeats, medians [min-max]; "
          f"load average (1 min) during the runs: {', '.join(loads)}")
    print(f"{'figure':58s} {'msg/s':>16s} {'events/s':>18s} {'CPU µs/msg':>12s} {'CPU µs/event':>16s} {'core %':>7s}")
    for label, _ in FIGURES:
        runs = results[label]
        msg_rate = [r["messages"] / r["seconds"] for r in runs]
        ev_rate = [r["events"] / r["seconds"] for r in runs]
        per_msg = [r["cpu"] / r["messages"] * 1e6 for r in runs]
        per_event = [r["cpu"] / r["events"] * 1e6 for r in runs]
        core = [r["cpu"] / r["seconds"] * 100 for r in runs]
        print(f"{label:58s} {statistics.median(msg_rate):7.0f} [{min(msg_rate):.0f}-{max(msg_rate):.0f}]"
              f" {statistics.median(ev_rate):8.0f} [{min(ev_rate):.0f}-{max(ev_rate):.0f}]"
              f" {statistics.median(per_msg):12.1f} {statistics.median(per_event):7.1f} "
              f"[{min(per_event):.1f}-{max(per_event):.1f}] {statistics.median(core):6.0f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        port, kind = int(sys.argv[2]), sys.argv[3]
        if kind == "paho":
            figure = run_paho(port, int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
        else:
            figure = run_raw(port, int(sys.argv[4]), sys.argv[5] == "1")
        print(json.dumps(figure))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
