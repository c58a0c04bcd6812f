"""``gateway check --hardware``: on the device, what ``gateway run`` will open, checked before it runs.

Plain ``gateway check`` already refused what cannot work on any board (bad
pins, a pin claimed twice or by a bus a device needs, a port twice:
:mod:`drivers.board`). The doctor looks at *this* board::

    ok       pin factory: lgpio
    PROBLEM  devices[3] (pot): /dev/spidev0.0 is missing: SPI is off
             -> fix: add `dtparam=spi=on` to /boot/firmware/config.txt or run `sudo raspi-config nonint do_spi 0`, ...
    warning  broker localhost:1883 is not reachable (Connection refused)
             -> fix: start the broker (`sudo systemctl enable --now mosquitto`) or correct [mqtt] host and port

One finding per line, each problem with its fix. A **problem** is something
``run`` cannot open (no pin factory, a missing port, SPI off, a group the
service user lacks, a state directory it cannot write): exit status 1. A
**warning** is something ``run`` survives but an installer wants to know (the
broker unreachable: local rules run and events queue; the clock not
synchronised: schedules wait): exit status 0 if nothing else is wrong.

Every filesystem look-up goes through ``Machine.root`` (``/`` on a board), so
tests run the doctor against a fake ``/dev``, ``/sys``, ``/boot`` and ``/etc``
in a temporary directory; the pin factory, the TCP connect and the clock check
are injectable too.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from drivers.base import DeviceConfig
from drivers.board import (
    I2C1,
    ONEWIRE_ENABLE,
    SPI0,
    UART0,
    UART_PORTS,
    NoPinFactory,
    Uses,
    bcm_number,
    load_pin_factory,
    uses,
)
from gateway.config import Config

if TYPE_CHECKING:
    from gpiozero import Factory

Level = Literal["ok", "warning", "problem"]

SERVICE_USER = "gateway"
"""The system user the unit runs as (``User=gateway``); checked when the doctor runs as root."""

BROKER_TIMEOUT = 3.0
"""Seconds to wait for the broker's TCP handshake."""


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    text: str
    fix: str | None = None

    def __str__(self) -> str:
        head = {"ok": "ok      ", "warning": "warning ", "problem": "PROBLEM "}[self.level]
        return f"{head} {self.text}" + (f"\n          -> fix: {self.fix}" if self.fix else "")


def _tcp_connect(host: str, port: int, timeout: float) -> None:
    with socket.create_connection((host, port), timeout=timeout):
        pass


def _probe_i2c(path: str, address: int) -> None:
    """Is a chip at ``address`` on the bus at ``path``? A quick write (address, no data: what ``i2cdetect``
    does): a chip acknowledges, an empty address raises ``OSError`` (Remote I/O error). Never starts a
    measurement or changes a register."""
    from smbus2 import SMBus

    with SMBus(path) as bus:
        bus.write_quick(address)


def _default_clock_check() -> bool:
    from rules.schedule import clock_synchronised

    return clock_synchronised()


@dataclass(slots=True)
class Machine:
    """The board as the doctor sees it: every seam a test replaces."""

    root: Path = Path("/")
    """Prefix for /dev, /sys, /boot, /etc and /proc look-ups."""
    load_factory: Callable[[str], tuple[Factory, str]] = load_pin_factory
    connect: Callable[[str, int, float], None] = _tcp_connect
    clock_synchronised: Callable[[], bool] = _default_clock_check
    euid: Callable[[], int] = os.geteuid
    probe_i2c: Callable[[str, int], None] = _probe_i2c
    """``probe_i2c(device node, address)``: returns if a chip acknowledges, raises ``OSError`` if not."""
    user: str | None = None
    """Whose groups to check; None: :data:`SERVICE_USER` when run as root, else the current user."""

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")


@dataclass(slots=True)
class Report:
    findings: list[Finding] = field(default_factory=list)

    def ok(self, text: str) -> None:
        self.findings.append(Finding("ok", text))

    def warning(self, text: str, fix: str | None = None) -> None:
        self.findings.append(Finding("warning", text, fix))

    def problem(self, text: str, fix: str) -> None:
        self.findings.append(Finding("problem", text, fix))

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def summary(self) -> str:
        return (f"hardware: {len(self.problems)} problem(s), {len(self.warnings)} warning(s), "
                f"{len(self.findings) - len(self.problems) - len(self.warnings)} ok")


