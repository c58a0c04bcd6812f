"""``config.toml``: the gateway's validated configuration.

Everything is checked before anything is opened: unknown keys are errors,
and every problem is reported at once as ``FILE: key.path: message`` so an
installer can fix a whole file in one pass. ``gateway check`` runs this same
code.

Relative paths (``rules.dir``, ``gateway.state_dir``) are relative to the
config file, so a checked-out repository runs as it is.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from core.entities import EntitySpec
from core.errors import (
    MAX_NESTING,
    FileRefused,
    located_errors,
    nesting,
    read_installer_file,
    too_deep,
    unknown_tag_message,
)
from core.fields import empty_dict, empty_list
from drivers.base import DeviceConfig, Driver
from drivers.board import FactoryName, bcm_number, conflicts
from drivers.registry import DRIVERS, unknown_driver_message
from gateway.mqtt.foreign import MqttEntityConfig


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one located message each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


MAX_CONFIG_BYTES = 1 << 20
"""A config.toml is a few KiB; no more than this is read."""


class Section(BaseModel):
    """A table of config.toml. No float in it may be infinite or NaN: ``health_interval = inf`` would
    never publish health, ``reconnect_max = nan`` compares false with everything.

    ``defer_build``: a model's validator is built at its first use, not at import (start-up CPU,
    docs/performance.md): the sections are built inside the house's own :func:`config_model`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


MACHINE_ID = Path("/etc/machine-id")
"""The board's identity (systemd's machine-id(5)): ``gateway.id`` is derived from it when not set."""
MACHINE_ID_KEY = b"edge-gateway gateway.id"
"""The application-specific message of the keyed hash: machine-id(5) asks applications never to expose
the machine id itself, but a keyed hash of it."""


def derived_gateway_id(machine_id: Path = MACHINE_ID) -> str:
    """``gw-`` and the first 12 hex digits of HMAC-SHA256(key = the machine id, ``MACHINE_ID_KEY``):
    stable for the board's life (until the OS is reinstalled), different on every board, and the machine
    id cannot be read back from it. The same in a shell: ``printf 'edge-gateway gateway.id' | openssl dgst
    -sha256 -hmac "$(cat /etc/machine-id)"``. ValueError when the file is missing or not 32 hex digits
    (``uninitialized`` during a first boot): the installer must set ``gateway.id``."""
    try:
        text = machine_id.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise ValueError(f"not set, and no machine id to derive one from ({machine_id}: "
                         f"{exc.strerror or exc}): set gateway.id") from None
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not set, and no machine id to derive one from ({machine_id} does not hold "
                         f"32 hex digits): set gateway.id")
    return "gw-" + hmac.new(text.encode(), MACHINE_ID_KEY, hashlib.sha256).hexdigest()[:12]


class GatewaySection(Section):
    id: str = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=48, validate_default=True)
    """Unique per broker: it names the MQTT base topic, client id and discovery node. Not set: derived
    from ``/etc/machine-id`` (:func:`derived_gateway_id`; validation context ``machine_id`` overrides
    the path, for tests)."""
    name: str | None = None
    timezone: str = "UTC"
    state_dir: Path = Path("/var/lib/gateway")
    """Outbox, timers and traces live here; the systemd unit's StateDirectory."""
    pin_factory: FactoryName = "auto"
    """The gpiozero pin factory ``run`` builds once for every GPIO and SPI device: ``auto`` tries lgpio,
    rpigpio, pigpio, native in turn; ``mock`` runs on gpiozero's mock pins (a bench without a board).
    None loads: ``run`` refuses to start and says what to install (docs/drivers.md)."""

    @field_validator("id", mode="before")
    @classmethod
    def _id_or_machine_id(cls, value: object, info: ValidationInfo) -> object:
        if value is not None:
            return value
        context = info.context if isinstance(info.context, dict) else {}
        try:
            return derived_gateway_id(context.get("machine_id", MACHINE_ID))
        except ValueError as exc:  # "missing": the message says what to do, no "(got None)" after it
            raise PydanticCustomError("missing", str(exc).replace("{", "{{").replace("}", "}}")) from None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Europe/London')") from None
        return value


