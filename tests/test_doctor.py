"""`gateway check --hardware` and the pin factory of `run`: a fake /dev, /sys, /boot and /etc in a temporary
directory stand for the board; gpiozero's MockFactory for a pin factory that loads."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from drivers import board
from drivers.board import NoPinFactory
from gateway.app import Gateway, HardwareUnavailable
from gateway.cli import main
from gateway.config import Config, load_config
from gateway.doctor import Machine, Report, examine
from tests.conftest import free_port
from tests.helpers import write_config

RELAY = '[[devices]]\nid = "{id}"\ndriver = "gpio.relay"\npin = {pin}\n'
MCP3008 = '[[devices]]\nid = "pot"\ndriver = "analog.mcp3008"\nchannel = 0\n'
DS18B20 = '[[devices]]\nid = "tank"\ndriver = "onewire.ds18b20"\n'


def serial(port: str, ident: str = "air") -> str:
    return (f'[[devices]]\nid = "{ident}"\ndriver = "serial.kv"\nport = "{port}"\n'
            f'fields.t = {{ entity = "{ident}_t" }}\n')


def config(tmp_path: Path, devices: str, gateway: str = "") -> Config:
    state = tmp_path / "state"
    return load_config(write_config(tmp_path, f'[gateway]\nid = "gw"\nstate_dir = "{state}"\n{gateway}\n{devices}'))


@pytest.fixture
def listening() -> Iterator[int]:
    """A real TCP listener on loopback: a broker's port that accepts."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def fake_board(tmp_path: Path, files: dict[str, str] | None = None, links: dict[str, str] | None = None) -> Path:
    """A root with the files given (path -> text) and symlinks (path -> target); always /dev/gpiochip0
    and a user `gateway` in group gpio only."""
    root = tmp_path / "root"
    everything = {
        "/dev/gpiochip0": "",
        "/etc/passwd": "gateway:x:999:999::/var/lib/gateway:/usr/sbin/nologin\n",
        "/etc/group": "gateway:x:999:\ngpio:x:997:gateway\ndialout:x:20:\nspi:x:996:\ni2c:x:995:\n",
        **(files or {}),
    }
    for path, text in everything.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    for path, target in (links or {}).items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / path.lstrip("/"))
    return root


def machine(root: Path, port: int, *, synced: bool = True, as_root: bool = True) -> Machine:
    return Machine(root=root, clock_synchronised=lambda: synced, euid=lambda: 0 if as_root else 1000,
                   connect=lambda host, _port, timeout: socket.create_connection((host, port), timeout).close())


def lines(report: Report, level: str) -> list[str]:
    return [f"{f.text} | {f.fix}" for f in report.findings if f.level == level]


def test_a_pin_factory_that_loads_is_named(tmp_path: Path, listening: int) -> None:
    cfg = config(tmp_path, RELAY.format(id="light", pin=22), 'pin_factory = "mock"')
    report = examine(cfg, machine(fake_board(tmp_path), listening))
    assert "pin factory: mock | None" in lines(report, "ok")
    assert report.problems == []


def test_no_pin_factory_is_a_problem_whose_fix_is_python3_lgpio_or_simulate(tmp_path: Path, listening: int) -> None:
    def none_loads(name: str) -> tuple[MockFactory, str]:
        raise NoPinFactory(name, {"lgpio": "ModuleNotFoundError: No module named 'lgpio'"})

    doctor = machine(fake_board(tmp_path), listening)
    doctor.load_factory = none_loads
    report = examine(config(tmp_path, RELAY.format(id="light", pin=22)), doctor)
    [problem] = report.problems
    assert "no GPIO pin factory loads (tried lgpio: ModuleNotFoundError" in problem.text
    assert "devices[0] (light)" in problem.text
    assert problem.fix is not None and "install python3-lgpio" in problem.fix and "--simulate" in problem.fix


def test_an_mcp3008_without_spidev_is_told_to_turn_spi_on(tmp_path: Path, listening: int) -> None:
    cfg = config(tmp_path, MCP3008, 'pin_factory = "mock"')
    report = examine(cfg, machine(fake_board(tmp_path), listening))
    [problem] = [f for f in report.problems if "spidev" in f.text]
    assert problem.text == "devices[0] (pot): /dev/spidev0.0 is missing: SPI0 is off"
    assert problem.fix is not None
    assert "`dtparam=spi=on` to /boot/firmware/config.txt" in problem.fix
    assert "`sudo raspi-config nonint do_spi 0`" in problem.fix


