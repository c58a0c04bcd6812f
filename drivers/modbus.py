"""Modbus RTU over RS-485: energy meters, heat pumps, inverters; one line, several slaves, one bus owner.

A ``modbus.rtu`` device is one RS-485 line (one serial port, usually a USB
adapter) and the slaves wired to it. Each slave has an id (1..247), a poll
interval and a register map: the entities it reads (``registers``), the
holding registers the gateway may write (``outputs``), or a built-in
``preset`` (``"sdm120"``: voltage, current, power, frequency and import
energy of an Eastron SDM120-style meter, named ``<prefix>_voltage``...).

How the line is driven:

* **One bus owner.** Every transaction (a poll's read, an output's write)
  holds the line's lock from request to answer, so no two transactions
  interleave on the wire; polls run on the device's own timer thread, one after
  another, ``gap_s`` of silence between them; a write from the dispatcher waits
  at most for the transaction in progress.
* **Grouped reads.** Registers of one slave and one table whose addresses are
  consecutive (or at most ``max_gap`` apart) are read in one request
  (:func:`drivers.modbus_map.plan_reads`).
* **A failing slave is isolated.** A slave that does not answer (timeout), or
  answers with a bad CRC, fails its poll: its entities become unavailable, one
  WARNING says so (repeats are counted, not logged), and it is asked again after
  a backoff that doubles from its ``poll_s`` up to ``retry_max_s``. The other
  slaves keep their schedule: a dead slave costs the line one timeout per
  backoff step, never one per poll. An exception answer (illegal address) is
  counted and logged once too, but only that read's entities go unavailable:
  the slave is there. When the slave answers again, its entities come back,
  its outputs are driven to their safe value and that state is posted, so the
  actuator authority drives them to whatever the claims in force want
  (a heat pump that lost power forgot the setpoint it had).
* **Setpoints** are writable holding registers that take a number within
  ``minimum``..``maximum`` (a ``number`` entity), with a required ``safe_value``
  written at the same moments as an output's safe state.
* **Outputs** are writable holding registers (a relay coil mapped to a
  register, a heat pump's enable flag): on/off, each with a declared
  ``safe_state``, written at start, at stop and when the driver fails, and
  enveloped like any actuator (:mod:`drivers.envelope`). A write to a slave
  that is known not to answer fails at once (the authority holds the output at
  its safe value until the slave is back) rather than keeping the dispatcher
  waiting for a timeout.

Config example::

    [[devices]]
    id = "rs485"
    driver = "modbus.rtu"
    port = "/dev/serial/by-id/usb-FTDI_USB_RS485_A1B2C3-if00-port0"
    baudrate = 9600
    parity = "N"
    timeout_s = 0.5

    [[devices.slaves]]
    slave = 1
    name = "house meter"
    preset = "sdm120"
    prefix = "mains"            # mains_voltage, mains_power, mains_energy ...
    poll_s = 10

    [[devices.slaves]]
    slave = 10
    name = "heat pump"
    poll_s = 30
    outputs = [{ entity = "heatpump_boost", address = 200, safe_state = false }]

    [[devices.slaves.registers]]
    entity = "heatpump_flow"
    address = 100
    type = "int16"
    scale = 0.1
    unit = "°C"

    [[devices.slaves.registers]]
    entity = "heatpump_hours"
    address = 110
    type = "uint32"
    word_order = "little"
    state_class = "total_increasing"
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.entities import MEASUREMENT, Component, EntitySpec
from core.events import Kind, Value
from core.fields import empty_list
from core.logonce import LogOnce
from core.values import is_on
from drivers.base import Actuator, DeviceConfig, DriverContext, DriverError, Simulator
from drivers.channel import Channel
from drivers.envelope import EnvelopeConfig
from drivers.modbus_map import (
    PRESETS,
    WORDS,
    Block,
    Function,
    RegisterType,
    Span,
    WordOrder,
    crc_ok,
    decode,
    encode,
    overlaps,
    plan_reads,
)
from drivers.timing import Handle

if TYPE_CHECKING:
    from drivers.modbus_client import OpenedClient

log = logging.getLogger(__name__)

ENTITY_ID = r"^[a-z][a-z0-9_]*$"

StateClass = Literal["measurement", "total", "total_increasing"]


def _fits(address: int, kind: str) -> None:
    if address + WORDS[kind] - 1 > 0xFFFF:
        raise ValueError(f"a {kind} at address {address} would run past register 65535")


class ModbusRegisterConfig(BaseModel):
    """One value read from a slave: ``value = decoded * scale + offset``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    entity: str = Field(pattern=ENTITY_ID, max_length=64)
    address: int = Field(ge=0, le=0xFFFF)
    """The register number as sent on the wire, from 0. Manuals that count from 1 (``30001``, ``40001``)
    mean address 0: subtract 30001 (input) or 40001 (holding)."""
    function: Function = "holding"
    """``holding`` (function code 3) or ``input`` (function code 4)."""
    type: RegisterType = "uint16"
    word_order: WordOrder = "big"
    """For 32-bit types: ``big`` (high word first, Eastron) or ``little`` (low word first)."""
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    device_class: str | None = None
    state_class: StateClass | None = None
    """Home Assistant's: ``total_increasing`` for an energy or hours counter; default ``measurement``."""
    sim_value: float | None = None
    """``--simulate`` only: a typical reading the twin wanders around."""

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, scale: float) -> float:
        if scale == 0:
            raise ValueError("scale 0 would make every reading the offset")
        return scale

    @model_validator(mode="after")
    def _within_the_map(self) -> ModbusRegisterConfig:
        _fits(self.address, self.type)
        return self

    def value(self, registers: Sequence[int]) -> float:
        raw = decode(registers, self.type, self.word_order)
        return raw * self.scale + self.offset