class TlsSection(Section):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True


def parse_broker(entry: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6 address]:port"`` to ``(host, port)``; ValueError naming the entry."""
    host, sep, port = entry.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or (":" in host and not entry.strip().startswith("[")):
        raise ValueError(f"{entry!r} is not host:port (e.g. 'broker1.example.net:8883'; "
                         "an IPv6 address in brackets: '[fd00::1]:1883')")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return host, int(port)


TOPIC_PREFIX = r"^[^/+#\x00]+(/[^/+#\x00]+)*$"
"""Topic levels without wildcards, empty levels, or a leading or trailing ``/``."""


def _broker_entry(entry: str) -> str:
    parse_broker(entry)
    return entry


BrokerEntry = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(_broker_entry)]
"""One ``[mqtt] hosts`` entry; a bad one is reported at its index (``mqtt.hosts[1]: ...``)."""


EVENT_BATCH_BYTES_MIN = 1024
"""The smallest array of ``<base>/events`` one may configure: room for a few events."""


class MqttSection(Section):
    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    hosts: list[BrokerEntry] | None = Field(default=None, min_length=1, max_length=32)
    """Several brokers (a cluster's nodes, a standby), each ``"host:port"`` (``"[::1]:8883"`` for IPv6),
    instead of ``host``/``port``: tried in :attr:`host_order`, the next one when an attempt fails or
    when a dropped link cannot be re-established on the same broker (docs/fleet.md)."""
    host_order: Literal["in_order", "random"] = "in_order"
    """``in_order`` prefers the first host (a primary and standbys); ``random`` starts each gateway at a
    random place in a shuffled list, so a fleet spreads over a cluster's nodes."""
    base_topic: str | None = Field(default=None, pattern=TOPIC_PREFIX, max_length=200)
    """Default ``gateway/<id>``."""
    client_id: str | None = None
    """Default ``gateway-<id>``."""
    keepalive: int = Field(default=30, ge=5, le=3600)
    protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    tls: TlsSection | None = None
    discovery: bool = True
    discovery_prefix: str = Field(default="homeassistant", pattern=TOPIC_PREFIX, max_length=100)
    max_inflight: int = Field(default=1000, ge=1, le=65535)
    """QoS 1 messages in flight at once; the outbox owns everything beyond this window. The window sends at most
    this many per PUBACK round trip: 1,000 keep issue 14's 10,000 lines/s (~15,000 messages/s) flowing through
    round trips of up to ~65 ms, as a busy 2-core machine gives; 100 fell seconds behind there. It also bounds the
    duplicates after an outage or a restart (docs/mqtt.md, *Delivery*)."""
    reconnect_min: float = Field(default=1.0, gt=0)
    reconnect_max: float = Field(default=60.0, gt=0)
    session_expiry: int = Field(default=300, ge=0, le=86_400)
    """MQTT 5 session expiry (s): short outages keep the command subscription and its queued
    commands; after a longer one, stale hub commands are not replayed."""
    max_packet_size: int | None = Field(default=None, ge=64)
    """Bytes; events whose PUBLISH would be larger are refused at the outbox. The broker's
    CONNACK Maximum Packet Size (MQTT 5) lowers it further."""
    drain_rate: float = Field(default=1000.0, gt=0)
    """Events per second at which the backlog found at (re)connection (an outage, a restart) is
    sent (token bucket, burst = ``max_inflight``); live events after it are not paced."""
    health_interval: float = Field(default=60.0, ge=1)
    """Seconds between retained ``<base>/health`` publications."""
    command_max_bytes: int = Field(default=1024, ge=16, le=65_536)
    """Hub command payloads longer than this are rejected unread."""
    command_rate: float = Field(default=10.0, gt=0, le=10_000)
    """Hub commands per second accepted for one entity (token bucket); the gateway as a whole takes
    :data:`~gateway.mqtt.inlet.TOTAL_FACTOR` times this. Beyond it a command is refused with
    ``rejected: rate limit``, answered once per burst (docs/mqtt.md, *Floods*)."""
    command_burst: int = Field(default=20, ge=1, le=100_000)
    """Hub commands one entity may receive at once before :attr:`command_rate` applies (the bucket's depth)."""
    event_batches: bool = False
    """Send events as JSON arrays on the one stream topic ``<base>/events`` instead of one message per event on
    ``<base>/event/<entity>`` (docs/mqtt.md, *The event stream*): for hubs that follow many gateways or high-rate
    sensors (paho's cost is per message). Off, the per-entity topics are unchanged; per-entity subscribers need it
    off."""
    event_batch_max: int = Field(default=50, ge=1, le=1000)
    """Events at most in one array of ``<base>/events`` (an array holds one event unless a backlog waits)."""
    event_batch_bytes: int = Field(default=16_384, ge=EVENT_BATCH_BYTES_MIN, le=1_048_576)
    """Bytes at most in one array's payload: well under what brokers and hubs accept in a message."""
    remote_rules: bool = False
    """Accept rule bundles on ``<base>/rules/set`` (docs/fleet.md, *Remote rules*); off, the local rule
    files are the only source of truth."""

    @model_validator(mode="after")
    def _one_password_source(self) -> MqttSection:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set password_file or password_env, not both")
        return self

    @model_validator(mode="after")
    def _hosts_or_host(self) -> MqttSection:
        if self.hosts is not None and self.model_fields_set & {"host", "port"}:
            raise ValueError("set hosts, or host and port, not both (each hosts entry carries its port)")
        return self

    def brokers(self) -> list[tuple[str, int]]:
        """The brokers to try, as configured: ``hosts`` parsed, or the single ``host``/``port``."""
        if self.hosts is None:
            return [(self.host, self.port)]
        return [parse_broker(entry) for entry in self.hosts]

    @model_validator(mode="after")
    def _batches_fit_the_packet_limit(self) -> MqttSection:
        # Only with the stream on: a config written before it (a broker limited below 16 KiB) must still start.
        if self.event_batches and self.max_packet_size is not None and self.event_batch_bytes > self.max_packet_size:
            advice = ("lower event_batch_bytes" if self.max_packet_size >= EVENT_BATCH_BYTES_MIN else
                      f"raise max_packet_size to at least {EVENT_BATCH_BYTES_MIN} (the smallest event_batch_bytes) "
                      "or turn event_batches off")
            raise ValueError(f"event_batch_bytes ({self.event_batch_bytes}) is above max_packet_size "
                             f"({self.max_packet_size}): a full array would be refused by the broker; {advice}")
        return self

    @model_validator(mode="after")
    def _reconnect_range(self) -> MqttSection:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError(f"reconnect_min ({self.reconnect_min:g} s) is above reconnect_max "
                             f"({self.reconnect_max:g} s): the backoff grows from the first to the second")
        return self


