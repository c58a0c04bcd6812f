"""Several brokers: which one the next connection attempt goes to.

paho-mqtt 2.x has no broker list: a client connects to one host and its own loop reconnects there.
:class:`Brokers` keeps the list (``[mqtt] hosts``) and decides; :func:`aim` points the client at the
chosen broker from ``on_pre_connect``, which paho calls inside every (re)connection attempt just
before it opens the socket. The client stays the same object, so what it holds survives the move:
its in-flight QoS 1 messages (re-sent on the new connection), its subscriptions' callbacks; the
outbox re-sends whatever the old broker never acknowledged (docs/mqtt.md, *Delivery*), so a failover
is, for delivery, the same as a broker restart that lost its session.

The policy (docs/fleet.md):

- a connection attempt that fails (unreachable, refused, closed before CONNACK) moves to the next
  broker for the next attempt;
- an established link that drops is retried once on the *same* broker (a blip, a broker restart),
  and moves on only if that retry fails;
- the waits between attempts are the link's usual backoff and jitter, across hosts.

``in_order`` starts at the first host (a primary with standbys); ``random`` shuffles the list once per
process, so the gateways of a fleet spread over a cluster's nodes, and then goes round it in order.
"""

from __future__ import annotations

import random
import threading

import paho.mqtt.client as mqtt


def label(host: str, port: int) -> str:
    """``host:port`` (``[v6]:port``), as ``[mqtt] hosts`` writes it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Brokers:
    """The broker list and the one in use; called on paho's thread, read from any thread."""

    def __init__(self, brokers: list[tuple[str, int]], order: str = "in_order",
                 rng: random.Random | None = None) -> None:
        if not brokers:
            raise ValueError("at least one broker")
        self._brokers = list(brokers)
        if order == "random":
            (rng or random.Random()).shuffle(self._brokers)
        self._index = 0
        self._lock = threading.Lock()
        self.failovers = 0
        """Moves to another broker since start (a single broker never moves)."""

    @property
    def current(self) -> tuple[str, int]:
        with self._lock:
            return self._brokers[self._index]

    @property
    def current_label(self) -> str:
        return label(*self.current)

    def __len__(self) -> int:
        return len(self._brokers)

    def attempt_failed(self) -> None:
        """The attempt on the current broker failed: the next attempt goes to the next broker."""
        with self._lock:
            if len(self._brokers) > 1:
                self._index = (self._index + 1) % len(self._brokers)
                self.failovers += 1


def aim(client: mqtt.Client, host: str, port: int) -> None:
    """Point ``client``'s next connection at ``host:port``; call only from ``on_pre_connect``.

    paho's public ``host``/``port`` setters refuse while a (re)connection is in progress, which is
    exactly when ``on_pre_connect`` runs, and ``connect_async`` there would make paho's loop start a
    second attempt. So the two attributes paho reads right after this callback (to open the socket,
    and as the TLS server name) are set directly; tests/test_fleet.py fails if a paho release changes that.
    """
    client._host = host
    client._port = port