def test_an_mcp3008_with_spidev_and_the_user_in_group_spi_is_well(tmp_path: Path, listening: int) -> None:
    root = fake_board(tmp_path, {"/dev/spidev0.0": "", "/etc/group": "gpio:x:997:gateway\nspi:x:996:gateway\n"})
    report = examine(config(tmp_path, MCP3008, 'pin_factory = "mock"'), machine(root, listening))
    assert report.problems == []
    assert "devices[0] (pot): /dev/spidev0.0 present | None" in lines(report, "ok")


def test_the_service_user_outside_a_group_a_device_needs_is_told_how_to_join_it(
    tmp_path: Path, listening: int
) -> None:
    root = fake_board(tmp_path, {"/dev/spidev0.0": ""})
    report = examine(config(tmp_path, MCP3008, 'pin_factory = "mock"'), machine(root, listening))
    [problem] = report.problems
    assert problem.text == "user gateway is not in group spi (devices[0] (pot) needs it)"
    assert problem.fix is not None and problem.fix.startswith("sudo usermod -aG spi gateway")


def test_a_missing_serial_port_is_a_problem(tmp_path: Path, listening: int) -> None:
    report = examine(config(tmp_path, serial("/dev/ttyUSB0")), machine(fake_board(tmp_path), listening))
    assert "devices[0] (air): serial port /dev/ttyUSB0 is missing" in [f.text for f in report.problems]


def test_a_usb_serial_port_by_number_is_told_its_by_id_name(tmp_path: Path, listening: int) -> None:
    by_id = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1B2C3-if00-port0"
    root = fake_board(tmp_path, {"/dev/ttyUSB0": "", "/etc/group": "gpio:x:1:\ndialout:x:20:gateway\n"},
                      links={by_id: "../../ttyUSB0"})
    report = examine(config(tmp_path, serial("/dev/ttyUSB0")), machine(root, listening))
    assert report.problems == []
    [warning] = report.warnings
    assert warning.fix == f'use port = "{by_id}"'


def test_the_serial_login_console_on_the_uart_a_device_uses_is_a_problem(tmp_path: Path, listening: int) -> None:
    root = fake_board(tmp_path, {
        "/dev/ttyAMA0": "", "/boot/firmware/cmdline.txt": "console=serial0,115200 console=tty1 root=/dev/sda2\n",
        "/etc/group": "dialout:x:20:gateway\n",
    }, links={"/dev/serial0": "ttyAMA0"})
    report = examine(config(tmp_path, serial("/dev/serial0")), machine(root, listening))
    [problem] = report.problems
    assert "serial login console (console=serial0,115200 in cmdline.txt)" in problem.text
    assert problem.fix is not None and "raspi-config nonint do_serial_cons 1" in problem.fix


def test_a_missing_uart_is_told_to_enable_it(tmp_path: Path, listening: int) -> None:
    report = examine(config(tmp_path, serial("/dev/serial0")), machine(fake_board(tmp_path), listening))
    [problem, *_] = report.problems
    assert problem.fix is not None and "enable_uart=1" in problem.fix


def test_a_relay_on_a_pin_that_config_txt_gives_to_spi_is_a_problem(tmp_path: Path, listening: int) -> None:
    root = fake_board(tmp_path, {"/boot/firmware/config.txt": "[all]\ndtparam=audio=on,spi=on\n"})
    report = examine(config(tmp_path, RELAY.format(id="fan", pin=10), 'pin_factory = "mock"'),
                     machine(root, listening))
    [problem] = report.problems
    assert problem.text == "devices[0] (fan): GPIO10 is SPI0's MOSI (on in config.txt) pin: the kernel holds it"


def test_an_input_on_the_one_wire_overlays_pin_is_a_problem(tmp_path: Path, listening: int) -> None:
    root = fake_board(tmp_path, {"/boot/firmware/config.txt": "dtoverlay=w1-gpio,gpiopin=17\n"})
    report = examine(config(tmp_path, RELAY.format(id="fan", pin='"BOARD11"'), 'pin_factory = "mock"'),
                     machine(root, listening))
    assert [f.text for f in report.problems] == [
        "devices[0] (fan): GPIO17 is the 1-wire bus's (dtoverlay=w1-gpio in config.txt) pin: the kernel holds it"
    ]


def test_no_one_wire_bus_is_told_to_load_the_overlay(tmp_path: Path, listening: int) -> None:
    report = examine(config(tmp_path, DS18B20), machine(fake_board(tmp_path), listening))
    [problem] = report.problems
    assert problem.text == "devices[0] (tank): no 1-wire bus at /sys/bus/w1/devices"
    assert problem.fix is not None and "dtoverlay=w1-gpio" in problem.fix and "do_onewire 0" in problem.fix