class OutboxSection(Section):
    max_events: int = Field(default=200_000, ge=100)
    """Above this readings are shed (superseded ones first), and timer and system events (counted by kind)."""
    reserve: int = Field(default=100_000, ge=0)
    """Room above ``max_events`` that only transitions may use (alarm, availability, rejected, command,
    state, publish): they are shed only past ``max_events + reserve``. See docs/mqtt.md."""
    batch_ms: float = Field(default=20.0, ge=0, le=1000)
    """Commit window: events accepted within it share one SQLite transaction (SD-card wear)."""
    synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL"


class RulesSection(Section):
    dir: Path = Path("rules.d")
    unsynced_clock: Literal["wait", "run"] = "wait"
    """Until NTP has synchronised the clock: ``wait`` holds schedules and makes time conditions
    false; ``run`` uses the clock as it is (traces flag it). See docs/rules.md."""
    trace_size: int = Field(default=20, ge=1, le=1000)
    """Evaluations kept per rule (``gateway traces``)."""
    watch: bool = True
    """Reload the rules when a rule file changes (besides SIGHUP)."""


class BusSection(Section):
    capacity: int = Field(default=10_000, ge=10)


class HistorySection(Section):
    """The event history (``gateway history``, the web page's plots): docs/web.md."""

    enabled: bool = True
    window_days: float = Field(default=7.0, gt=0, le=366)
    """Events older than this are pruned (in the background)."""
    max_mb: float = Field(default=64.0, ge=1, le=16_384)
    """The file's bound: beyond it the oldest events go first, whatever the window."""
    flush_s: float = Field(default=60.0, ge=0.1, le=3600)
    """Events are committed together once per this many seconds (SD-card wear; a power cut loses at most these)."""
    readings_per_s: int = Field(default=10, ge=0, le=100_000)
    """Readings written per entity per second; beyond it only the newest of the second is kept (a flood of
    readings costs a bounded number of rows; every other event is written). 0: every reading."""