class ModbusOutputConfig(BaseModel):
    """A writable holding register driven on/off: ``on_value`` for on, ``off_value`` for off."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    entity: str = Field(pattern=ENTITY_ID, max_length=64)
    address: int = Field(ge=0, le=0xFFFF)
    type: Literal["int16", "uint16", "int32", "uint32"] = "uint16"
    word_order: WordOrder = "big"
    on_value: int = 1
    off_value: int = 0
    safe_state: bool
    """Required: where the output goes at start, at stop, when the driver fails and when the slave returns."""
    default_state: bool | None = None
    """Where it goes while nothing claims it (gateway/authority.py); unset: ``safe_state``."""
    component: Literal["switch", "light", "siren"] = "switch"
    device_class: str | None = None
    envelope: EnvelopeConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModbusOutputConfig:
        _fits(self.address, self.type)
        if self.on_value == self.off_value:
            raise ValueError(f"on_value and off_value are both {self.on_value}: on could not be told from off")
        for name in ("on_value", "off_value"):
            try:
                encode(getattr(self, name), self.type)
            except ValueError:
                raise ValueError(f"{name} {getattr(self, name)} does not fit a {self.type} register") from None
        return self

    @property
    def safe(self) -> Value:
        return self.safe_state

    def raw(self, on: bool) -> list[int]:
        return encode(self.on_value if on else self.off_value, self.type, self.word_order)

    def registers_for(self, value: Value) -> list[int]:
        return self.raw(is_on(value))

    def confirm(self, value: Value) -> Value:
        return is_on(value)

    def spec(self) -> EntitySpec:
        return EntitySpec(self.entity, Component(self.component), device_class=self.device_class,
                          safe_value=self.safe_state, default=self.default_state)


class ModbusSetpointConfig(BaseModel):
    """A writable holding register that takes a number (a heat pump's flow temperature, an inverter's
    export limit): ``raw = (value - offset) / scale``, within ``minimum``..``maximum``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    entity: str = Field(pattern=ENTITY_ID, max_length=64)
    address: int = Field(ge=0, le=0xFFFF)
    type: RegisterType = "int16"
    word_order: WordOrder = "big"
    scale: float = 1.0
    offset: float = 0.0
    minimum: float
    maximum: float
    safe_value: float
    """Required: the value written at start, at stop, when the driver fails and when the slave returns."""
    default_value: float | None = None
    """The value while nothing claims it; unset: ``safe_value``."""
    unit: str | None = None
    device_class: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModbusSetpointConfig:
        _fits(self.address, self.type)
        if self.scale == 0:
            raise ValueError("scale 0 would write every value as the same register")
        if self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum:g} is above maximum {self.maximum:g}")
        for name in ("safe_value", "default_value"):
            value = getattr(self, name)
            if value is not None and not self.minimum <= value <= self.maximum:
                raise ValueError(f"{name} {value:g} is outside minimum..maximum ({self.minimum:g}..{self.maximum:g})")
        for bound in (self.minimum, self.maximum):
            try:
                self.registers_for(bound)
            except ValueError:
                raise ValueError(f"{bound:g} does not fit a {self.type} register at scale {self.scale:g}") from None
        return self

    @property
    def safe(self) -> Value:
        return self.safe_value

    def registers_for(self, value: Value) -> list[int]:
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else self.safe_value
        return encode((number - self.offset) / self.scale, self.type, self.word_order)

    def confirm(self, value: Value) -> Value:
        """What the register now holds, in the entity's unit (an int16 at scale 0.5 holds 45.5, not 45.7)."""
        number = decode(self.registers_for(value), self.type, self.word_order) * self.scale + self.offset
        return round(number, 6)

    def spec(self) -> EntitySpec:
        return EntitySpec(self.entity, Component.NUMBER, unit=self.unit, device_class=self.device_class,
                          safe_value=self.safe_value, default=self.default_value, minimum=self.minimum,
                          maximum=self.maximum, step=abs(self.scale))


