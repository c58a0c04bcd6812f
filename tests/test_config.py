"""config.toml: every mistake is reported at once, located by file and key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from tests.helpers import write_config

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = """
[gateway]
id = "test-gw"

[[devices]]
id = "hall_light"
driver = "gpio.relay"
pin = 22
"""


def problems(tmp_path: Path, body: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, body))
    return caught.value.problems


def test_the_shipped_config_is_valid() -> None:
    config = load_config(ROOT / "config.toml")
    assert config.gateway.id == "house-01"
    assert (config.mqtt.host, config.mqtt.port) == ("localhost", 1883)
    assert {"hall_motion", "front_door", "living_temperature", "hall_light", "heater", "siren"} <= set(
        config.entities()
    )


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, MINIMAL))
    assert config.rules.dir == tmp_path.resolve() / "rules.d"


def test_an_unknown_key_is_an_error_that_names_the_file_and_the_key_path(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + "colour = 'red'\n")
    assert found == [f"{tmp_path / 'config.toml'}: devices[0] (hall_light).colour: unknown key"]


def test_a_misspelt_driver_gets_a_did_you_mean(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace("gpio.relay", "gpio.realy"))
    assert len(found) == 1
    assert "devices[0] (hall_light).driver: unknown driver 'gpio.realy'; did you mean 'gpio.relay'?" in found[0]


def test_a_device_without_a_driver_is_told_which_key_is_missing(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace('driver = "gpio.relay"\n', ""))
    assert found == [f"{tmp_path / 'config.toml'}: devices[0] (hall_light): missing 'driver'"]


def test_a_mistake_inside_a_conditioning_step_is_located_at_the_key_the_installer_wrote(tmp_path: Path) -> None:
    body = MINIMAL + '[[devices]]\nid = "door"\ndriver = "gpio.input"\npin = 5\n' \
        '[[devices.conditioning]]\nstep = "debounce"\ndebounse_ms = 20\n'
    found = problems(tmp_path, body)
    assert f"{tmp_path / 'config.toml'}: devices[1] (door).conditioning[0].debounse_ms: unknown key" in found


def test_a_value_the_message_already_quotes_is_not_repeated(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace('id = "test-gw"', 'id = "test-gw"\ntimezone = "Mars/Olympus"'))
    assert found == [f"{tmp_path / 'config.toml'}: gateway.timezone: unknown time zone 'Mars/Olympus' "
                     "(use an IANA name such as 'Europe/London')"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    body = MINIMAL.replace("pin = 22", "pin = 22\nsafe_state = 'maybe'") + "[mqtt]\nport = 0\n"
    found = problems(tmp_path, body)
    assert any("mqtt.port: Input should be greater than or equal to 1 (got 0)" in p for p in found)
    assert any("devices[0] (hall_light).safe_state:" in p for p in found)


def test_two_devices_cannot_claim_the_same_entity(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + MINIMAL.split("\n", 4)[4].replace("pin = 22", "pin = 23"))
    assert any("'hall_light'" in p and "already used" in p for p in found)


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    found = problems(tmp_path, "[gateway\nid = 1\n")
    assert found[0].startswith(f"{tmp_path / 'config.toml'}: not valid TOML")
    assert "line 1" in found[0]


def test_an_unknown_time_zone_is_explained(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace('id = "test-gw"', 'id = "test-gw"\ntimezone = "Europe/Lodnon"'))
    assert "gateway.timezone: unknown time zone 'Europe/Lodnon'" in found[0]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
    )


def test_check_accepts_the_shipped_config_with_a_one_line_summary() -> None:
    result = run_cli("check", "--config", str(ROOT / "config.toml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and "OK" in result.stdout


def test_check_rejects_a_broken_config_with_one_line_per_problem_and_no_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path, MINIMAL + "[mqtt]\nport = 'x'\nbogus = 1\n")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2


def test_run_with_a_broken_config_exits_1_without_a_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[gateway]\nid = 'Bad Id'\n")
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 1
    assert "gateway.id" in result.stderr and "Traceback" not in result.stderr


# The wiring: pins valid for the Pi header, none claimed twice or by a bus a device needs.

MCP3008 = '[[devices]]\nid = "pot"\ndriver = "analog.mcp3008"\nchannel = 0\n'


def relay(ident: str, pin: object) -> str:
    shown = f'"{pin}"' if isinstance(pin, str) else str(pin)
    return f'[[devices]]\nid = "{ident}"\ndriver = "gpio.relay"\npin = {shown}\n'


def serial(ident: str, port: str) -> str:
    return (f'[[devices]]\nid = "{ident}"\ndriver = "serial.kv"\nport = "{port}"\n'
            f'fields.t = {{ entity = "{ident}_t" }}\n')


@pytest.mark.parametrize("pin", [99, -3, "seventeen", "BOARD6", "GPIO28", "gpio17"])
def test_a_pin_the_pi_header_does_not_have_is_refused_at_its_key(tmp_path: Path, pin: object) -> None:
    found = problems(tmp_path, MINIMAL.replace("pin = 22", f"pin = {pin!r}".replace("'", '"')))
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path / 'config.toml'}: devices[0] (hall_light).pin: ")
    assert "BCM number" in found[0]


@pytest.mark.parametrize("pin", [17, "17", "GPIO17", "BCM17", "BOARD11", "J8:11", "WPI0"])
def test_every_spelling_gpiozero_accepts_for_a_pin_is_accepted(tmp_path: Path, pin: object) -> None:
    shown = f'"{pin}"' if isinstance(pin, str) else str(pin)
    load_config(write_config(tmp_path, MINIMAL.replace("pin = 22", f"pin = {shown}")))


def test_a_bad_pin_is_reported_together_with_the_other_mistakes_of_the_file(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace("pin = 22", "pin = 99") + "[mqtt]\nport = 0\n")
    assert any("mqtt.port:" in p for p in found)
    assert any("devices[0] (hall_light).pin: 99 is not a GPIO pin" in p for p in found)


def test_two_devices_on_one_pin_are_refused_at_the_second_naming_the_first(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + relay("fan", 5) + relay("heater", "BOARD15"))
    assert found == [f"{tmp_path / 'config.toml'}: devices[2] (heater).pin: GPIO22 is already used by "
                     "devices[0] (hall_light) (got 'BOARD15')"]


def test_a_relay_on_an_spi_pin_beside_an_mcp3008_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + MCP3008 + relay("fan", 10))
    assert found == [f"{tmp_path / 'config.toml'}: devices[2] (fan).pin: GPIO10 is SPI0's MOSI pin, which "
                     "devices[1] (pot) needs (SPI0 takes GPIO 7, 8, 9, 10, 11): choose another pin"]


def test_an_spi_pin_is_free_for_gpio_when_no_device_uses_spi(tmp_path: Path) -> None:
    load_config(write_config(tmp_path, MINIMAL + relay("fan", 10)))


def test_an_input_on_the_uart_pins_beside_a_serial_device_on_serial0_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + serial("air", "/dev/serial0") + relay("door", "GPIO15"))
    assert len(found) == 1
    assert "devices[2] (door).pin: GPIO15 is UART0's RXD pin, which devices[1] (air) needs" in found[0]


def test_the_uart_pins_are_free_when_the_serial_device_is_on_usb(tmp_path: Path) -> None:
    load_config(write_config(tmp_path, MINIMAL + serial("air", "/dev/ttyUSB0") + relay("door", 15)))


def test_one_serial_port_for_two_devices_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + serial("a", "/dev/ttyUSB0") + serial("b", "/dev/ttyUSB0"))
    assert found == [f"{tmp_path / 'config.toml'}: devices[2] (b).port: '/dev/ttyUSB0' is already used by "
                     "devices[1] (a): one serial port serves one device"]


def test_two_adcs_on_one_chip_select_are_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL + MCP3008 + MCP3008.replace('"pot"', '"pot2"'))
    assert len(found) == 1
    assert "devices[2] (pot2).spi_device: SPI0 chip select CE0 is already used by devices[1] (pot)" in found[0]


def test_pin_factory_accepts_gpiozeros_names_and_refuses_others(tmp_path: Path) -> None:
    with_lgpio = MINIMAL.replace('id = "test-gw"', 'id = "test-gw"\npin_factory = "lgpio"')
    config = load_config(write_config(tmp_path, with_lgpio))
    assert config.gateway.pin_factory == "lgpio"
    found = problems(tmp_path, MINIMAL.replace('id = "test-gw"', 'id = "test-gw"\npin_factory = "wiringpi"'))
    assert len(found) == 1 and "gateway.pin_factory:" in found[0]


def test_event_batches_are_off_by_default_with_caps_of_50_events_and_16_kib() -> None:
    config = load_config(ROOT / "config.toml")
    assert (config.mqtt.event_batches, config.mqtt.event_batch_max, config.mqtt.event_batch_bytes) == (
        False, 50, 16_384)


def test_an_event_batch_of_no_events_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace("[[devices]]", "[mqtt]\nevent_batches = true\nevent_batch_max = 0\n\n"
                                                              "[[devices]]"))
    assert found == [
        f"{tmp_path / 'config.toml'}: mqtt.event_batch_max: Input should be greater than or equal to 1 (got 0)"]


def test_an_event_batch_larger_than_the_brokers_packet_limit_is_an_error_that_says_why(tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace("[[devices]]", "[mqtt]\nevent_batches = true\nmax_packet_size = 8192\n\n"
                                                              "[[devices]]"))
    assert found == [f"{tmp_path / 'config.toml'}: mqtt: event_batch_bytes (16384) is above max_packet_size (8192): "
                     "a full array would be refused by the broker; lower event_batch_bytes"]


def test_a_packet_limit_below_the_smallest_array_says_to_raise_the_limit_not_to_lower_the_array(
        tmp_path: Path) -> None:
    found = problems(tmp_path, MINIMAL.replace("[[devices]]", "[mqtt]\nevent_batches = true\nmax_packet_size = 512\n\n"
                                                              "[[devices]]"))
    assert found == [f"{tmp_path / 'config.toml'}: mqtt: event_batch_bytes (16384) is above max_packet_size (512): "
                     "a full array would be refused by the broker; raise max_packet_size to at least 1024 (the "
                     "smallest event_batch_bytes) or turn event_batches off"]


def test_a_packet_limit_below_the_default_array_size_is_accepted_while_event_batches_are_off(tmp_path: Path) -> None:
    # A config written before event batches existed (a broker limited to 8 KiB) must still start after an upgrade:
    # event_batch_bytes only matters when the stream is on.
    config = load_config(write_config(tmp_path, MINIMAL.replace("[[devices]]", "[mqtt]\nmax_packet_size = 8192\n\n"
                                                                               "[[devices]]")))
    assert (config.mqtt.event_batches, config.mqtt.max_packet_size) == (False, 8192)