LISTEN = r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"


class WebSection(Section):
    """The local web page (docs/web.md): off unless ``enabled``; every page needs the password."""

    enabled: bool = False
    listen: str = Field(default="127.0.0.1:8080", pattern=LISTEN)
    """``HOST:PORT``; loopback unless you choose otherwise (``0.0.0.0:8080`` for the LAN)."""
    password_file: Path | None = None
    """A file holding the password (first line); else the environment variable ``GATEWAY_WEB_PASSWORD``."""
    https: bool = False
    """Serve HTTPS with ``[mqtt.tls] cert_file`` and ``key_file``."""
    commands: bool = False
    """Let the page switch outputs (through the hub's validation, authority and rate limits)."""

    @field_validator("listen")
    @classmethod
    def _port_range(cls, value: str) -> str:
        port = int(value.rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is out of range 1-65535")
        return value

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class Config(BaseModel):
    # defer_build: a house with devices validates with its own subclass (config_model), so this one's
    # validator is built only for a file without devices.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    # A section the file leaves out is validated from an empty table by this model's validator, which holds
    # each section's schema: a default instance (``= MqttSection()``) built a validator of its own per section
    # at import, a second build of each at every start (docs/performance.md).
    gateway: GatewaySection
    mqtt: MqttSection = Field(default_factory=empty_dict, validate_default=True)
    outbox: OutboxSection = Field(default_factory=empty_dict, validate_default=True)
    rules: RulesSection = Field(default_factory=empty_dict, validate_default=True)
    bus: BusSection = Field(default_factory=empty_dict, validate_default=True)
    history: HistorySection = Field(default_factory=empty_dict, validate_default=True)
    web: WebSection = Field(default_factory=empty_dict, validate_default=True)
    devices: list[DeviceConfig] = Field(default_factory=empty_list)
    """Each device as its driver's own model: :func:`parse_config` validates with :func:`config_model`,
    whose ``devices`` is the discriminated union of the models of the drivers the file names."""
    mqtt_entities: list[MqttEntityConfig] = Field(default_factory=empty_list, max_length=500)
    """Values other devices publish on MQTT, heard as readings (gateway/mqtt/foreign.py, docs/rules.md)."""
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _unique_ids(self) -> Config:
        seen: dict[str, str] = {}
        for driver in self.drivers():
            for spec in driver.entities():
                if spec.id in seen:
                    raise ValueError(
                        f"entity id {spec.id!r} of device {driver.id!r} is already used by device {seen[spec.id]!r}"
                    )
                seen[spec.id] = driver.id
        for index, foreign in enumerate(self.mqtt_entities):
            if foreign.id in seen:
                raise ValueError(f"mqtt_entities[{index}].id: {foreign.id!r} is already used by "
                                 f"{seen[foreign.id]!r}")
            seen[foreign.id] = f"mqtt_entities[{index}]"
        return self

    @model_validator(mode="after")
    def _web_https_has_files(self) -> Config:
        if self.web.enabled and self.web.https and (
            self.mqtt.tls is None or self.mqtt.tls.cert_file is None or self.mqtt.tls.key_file is None
        ):
            raise ValueError("web.https: needs [mqtt.tls] cert_file and key_file (the page uses the same files)")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _wired_as_the_board_allows(cls, data: Any, handler: ModelWrapValidatorHandler[Config]) -> Config:
        """Each device's pins valid for the Pi header, none claimed twice or by a bus a device needs
        (SPI0, UART0), no serial port or SPI chip select twice (:func:`drivers.board.conflicts`).

        A wrap validator, so that a bad pin is reported together with every other mistake of the file:
        when the rest fails, the pins the installer wrote are still checked (on the raw table)."""
        try:
            config = handler(data)
        except ValidationError as exc:
            extra = _raw_pin_errors(data)
            if not extra:
                raise
            known = [InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"], ctx=e.get("ctx", {}))
                     for e in exc.errors()]
            raise ValidationError.from_exception_data(exc.title, [*known, *extra]) from None
        found = conflicts(config.devices)
        if found:
            raise ValidationError.from_exception_data(cls.__name__, [
                _wiring_error(c.index, c.key, c.value, c.message) for c in found
            ])
        return config

    @property
    def base_topic(self) -> str:
        return self.mqtt.base_topic or f"gateway/{self.gateway.id}"

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"gateway-{self.gateway.id}"

    def drivers(self) -> list[Driver]:
        """Fresh driver objects for the configured devices (nothing is opened)."""
        return [DRIVERS[device.driver](device) for device in self.devices]

    def entities(self) -> dict[str, EntitySpec]:
        """Every entity rules may name: the devices' and the ``[[mqtt_entities]]``."""
        return {**self.device_entities(), **{foreign.id: foreign.spec() for foreign in self.mqtt_entities}}

    def device_entities(self) -> dict[str, EntitySpec]:
        """The devices' entities: the gateway's own, announced to the hub."""
        return {spec.id: spec for driver in self.drivers() for spec in driver.entities()}


def _wiring_error(index: int, key: str, value: object, message: str) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("wiring", message.replace("{", "{{").replace("}", "}}")),
                            loc=("devices", index, key), input=value)