def examine(config: Config, machine: Machine | None = None) -> Report:
    """Every finding about this board for ``config``, in a fixed order (see the module's docstring)."""
    machine = machine or Machine()
    report = Report()
    devices = [(i, d, uses(d)) for i, d in enumerate(config.devices)]
    boot = BootConfig.read(machine)
    _pin_factory(config, machine, devices, report)
    _pins_held_by_the_kernel(boot, devices, report)
    _serial_ports(machine, boot, devices, report)
    _buses(machine, devices, report)
    _onewire(machine, devices, report)
    _i2c_chips(machine, devices, report)
    _groups(machine, devices, report)
    _state_dir(config.gateway.state_dir, report)
    _broker(config, machine, report)
    _clock(machine, report)
    return report


Device = tuple[int, DeviceConfig, Uses]


def _name(index: int, device: DeviceConfig) -> str:
    return f"devices[{index}] ({device.id})"


def _pin_factory(config: Config, machine: Machine, devices: Sequence[Device], report: Report) -> None:
    needing = [_name(i, d) for i, d, u in devices if u.needs_pin_factory]
    if not needing:
        report.ok("pin factory: no device needs GPIO")
        return
    try:
        factory, name = machine.load_factory(config.gateway.pin_factory)
    except NoPinFactory as exc:
        report.problem(f"no GPIO pin factory loads (tried {exc.reasons}); "
                       f"{len(needing)} device(s) need one: {', '.join(needing)}", exc.fix)
        return
    factory.close()
    if name == "native":
        report.warning("pin factory: native (no PWM, no Pi 5)",
                       "install python3-lgpio (and create the venv with --system-site-packages)")
    else:
        report.ok(f"pin factory: {name}")
    if name in ("lgpio", "native") and not any(machine.path("/dev").glob("gpiochip*")):
        report.problem("no /dev/gpiochip*: the kernel offers no GPIO character device",
                       "run on a Raspberry Pi with Raspberry Pi OS bookworm or trixie, or use --simulate")


@dataclass(frozen=True, slots=True)
class BootConfig:
    """What ``config.txt`` and ``cmdline.txt`` enable (all ``[section]`` filters read as if they apply)."""

    spi: bool = False
    i2c: bool = False
    uart: bool = False
    onewire_pin: int | None = None
    serial_console: str | None = None
    """The ``console=`` of ``cmdline.txt`` that is the header's UART, if any."""

    @classmethod
    def read(cls, machine: Machine) -> BootConfig:
        text = _first_text(machine, "/boot/firmware/config.txt", "/boot/config.txt") or ""
        params: dict[str, str] = {}
        onewire: int | None = None
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            key, _, value = line.partition("=")
            if key == "dtparam":
                params.update(_options(value))
            elif key == "enable_uart":
                params["enable_uart"] = value
            elif key == "dtoverlay" and value.split(",")[0] == "w1-gpio":
                opts = _options(value.partition(",")[2])
                onewire = int(opts["gpiopin"]) if opts.get("gpiopin", "").isdigit() else 4
        console = None
        cmdline = _first_text(machine, "/boot/firmware/cmdline.txt", "/boot/cmdline.txt") or ""
        for word in cmdline.split():
            if word.startswith("console=") and f"/dev/{word[8:].split(',')[0]}" in UART_PORTS:
                console = word
        on = ("on", "true", "yes", "1", "")
        return cls(params.get("spi") in on, params.get("i2c_arm", params.get("i2c")) in on,
                   params.get("enable_uart") == "1", onewire, console)


def _options(text: str) -> dict[str, str]:
    """``a=on,b`` -> ``{"a": "on", "b": ""}``."""
    out: dict[str, str] = {}
    for item in text.split(","):
        key, _, value = item.strip().partition("=")
        if key:
            out[key] = value
    return out


