"""A 3-node RabbitMQ cluster with its MQTT plugin, on loopback, for ``tests/test_fleet_cluster.py``.

RabbitMQ is the clustered MQTT engine that installs here from Debian (``apt-get install rabbitmq-server``,
3.10.8 on bookworm). :class:`RabbitCluster` runs three nodes as plain background processes, each with
its own node name (``rabbitN@localhost``), ports (AMQP, MQTT, Erlang distribution: all picked free on
127.0.0.1), data, log and plugin files under one temp directory, a shared Erlang cookie and a private
``epmd``; nothing in ``/etc/rabbitmq`` or ``/var/lib/rabbitmq`` is read or written, and no system
service is needed. It is slow (a cold start takes 15 to 25 s on two cores), hence the ``cluster`` marker.

How it starts, and why (each was found the hard way, see the TESTING notes):

- the real scripts in ``/usr/lib/rabbitmq/bin``: the ``/usr/sbin`` wrappers ``su rabbitmq`` as root,
  which drops the environment and the cookie;
- all three boot standalone, then nodes 2 and 3 join node 1 one at a time (``stop_app``,
  ``join_cluster``, ``start_app``): letting them discover each other while booting sometimes left a
  node's MQTT client-id tracker without a Raft leader for good;
- "ready" means a real MQTT CONNECT gets a CONNACK: a node accepts TCP on its MQTT port before its
  client-id tracker can answer;
- every process started here is a session leader of its own (``setsid``) and is stopped by its own
  PID: the Erlang VM (``beam.smp``, from the node's PID file) and the wrapper shell, never by name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path("/usr/lib/rabbitmq/bin")
"""The real rabbitmq-server and rabbitmqctl (not the /usr/sbin wrappers)."""


def installed() -> bool:
    return (BIN / "rabbitmq-server").exists() and (BIN / "rabbitmqctl").exists()


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all held open together while they are picked)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_range(length: int) -> int:
    """The first port of ``length`` consecutive free ports (rabbitmqctl's own distribution ports)."""
    for _ in range(200):
        base = 30_000 + secrets.randbelow(20_000)
        if all(port_free(base + i) for i in range(length)):
            return base
    raise RuntimeError(f"no {length} consecutive free ports found")


def mqtt_answers(port: int, timeout: float = 2.0) -> bool:
    """A raw MQTT 3.1.1 CONNECT on ``port`` gets CONNACK "accepted" (then a DISCONNECT)."""
    client_id = f"probe-{port}".encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a" + struct.pack("!H", len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(bytes([0x10, len(variable)]) + variable)
            answer = sock.recv(4)
            sock.sendall(b"\xe0\x00")
            return answer == b"\x20\x02\x00\x00"
    except OSError:
        return False


@dataclass
class Node:
    index: int
    directory: Path
    amqp: int
    mqtt: int
    dist: int
    wrapper: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"rabbit{self.index}@localhost"

    @property
    def pid_file(self) -> Path:
        return self.directory / "beam.pid"

    def beam_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None


@dataclass
class RabbitCluster:
    """Three RabbitMQ nodes with MQTT on loopback; :meth:`start`, :meth:`kill` (SIGKILL a node's VM),
    :meth:`start_node` (it rejoins from its own data), :meth:`ctl` (rabbitmqctl), :meth:`stop`."""

    root: Path
    queue_type: str = "quorum"
    """``mqtt.durable_queue_type`` for clean_session=False subscribers: ``classic`` lives on one node only."""
    size: int = 3
    wait_s: float = 120.0
    nodes: list[Node] = field(default_factory=list)
    epmd: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        ports = free_ports(3 * self.size + 1)
        self.epmd_port = ports.pop()
        self.ctl_dist_min = free_range(11)
        self.home = self.root / "home"
        self.nodes = [Node(i, self.root / f"n{i}", ports[3 * (i - 1)], ports[3 * (i - 1) + 1],
                           ports[3 * (i - 1) + 2]) for i in range(1, self.size + 1)]

    # -- environment -------------------------------------------------------------------------------

    def _env(self, node: Node) -> dict[str, str]:
        d = node.directory
        loopback = "-kernel inet_dist_use_interface {127,0,0,1}"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.home),  # the shared .erlang.cookie
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.amqp),
            "RABBITMQ_DIST_PORT": str(node.dist),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),  # keeps /etc/rabbitmq out
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(node.pid_file),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": loopback,
            "RABBITMQ_CTL_ERL_ARGS": loopback,
            "RABBITMQ_CTL_DIST_PORT_MIN": str(self.ctl_dist_min),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(self.ctl_dist_min + 10),
        }

    def _write_files(self, node: Node) -> None:
        d = node.directory
        (d / "log").mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq-env.conf").write_text("")
        (d / "advanced.config").write_text("[].\n")
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{node.amqp}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt}\n"
            "mqtt.allow_anonymous = true\n"
            f"mqtt.durable_queue_type = {self.queue_type}\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        # only the MQTT plugin (the management plugin etc. stay off); the same as
        # `rabbitmq-plugins --offline enable rabbitmq_mqtt` with this RABBITMQ_ENABLED_PLUGINS_FILE
        (d / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """A fresh cluster; returns once every node answers MQTT and is a member. Stops all on failure."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            cookie = self.home / ".erlang.cookie"
            cookie.write_text(secrets.token_hex(20))
            cookie.chmod(0o400)
            self.epmd = subprocess.Popen(
                ["epmd", "-address", "127.0.0.1", "-port", str(self.epmd_port)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
            self._wait(lambda: not port_free(self.epmd_port), 10, "epmd")
            for node in self.nodes:
                self._write_files(node)
            for node in self.nodes:  # all boot standalone, in parallel
                self.start_node(node.index, wait=False)
            self.wait_ready(1)
            for node in self.nodes[1:]:  # then join one at a time
                self.wait_ready(node.index)
                for args in (["stop_app"], ["join_cluster", self.nodes[0].name], ["start_app"]):
                    self.ctl(node.index, *args)
                self.wait_ready(node.index)
            running = self.ctl(1, "eval", "length(rabbit_mnesia:cluster_nodes(running)).")
            if running.strip() != str(self.size):
                raise RuntimeError(f"cluster incomplete: {running.strip()} running nodes")
        except BaseException:
            self.stop()
            raise

    def start_node(self, index: int, *, wait: bool = True) -> None:
        node = self.nodes[index - 1]
        node.pid_file.unlink(missing_ok=True)
        with open(node.directory / "stdout.log", "ab") as out:
            node.wrapper = subprocess.Popen(
                [str(BIN / "rabbitmq-server")], cwd=node.directory, env=self._env(node),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if wait:
            self.wait_ready(index)

    def wait_ready(self, index: int) -> None:
        node = self.nodes[index - 1]

        def ready() -> bool:
            if node.wrapper is not None and node.wrapper.poll() is not None:
                raise RuntimeError(f"{node.name} exited: see {node.directory / 'log'}")
            return mqtt_answers(node.mqtt)

        self._wait(ready, self.wait_s, f"{node.name}: a CONNACK on port {node.mqtt}")

    def ctl(self, index: int, *args: str) -> str:
        node = self.nodes[index - 1]
        done = subprocess.run([str(BIN / "rabbitmqctl"), "-n", node.name, "-q", *args], env=self._env(node),
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node.name}: {done.stderr or done.stdout}")
        return done.stdout

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``'s Erlang VM: the node is gone at once, as in a power cut."""
        node = self.nodes[index - 1]
        pid = node.beam_pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        if node.wrapper is not None:
            node.wrapper.wait(timeout=30)  # the wrapper shell ends with its VM
            node.wrapper = None

    def stop(self) -> None:
        """SIGTERM (a graceful stop) to every node's VM and wrapper, SIGKILL after 30 s; then epmd."""
        pids = [(n, n.beam_pid()) for n in self.nodes]
        for node, pid in pids:
            for target in (pid, node.wrapper.pid if node.wrapper else None):
                if target is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(target, signal.SIGTERM)
        for node, pid in pids:
            if node.wrapper is not None:
                try:
                    node.wrapper.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    node.wrapper.kill()
                    node.wrapper.wait(timeout=10)
                node.wrapper = None
            if pid is not None and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.epmd is not None:
            self.epmd.terminate()
            self.epmd.wait(timeout=10)
            self.epmd = None

    @staticmethod
    def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