def _raw_pin_errors(data: Any) -> list[InitErrorDetails]:
    """Bad pins of a device table that did not validate: each ``pin`` an int or a string gpiozero refuses."""
    devices = data.get("devices") if isinstance(data, dict) else None
    out: list[InitErrorDetails] = []
    for index, device in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(device, dict):
            continue
        for key, value in device.items():
            if (key == "pin" or key.endswith("_pin")) and isinstance(value, int | str):
                try:
                    bcm_number(value)
                except ValueError as exc:
                    out.append(_wiring_error(index, key, value, str(exc)))
    return out


def load_config(path: Path | str) -> Config:
    """Read and validate ``path``; raise :class:`ConfigError` naming the file and every bad key."""
    path = Path(path)
    try:
        data = tomllib.loads(read_installer_file(path, MAX_CONFIG_BYTES))
    except FileRefused as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: {too_deep()}"]) from None
    return parse_config(data, path)


def parse_config(data: dict[str, Any], path: Path, *, machine_id: Path = MACHINE_ID) -> Config:
    """Validate parsed TOML; :class:`ConfigError` with every problem, located (deep nesting included).
    ``machine_id``: where an unset ``gateway.id`` is derived from."""
    if nesting(data) > MAX_NESTING:
        raise ConfigError([f"{path}: {too_deep()}"])
    try:
        config = config_model(_driver_names(data)).model_validate(data, context={"machine_id": machine_id})
    except ValidationError as exc:
        raise ConfigError(list(format_errors(path, exc, data))) from None
    except RecursionError:
        raise ConfigError([f"{path}: {too_deep()}"]) from None
    return _resolve_paths(config, path)