def _first_text(machine: Machine, *paths: str) -> str | None:
    for path in paths:
        try:
            return machine.path(path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
    return None


def _pins_held_by_the_kernel(boot: BootConfig, devices: Sequence[Device], report: Report) -> None:
    """GPIO devices on the pins of a bus or overlay that config.txt turns on (the kernel holds them)."""
    held: dict[int, tuple[str, str]] = {}
    for bus, on, off in ((SPI0, boot.spi, "`dtparam=spi=off`"), (I2C1, boot.i2c, "`dtparam=i2c_arm=off`"),
                         (UART0, boot.uart, "`enable_uart=0`")):
        if on:
            held.update({pin: (f"{bus.name}'s {role} (on in config.txt)", off) for pin, role in bus.pins.items()})
    if boot.onewire_pin is not None:
        held[boot.onewire_pin] = ("the 1-wire bus's (dtoverlay=w1-gpio in config.txt)", "remove `dtoverlay=w1-gpio`")
    users = {bus for _, _, u in devices for bus in u.buses}
    for index, device, use in devices:
        for _key, value in use.pins:
            bcm = bcm_number(value)  # the config validated it
            if bcm in held and not any(bcm in bus.pins for bus in users):
                what, off = held[bcm]
                report.problem(f"{_name(index, device)}: GPIO{bcm} is {what} pin: the kernel holds it",
                               f"choose another pin, or turn that off in /boot/firmware/config.txt ({off}) and reboot")


def _serial_ports(machine: Machine, boot: BootConfig, devices: Sequence[Device], report: Report) -> None:
    seen: dict[Path, str] = {}
    for index, device, use in devices:
        port = use.serial_port
        if port is None:
            continue
        who = _name(index, device)
        if "://" in port:
            report.ok(f"{who}: {port} is a pyserial URL (not checked)")
            continue
        node = machine.path(port)
        if not node.exists():
            fix = (UART0.enable if port in UART_PORTS
                   else "plug the adapter in and check `ls -l /dev/serial/by-id/`; correct `port`")
            report.problem(f"{who}: serial port {port} is missing", fix)
            continue
        real = node.resolve()
        if real in seen:
            report.problem(f"{who}: serial port {port} is the same device as {seen[real]}'s",
                           "one serial port serves one device")
        seen.setdefault(real, who)
        stable = _by_id(machine, Path(port).name) if Path(port).name.startswith(("ttyUSB", "ttyACM")) else None
        if stable is not None:
            report.warning(f"{who}: serial port {port} is present, but its number can change at the next plug-in",
                           f"use port = \"{stable}\"")
        else:
            report.ok(f"{who}: serial port {port} present")
        if port in UART_PORTS and boot.serial_console is not None:
            report.problem(f"{who}: the serial login console ({boot.serial_console} in cmdline.txt) is on {port}",
                           "turn it off: `sudo raspi-config nonint do_serial_cons 1`, then reboot")


def _by_id(machine: Machine, name: str) -> str | None:
    """The ``/dev/serial/by-id/...`` link that points at ``/dev/<name>``, if any."""
    folder = machine.path("/dev/serial/by-id")
    try:
        links = sorted(folder.iterdir())
    except OSError:
        return None
    for link in links:
        try:
            if Path(os.readlink(link)).name == name:
                return f"/dev/serial/by-id/{link.name}"
        except OSError:
            continue
    return None


def _buses(machine: Machine, devices: Sequence[Device], report: Report) -> None:
    for index, device, use in devices:
        for bus in use.buses:
            if bus is UART0:
                continue  # a serial port: checked with the ports
            node = f"spidev0.{use.spi_select or 0}" if bus is SPI0 else bus.node
            if machine.path(f"/dev/{node}").exists():
                report.ok(f"{_name(index, device)}: /dev/{node} present")
            else:
                report.problem(f"{_name(index, device)}: /dev/{node} is missing: {bus.name} is off", bus.enable)


def _onewire(machine: Machine, devices: Sequence[Device], report: Report) -> None:
    for index, device, use in devices:
        if use.onewire_base is None:
            continue
        who = _name(index, device)
        base = machine.path(use.onewire_base)
        if not base.is_dir():
            report.problem(f"{who}: no 1-wire bus at {use.onewire_base}", ONEWIRE_ENABLE)
            continue
        present = sorted(p.name for p in base.glob("28-*"))
        wanted = getattr(device, "sensor", None)
        if wanted is not None and wanted not in present:
            found = ", ".join(present) or "none"
            report.problem(f"{who}: 1-wire sensor {wanted} is not on the bus (found: {found})",
                           "check its wiring and the 4.7 kΩ pull-up, or correct `sensor`")
        elif wanted is None and len(present) != 1:
            fix = ("check the wiring and the 4.7 kΩ pull-up" if not present
                   else f"name one with sensor = \"{present[0]}\" (found: {', '.join(present)})")
            report.problem(f"{who}: {len(present)} DS18B20 sensors on the bus, and no `sensor` names one", fix)
        else:
            report.ok(f"{who}: 1-wire sensor {wanted or present[0]} present")


def _i2c_chips(machine: Machine, devices: Sequence[Device], report: Report) -> None:
    """Each I2C chip probed at its address (when its bus's node exists: a missing bus 1 is reported above)."""
    for index, device, use in devices:
        if use.i2c_address is None:
            continue
        bus, address = use.i2c_address
        node = machine.path(f"/dev/i2c-{bus}")
        who = f"{_name(index, device)}: 0x{address:02X} on /dev/i2c-{bus}"
        if not node.exists():
            if bus != 1:
                report.problem(f"{who}: /dev/i2c-{bus} is missing",
                               "enable the overlay that makes this bus, or set bus = 1 (the header's GPIO2/GPIO3)")
            continue
        try:
            machine.probe_i2c(str(node), address)
        except PermissionError:
            continue  # the group check says what to do
        except OSError as exc:
            wiring = getattr(type(device), "WIRING", "")
            report.problem(f"{who}: no chip answers ({exc.strerror or exc})",
                           f"check 3.3 V, GND, SDA (GPIO2, pin 3), SCL (GPIO3, pin 5) and the pull-ups; "
                           f"`i2cdetect -y {bus}` lists the addresses that answer; correct `address` ({wiring})")
            continue
        report.ok(f"{who}: a chip answers")


def _groups(machine: Machine, devices: Sequence[Device], report: Report) -> None:
    needed: dict[str, str] = {}
    for index, device, use in devices:
        if use.pins:
            needed.setdefault("gpio", _name(index, device))
        if use.serial_port is not None and "://" not in use.serial_port:
            needed.setdefault("dialout", _name(index, device))
        for bus in use.buses:
            if bus is not UART0:
                needed.setdefault(bus.group, _name(index, device))
    if not needed:
        return
    user = machine.user or (SERVICE_USER if machine.euid() == 0 else _current_user())
    groups = _read_groups(machine)
    primary = _primary_group(machine, user)
    if primary is None:
        report.problem(f"user {user} does not exist",
                       f"sudo useradd --system --home-dir /var/lib/gateway --shell /usr/sbin/nologin "
                       f"--groups {','.join(sorted(needed))} {user}")
        return
    for group, who in sorted(needed.items()):
        if group not in groups:
            report.warning(f"group {group} does not exist on this system ({who} needs it)",
                           "on Raspberry Pi OS it does; elsewhere give the user access to the device node")
        elif user in groups[group][1] or groups[group][0] == primary:
            report.ok(f"user {user} is in group {group}")
        else:
            report.problem(f"user {user} is not in group {group} ({who} needs it)",
                           f"sudo usermod -aG {group} {user}, then restart the service (or log in again)")


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _read_groups(machine: Machine) -> dict[str, tuple[str, set[str]]]:
    """group name -> (gid, members) from ``/etc/group``."""
    out: dict[str, tuple[str, set[str]]] = {}
    for line in (_first_text(machine, "/etc/group") or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 4:
            out[parts[0]] = (parts[2], {m for m in parts[3].split(",") if m})
    return out


def _primary_group(machine: Machine, user: str) -> str | None:
    """The user's primary gid from ``/etc/passwd``, None if there is no such user."""
    for line in (_first_text(machine, "/etc/passwd") or "").splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] == user:
            return parts[3]
    return None


def _state_dir(state_dir: Path, report: Report) -> None:
    existing = next((p for p in _self_and_parents(state_dir) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        report.problem(f"state directory {state_dir}: {existing} is not a directory",
                       f"remove or move {existing}, or set [gateway] state_dir")
        return
    if existing == state_dir:
        try:
            with tempfile.TemporaryFile(dir=state_dir):
                pass
        except OSError as exc:
            report.problem(f"state directory {state_dir} is not writable ({exc.strerror})",
                           f"sudo chown -R {SERVICE_USER}: {state_dir} (the unit's StateDirectory= makes it)")
            return
        report.ok(f"state directory {state_dir} writable")
    elif existing is not None and os.access(existing, os.W_OK | os.X_OK):
        report.ok(f"state directory {state_dir} will be created")
    else:
        report.problem(f"state directory {state_dir} does not exist and cannot be created",
                       f"sudo install -d -o {SERVICE_USER} -g {SERVICE_USER} {state_dir} "
                       "(the unit's StateDirectory= makes it)")


def _self_and_parents(path: Path) -> Iterator[Path]:
    yield path
    yield from path.parents


def _broker(config: Config, machine: Machine, report: Report) -> None:
    where = f"{config.mqtt.host}:{config.mqtt.port}"
    try:
        machine.connect(config.mqtt.host, config.mqtt.port, BROKER_TIMEOUT)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        report.warning(f"broker {where} is not reachable ({reason}): local rules run, events wait in the outbox",
                       "start the broker (`sudo systemctl enable --now mosquitto`) or correct [mqtt] host and port")
        return
    report.ok(f"broker {where} reachable")


def _clock(machine: Machine, report: Report) -> None:
    if machine.clock_synchronised():
        report.ok("clock synchronised")
    else:
        report.warning("clock not synchronised: schedules and time conditions wait (rules.unsynced_clock)",
                       "check `timedatectl` (NTP service active, network up)")