Writable = ModbusOutputConfig | ModbusSetpointConfig


class ModbusSlaveConfig(BaseModel):
    """One device on the line."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    slave: int = Field(ge=1, le=247)
    """Its Modbus id (address), set on the device (a meter's front panel, a DIP switch)."""
    name: str | None = None
    preset: Literal["sdm120"] | None = None
    prefix: str | None = Field(default=None, pattern=ENTITY_ID, max_length=48)
    """With a preset: the entities are ``<prefix>_voltage``, ``<prefix>_energy``..."""
    registers: list[ModbusRegisterConfig] = Field(default_factory=empty_list)
    outputs: list[ModbusOutputConfig] = Field(default_factory=empty_list)
    setpoints: list[ModbusSetpointConfig] = Field(default_factory=empty_list)
    poll_s: float = Field(default=10.0, ge=0.1, le=86_400)
    max_gap: int = Field(default=0, ge=0, le=124)
    """Unmapped registers one request may read over to join two groups (0: only consecutive ones)."""

    @model_validator(mode="after")
    def _a_valid_map(self) -> ModbusSlaveConfig:
        if (self.preset is None) != (self.prefix is None):
            raise ValueError("a preset needs a prefix for its entities (prefix = \"house\" gives house_voltage...), "
                             "and a prefix is only for a preset")
        if not self.all_registers() and not self.writables():
            raise ValueError("a slave needs registers, outputs, setpoints or a preset")
        problems = [f"{a.key} ({a.function} {a.address}..{a.address + a.words - 1}) overlaps {b.key} "
                    f"({b.function} {b.address}..{b.address + b.words - 1})"
                    for a, b in overlaps(self.spans()) + overlaps(self.output_spans())]
        if problems:
            raise ValueError("; ".join(problems) + ": each register belongs to one value")
        return self

    def all_registers(self) -> list[ModbusRegisterConfig]:
        """The preset's registers (if any), then the ones configured."""
        preset = [
            ModbusRegisterConfig(entity=f"{self.prefix}_{p.suffix}", address=p.address, function=p.function,
                                 type=p.kind, word_order=p.word_order, unit=p.unit, device_class=p.device_class,
                                 state_class=p.state_class, sim_value=p.sim_value)
            for p in PRESETS.get(self.preset or "", ())
        ]
        return preset + list(self.registers)

    def spans(self) -> list[Span]:
        return [Span(r.function, r.address, WORDS[r.type], r.entity) for r in self.all_registers()]

    def output_spans(self) -> list[Span]:
        return [Span("holding", o.address, WORDS[o.type], o.entity) for o in self.writables()]

    def writables(self) -> list[Writable]:
        return [*self.outputs, *self.setpoints]

    @property
    def label(self) -> str:
        return f"slave {self.slave}" + (f" ({self.name})" if self.name else "")


class ModbusLineConfig(DeviceConfig):
    driver: Literal["modbus.rtu"]
    port: str = Field(min_length=1)
    """A device path (prefer ``/dev/serial/by-id/...``) or a pyserial URL."""
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = Field(default=0.5, gt=0, le=10)
    """How long a slave may take to answer before the request counts as unanswered."""
    gap_s: float = Field(default=0.01, ge=0, le=5)
    """Silence between two transactions (at least 3.5 characters; slow slaves like more)."""
    retry_max_s: float = Field(default=300.0, gt=0, le=3600)
    """The longest backoff for a slave that does not answer."""
    slaves: list[ModbusSlaveConfig] = Field(min_length=1)

    @field_validator("slaves")
    @classmethod
    def _distinct(cls, slaves: list[ModbusSlaveConfig]) -> list[ModbusSlaveConfig]:
        problems: list[str] = []
        ids: dict[int, int] = {}
        entities: dict[str, int] = {}
        for index, slave in enumerate(slaves):
            if slave.slave in ids:
                first = ids[slave.slave]
                problems.append(f"slaves[{index}] has id {slave.slave}, like slaves[{first}]: two devices with "
                                "one id on one line answer together and garble each other; give each its own")
            ids.setdefault(slave.slave, index)
            for entity in [r.entity for r in slave.all_registers()] + [o.entity for o in slave.writables()]:
                if entity in entities:
                    problems.append(f"slaves[{index}]: entity {entity!r} is already defined by "
                                    f"slaves[{entities[entity]}]")
                entities.setdefault(entity, index)
        if problems:
            raise ValueError("; ".join(problems))
        return slaves

    def serial_port(self) -> str | None:
        return self.port


@dataclass(slots=True)
class _Slave:
    """A slave's running state: its read plan, schedule and outage."""

    config: ModbusSlaveConfig
    blocks: list[Block]
    registers: dict[str, ModbusRegisterConfig]
    next_at: float = 0.0
    delay: float = 0.0
    online: bool | None = None
    failures: int = 0
    outage: LogOnce = field(default_factory=lambda: LogOnce(log))
    refusals: LogOnce = field(default_factory=lambda: LogOnce(log))
    timer: Handle | None = None


class ModbusError(DriverError):
    """A transaction failed: no answer, a bad CRC, an exception answer, or the port is away."""


class ModbusRefused(ModbusError):
    """The slave answered with an exception (illegal address, busy...): it is there, the request was wrong."""


class ModbusLine(Actuator[ModbusLineConfig]):
    """One RS-485 line and its slaves (see the module docstring)."""

    Config: ClassVar[type[DeviceConfig]] = ModbusLineConfig

    def __init__(self, config: ModbusLineConfig) -> None:
        super().__init__(config)
        self._bus = threading.RLock()
        """The line: held from request to answer (the one bus owner)."""
        self._client: OpenedClient | None = None
        self._ctx: DriverContext | None = None
        self._slaves: list[_Slave] = []
        self._outputs: dict[str, tuple[_Slave, Writable]] = {}
        self.channels: dict[str, Channel] = {}
        self._stopped = threading.Event()
        self._last_end = 0.0
        self._port = LogOnce(log)
        self.counters: dict[str, int] = dict.fromkeys(
            ("transactions", "timeouts", "crc_errors", "exceptions", "writes", "write_failures", "port_failures",
             "invalid_values"), 0)

    # -- the contract -----------------------------------------------------------------------------

    def entities(self) -> Sequence[EntitySpec]:
        specs: list[EntitySpec] = []
        for slave in self.config.slaves:
            for r in slave.all_registers():
                specs.append(EntitySpec(r.entity, Component.SENSOR, unit=r.unit, device_class=r.device_class,
                                        report_interval=slave.poll_s, state_class=r.state_class or MEASUREMENT))
            specs += [o.spec() for o in slave.writables()]
        return specs

    def envelope(self) -> Mapping[str, EnvelopeConfig]:
        """On/off outputs' declared envelopes (setpoints get the default limits every writable entity has)."""
        return {o.entity: o.envelope for s in self.config.slaves for o in s.outputs if o.envelope is not None}

    def start(self, ctx: DriverContext) -> None:
        from drivers.modbus_client import OpenedClient

        if ctx.open_serial is None:
            raise RuntimeError("no serial opener in the driver context")
        cfg = self.config
        self._ctx = ctx
        self._stopped.clear()
        self._client = OpenedClient(cfg.port, ctx.open_serial, on_packet=self._packet, baudrate=cfg.baudrate,
                                    parity=cfg.parity, stopbits=cfg.stopbits, bytesize=cfg.bytesize,
                                    timeout=cfg.timeout_s, name=self.id, framing=not ctx.simulate)
        now = ctx.clock.monotonic()
        self._slaves = []
        for sc in cfg.slaves:
            registers = {r.entity: r for r in sc.all_registers()}
            slave = _Slave(sc, plan_reads(sc.spans(), max_gap=sc.max_gap), registers, next_at=now, delay=sc.poll_s)
            self._slaves.append(slave)
            for r in registers.values():
                self.channels[r.entity] = Channel(ctx, r.entity, unit=r.unit)
            for o in sc.writables():
                self._outputs[o.entity] = (slave, o)
        for slave in self._slaves:
            if slave.config.writables():
                self._assert_safe(slave, "safe state at start")
            self._schedule(slave, now)

    def apply(self, entity: str, value: Value) -> Value:
        """Write the output's register; the slave's echo is the confirmation. Raises :class:`ModbusError`."""
        slave, out = self._outputs[entity]
        if slave.online is False:
            raise ModbusError(f"{slave.config.label} on {self.config.port} does not answer")
        self._write(slave, out, value)
        return out.confirm(value)

    def to_safe_state(self) -> None:
        for slave, out in self._outputs.values():
            try:
                self._write(slave, out, out.safe)
            except Exception as exc:
                log.error("%s: %s: could not write the safe state of %s: %s", self.id, slave.config.label,
                          out.entity, exc)

    def stop(self) -> None:
        self._stopped.set()
        for slave in self._slaves:
            if slave.timer is not None:
                slave.timer.cancel()
                slave.timer = None
        if self._client is not None:
            self.to_safe_state()
            with self._bus:
                self._client.close()
            self._client = None
        for channel in self.channels.values():
            channel.close()
        self.channels = {}
        self._outputs = {}

    def simulator(self) -> Simulator | None:
        from drivers.sim.modbus import ModbusTwin

        return ModbusTwin(self.config)

    def stats(self) -> dict[str, int]:
        offline = sum(1 for s in self._slaves if s.online is False)
        return self.counters | {"slaves_offline": offline}

    def health_notes(self) -> list[str]:
        """Each slave that does not answer, and when it is asked next (:class:`drivers.supervision.HasHealthNotes`)."""
        notes = []
        for s in self._slaves:
            if s.online is False:
                notes.append(f"{s.config.label}: no answer ({s.failures} failed attempts), retried every {s.delay:g} s")
        return notes

    @property
    def waiting_for_port(self) -> bool:
        client = self._client
        return client is not None and client.open_error is not None

    # -- polling ----------------------------------------------------------------------------------

    def _schedule(self, slave: _Slave, at: float) -> None:
        assert self._ctx is not None
        if not self._stopped.is_set():
            slave.next_at = at
            slave.timer = self._ctx.timers().call_at(at, lambda: self.poll(slave))

    def poll(self, slave: _Slave) -> None:
        """Read every block of ``slave`` once, post what it holds, and schedule its next poll."""
        assert self._ctx is not None
        if self._stopped.is_set():
            return
        failed: str | None = None
        for block in slave.blocks:
            try:
                registers = self._read(slave, block)
            except ModbusRefused as exc:  # the slave answered: only this block's entities are lost
                slave.refusals.holds(logging.WARNING, "%s: %s refuses a read: %s", self.id, slave.config.label, exc)
                for span in block.spans:
                    self.channels[span.key].set_available(False, str(exc))
                continue
            except ModbusError as exc:
                failed = str(exc)
                break
            for span in block.spans:
                reg = slave.registers[span.key]
                value = reg.value(block.registers_of(span, registers))
                if math.isfinite(value):
                    self.channels[span.key].feed(round(value, 6))
                else:  # a float32 NaN: some meters' "no value yet" after power-up
                    self.counters["invalid_values"] += 1
        now = self._ctx.clock.monotonic()
        if failed is None:
            self._answered(slave)
        if slave.online:
            period = slave.config.poll_s
            k = max(1, math.floor((now - slave.next_at) / period) + 1)  # fixed rate; missed polls skipped
            self._schedule(slave, slave.next_at + k * period)
        else:
            if failed is not None:
                self._silent(slave, failed)
            self._schedule(slave, now + slave.delay)

    def _answered(self, slave: _Slave) -> None:
        was = slave.online
        slave.online = True
        slave.delay = slave.config.poll_s
        if was is False:
            slave.outage.ended(logging.INFO, "%s: %s answers again after %d failed attempts",
                               self.id, slave.config.label)
            slave.failures = 0
            self._assert_safe(slave, f"{slave.config.label} answers again: safe state")

    def _silent(self, slave: _Slave, reason: str) -> None:
        slave.failures += 1
        if slave.online is not False:
            slave.online = False
            for r in slave.registers:
                self.channels[r].set_available(False, reason)
            self._post_outputs_unavailable(slave, reason)
        slave.outage.holds(logging.WARNING, "%s: %s on %s: %s; its entities are unavailable, retrying with "
                           "backoff up to every %g s (the other slaves keep polling)", self.id,
                           slave.config.label, self.config.port, reason, self.config.retry_max_s)
        slave.delay = min(max(slave.delay, slave.config.poll_s) * 2, max(self.config.retry_max_s,
                                                                          slave.config.poll_s))

    def _post_outputs_unavailable(self, slave: _Slave, reason: str) -> None:
        ctx = self._ctx
        assert ctx is not None
        for out in slave.config.writables():
            ctx.post(ctx.events.availability(out.entity, False, reason))

    def _assert_safe(self, slave: _Slave, detail: str) -> None:
        """Write each output of ``slave`` to its safe value and post that state (the authority then drives
        it where the claims in force want); a slave that does not take the write is in an outage: its
        entities go unavailable and its next answer to a poll brings this here again."""
        ctx = self._ctx
        assert ctx is not None
        for out in slave.config.writables():
            try:
                self._write(slave, out, out.safe)
            except ModbusError as exc:  # part of the slave's outage: logged once with it, retried by its polls
                self._silent(slave, f"cannot write the safe state of {out.entity}: {exc}")
                return
            ctx.post(ctx.events.make(Kind.STATE, out.entity, out.confirm(out.safe), detail=detail))

    # -- transactions (the one bus owner) ---------------------------------------------------------

    def _read(self, slave: _Slave, block: Block) -> list[int]:
        def read(client: OpenedClient) -> Any:
            fn = client.read_holding_registers if block.function == "holding" else client.read_input_registers
            return fn(block.address, count=block.count, device_id=slave.config.slave)

        response = self._transact(slave, read, f"read {block.function} {block.address}+{block.count}")
        registers: list[int] = list(getattr(response, "registers", []))
        if len(registers) < block.count:
            raise ModbusError(f"short answer: {len(registers)} of {block.count} registers")
        return registers

    def _write(self, slave: _Slave, out: Writable, value: Value) -> None:
        registers = out.registers_for(value)

        def write(client: OpenedClient) -> Any:
            if len(registers) == 1:
                return client.write_register(out.address, registers[0], device_id=slave.config.slave)
            return client.write_registers(out.address, registers, device_id=slave.config.slave)

        self.counters["writes"] += 1
        try:
            self._transact(slave, write, f"write {out.entity}")
        except ModbusError:
            self.counters["write_failures"] += 1
            raise

    def _transact(self, slave: _Slave, call: Callable[[OpenedClient], Any], what: str) -> Any:
        from pymodbus.exceptions import ModbusException

        with self._bus:
            client = self._client
            if client is None:
                raise ModbusError("the line is stopped")
            if not client.connect():
                self.counters["port_failures"] += 1
                self._port.holds(logging.ERROR, "%s: cannot open %s: %s; its slaves are unavailable until it opens",
                                 self.id, self.config.port, client.open_error)
                raise ModbusError(f"cannot open {self.config.port}: {client.open_error}")
            self._port.ended(logging.INFO, "%s: %s open again after %d failed attempts", self.id, self.config.port)
            wait = self._last_end + self.config.gap_s - time.monotonic()
            if wait > 0:
                self._stopped.wait(wait)  # the line's silence between transactions: real time on the wire
            self.counters["transactions"] += 1
            crc_before = self.counters["crc_errors"]
            try:
                response = call(client)
            except ModbusException as exc:
                if self.counters["crc_errors"] == crc_before:
                    self.counters["timeouts"] += 1
                    raise ModbusError(f"no answer to {what} within {self.config.timeout_s:g} s") from exc
                raise ModbusError(f"bad CRC in the answer to {what}") from exc
            except Exception as exc:  # the port went away under us (USB unplugged)
                self.counters["port_failures"] += 1
                client.close()
                raise ModbusError(f"{what}: serial port failed: {exc}") from exc
            finally:
                self._last_end = time.monotonic()
            if response.isError():
                self.counters["exceptions"] += 1
                code = getattr(response, "exception_code", "?")
                raise ModbusRefused(f"exception {code} ({_EXCEPTIONS.get(code, 'unknown')}) to {what}")
            return response

    def _packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus's trace hook: every frame as sent or received; counts answers with a bad CRC."""
        if not sending and data and not crc_ok(data):
            self.counters["crc_errors"] += 1
        return data


_EXCEPTIONS: dict[object, str] = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "slave device failure",
    6: "slave device busy", 11: "gateway target failed to respond",
}