def _driver_names(data: dict[str, Any]) -> frozenset[str]:
    """The ``driver`` names the device tables give, as written (unknown ones included); every name when
    devices exist but none gives one (each is then told what it lacks, as by the union of every driver)."""
    devices = data.get("devices")
    if not isinstance(devices, list) or not devices:
        return frozenset()
    names = frozenset(d["driver"] for d in devices if isinstance(d, dict) and isinstance(d.get("driver"), str))
    return names or frozenset(DRIVERS)


@functools.cache
def config_model(names: frozenset[str]) -> type[Config]:
    """:class:`Config` whose ``devices`` is the discriminated union of the models of the drivers ``names``
    gives (the others are never imported: :data:`drivers.registry.DRIVERS` is lazy).

    A file without devices validates with :class:`Config` itself. A file whose devices name only unknown
    drivers gets the union of every driver, so that each is reported as unknown, with a did-you-mean, as
    before; an unknown name next to known ones is reported the same way by the smaller union (the message
    lists every driver the catalogue has, :func:`drivers.registry.unknown_driver_message`)."""
    if not names:
        return Config
    known = sorted(name for name in names if name in DRIVERS)
    models = tuple(DRIVERS[name].Config for name in (known or DRIVERS))
    union: Any = Annotated[Union[models], Field(discriminator="driver")]  # noqa: UP007 - built at runtime
    model: type[Config] = create_model(
        "Config", __base__=Config, __module__=__name__, devices=(list[union], Field(default_factory=empty_list)),
    )
    return model


def state_dir_problems(config: Config) -> list[str]:
    """For ``gateway check``: ``gateway.state_dir`` when it can never be a directory (a file is in the way).

    ``run`` keeps running without its state directory (local control never depends on storage), so
    this is not a validation error; but the outbox, timers, traces and the last-good copy are then
    lost, and ``check`` says so before. A directory that does not exist yet is fine (``run`` creates
    it); permissions depend on the user the service runs as, which ``check --hardware`` looks at.
    """
    state_dir = config.gateway.state_dir
    source = config.source or "config"
    for candidate in (state_dir, *state_dir.parents):
        try:
            if candidate.is_dir():
                return []
            if candidate.exists() or candidate.is_symlink():
                kind = "a dangling link" if not candidate.exists() else "a file"
                where = "" if candidate == state_dir else f"cannot be created: {candidate} "
                return [f"{source}: gateway.state_dir: {state_dir} {where}is {kind}, not a directory: "
                        f"move it away or choose another state_dir"]
        except OSError as exc:
            return [f"{source}: gateway.state_dir: {state_dir} cannot be examined: {exc.strerror or exc}"]
    return []


def _resolve_paths(config: Config, path: Path) -> Config:
    base = path.resolve().parent
    gateway = config.gateway.model_copy(update={"state_dir": base / config.gateway.state_dir})
    rules = config.rules.model_copy(update={"dir": base / config.rules.dir})
    update: dict[str, Any] = {"gateway": gateway, "rules": rules, "source": path}
    if config.web.password_file is not None:
        update["web"] = config.web.model_copy(update={"password_file": base / config.web.password_file})
    return config.model_copy(update=update)


def format_errors(path: Path | str, exc: ValidationError, data: Any = None) -> list[str]:
    """One line per error: ``FILE: dotted.key[index] (id): message (got VALUE)``, each once
    (:func:`core.errors.located_errors`; an unknown driver lists the known ones)."""
    return located_errors(path, exc, data, tags=_TAGS, unknown_tag=_unknown_tag)


_TAGS = ("driver", "step")
"""The discriminators of config.toml's tagged unions: a device's driver, a conditioning step's kind."""


def _unknown_tag(key: str, tag: str, allowed: list[str]) -> str:
    return unknown_driver_message(tag) if key == "driver" else unknown_tag_message(key, tag, allowed)