def test_a_named_one_wire_sensor_absent_from_the_bus_lists_those_present(tmp_path: Path, listening: int) -> None:
    root = fake_board(tmp_path, {"/sys/bus/w1/devices/28-0000000000aa/w1_slave": ""})
    body = DS18B20 + 'sensor = "28-0123456789ab"\n'
    report = examine(config(tmp_path, body), machine(root, listening))
    [problem] = report.problems
    assert problem.text == "devices[0] (tank): 1-wire sensor 28-0123456789ab is not on the bus (found: 28-0000000000aa)"


def test_the_only_one_wire_sensor_on_the_bus_is_well(tmp_path: Path, listening: int) -> None:
    root = fake_board(tmp_path, {"/sys/bus/w1/devices/28-0000000000aa/w1_slave": ""})
    report = examine(config(tmp_path, DS18B20), machine(root, listening))
    assert report.problems == []
    assert "devices[0] (tank): 1-wire sensor 28-0000000000aa present | None" in lines(report, "ok")


def test_a_file_in_the_way_of_the_state_directory_is_a_problem(tmp_path: Path, listening: int) -> None:
    (tmp_path / "state").write_text("not a directory")
    report = examine(config(tmp_path, ""), machine(fake_board(tmp_path), listening))
    [problem] = report.problems
    assert problem.text.endswith("state is not a directory")


def test_an_unreachable_broker_is_a_warning_not_a_problem(tmp_path: Path) -> None:
    report = examine(config(tmp_path, ""), machine(fake_board(tmp_path), free_port()))
    assert report.problems == []
    [warning] = report.warnings
    assert "is not reachable" in warning.text
    assert warning.fix is not None and "mosquitto" in warning.fix


def test_an_unsynchronised_clock_is_a_warning(tmp_path: Path, listening: int) -> None:
    report = examine(config(tmp_path, ""), machine(fake_board(tmp_path), listening, synced=False))
    assert [w.text for w in report.warnings] == [
        "clock not synchronised: schedules and time conditions wait (rules.unsynced_clock)"
    ]


def test_check_hardware_exits_1_with_a_problem_and_prints_it_with_its_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, f'[gateway]\nid = "gw"\nstate_dir = "{tmp_path}"\n'
                                  + serial("/dev/ttyNO_SUCH_PORT9"))
    assert main(["check", "--hardware", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM  devices[0] (air): serial port /dev/ttyNO_SUCH_PORT9 is missing\n          -> fix: " in out
    assert "hardware: " in out


def test_check_hardware_exits_0_when_only_warnings_remain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, f'[gateway]\nid = "gw"\nstate_dir = "{tmp_path}"\n[mqtt]\nport = {free_port()}\n')
    assert main(["check", "--hardware", "--config", str(path)]) == 0
    assert "hardware: 0 problem(s)" in capsys.readouterr().out


# `run`: the pin factory is built once; none loads -> one ERROR line and exit 1, no retry storm.

def test_run_refuses_to_start_with_one_error_line_when_no_pin_factory_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(board.FACTORIES, "pigpio", "tests.no_such_gpio_library:Factory")  # "not installed"
    gateway = Gateway(config(tmp_path, RELAY.format(id="light", pin=22), 'pin_factory = "pigpio"'), mqtt=False)
    with caplog.at_level(logging.DEBUG), pytest.raises(HardwareUnavailable) as refused:
        gateway.start()
    assert refused.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith('no GPIO pin factory: set pin_factory = "auto" and install python3-lgpio')
    assert "1 device(s) need GPIO (light): the gateway does not start" in errors[0]
    assert gateway.supervisor is None  # no driver was tried, so none is retried
    gateway.shutdown()


def test_run_builds_the_configured_pin_factory_and_the_devices_run_on_it(tmp_path: Path) -> None:
    gateway = Gateway(config(tmp_path, RELAY.format(id="light", pin=22), 'pin_factory = "mock"'), mqtt=False)
    gateway.start()
    try:
        assert [d.id for d in gateway.running] == ["light"]
    finally:
        gateway.shutdown()


def test_run_needs_no_pin_factory_when_no_device_uses_gpio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(board.FACTORIES, "pigpio", "tests.no_such_gpio_library:Factory")
    gateway = Gateway(config(tmp_path, serial("loop://"), 'pin_factory = "pigpio"'), mqtt=False)
    gateway.start()
    try:
        assert [d.id for d in gateway.running] == ["air"]
    finally:
        gateway.shutdown()


def test_auto_honours_gpiozeros_own_environment_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from drivers.board import load_pin_factory

    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    factory, name = load_pin_factory("auto")
    assert name == "mock"
    factory.close()
