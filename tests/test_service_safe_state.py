"""`gateway safe-state`: every actuator to its safe level (the unit's ExecStopPost=), even from a broken config.

The outputs come from the config when its actuator entries validate, else from the last-known-good copy
that every successful start saves (``<state_dir>/outputs.json``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

import gateway.lastgood
from gateway.app import Gateway
from gateway.config import load_config
from gateway.lastgood import OUTPUTS_FILE, save_outputs
from gateway.service import drive_safe_states, safe_state
from gateway.simpins import ReleasedLevelPin
from tests.helpers import RecordingForwarder, write_config
from tests.service_support import CONFIG, RULES, SAFE_LEVELS, GatewayProcess, run_cli, service_config, short_dir


def _pins() -> MockFactory:
    return MockFactory(pin_class=ReleasedLevelPin)


def test_every_actuator_is_released_at_its_safe_level(tmp_path: Path) -> None:
    pins = _pins()
    assert drive_safe_states(load_config(service_config(tmp_path, "svc-safe")).devices, pin_factory=pins) == []
    for name, level in SAFE_LEVELS.items():
        pin = pins.pin(name)
        assert (pin.released, pin.function) == (level, "input")


def test_an_output_left_active_by_a_killed_process_is_driven_back(tmp_path: Path) -> None:
    pins = _pins()
    heater = pins.pin("GPIO23")
    heater.function = "output"
    heater.state = True  # what the kernel kept after SIGKILL: the heater on
    heater.function = "input"
    drive_safe_states(load_config(service_config(tmp_path, "svc-safe")).devices, pin_factory=pins)
    assert heater.released == 0.0


def test_sensors_are_not_touched(tmp_path: Path) -> None:
    pins = _pins()
    drive_safe_states(load_config(service_config(tmp_path, "svc-safe")).devices, pin_factory=pins)
    assert "GPIO17" not in {pin.info.name for pin in pins.pins.values()}


def test_an_actuator_that_cannot_be_opened_does_not_stop_the_others(tmp_path: Path) -> None:
    body = CONFIG.format(gateway_id="svc-safe", port=1883) + (
        '\n[[devices]]\nid = "broken"\ndriver = "gpio.relay"\npin = "GPIO26"\n'
    )
    pins = _pins()
    squatter = DigitalOutputDevice(26, pin_factory=pins)  # GPIO26 is taken: the relay cannot open it
    problems = drive_safe_states(load_config(write_config(tmp_path, body)).devices, pin_factory=pins)
    squatter.close()
    assert len(problems) == 1 and problems[0].startswith("broken: could not reach its safe state")
    assert pins.pin("GPIO23").released == 0.0


def test_the_command_exits_0_on_mock_pins(tmp_path: Path) -> None:
    result = run_cli("safe-state", "--config", str(service_config(tmp_path, "svc-safe")),
                     env={"GPIOZERO_PIN_FACTORY": "mock"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "heater: safe state False" in result.stdout


def test_dimmers_and_sirens_are_driven_to_their_safe_levels(tmp_path: Path) -> None:
    body = CONFIG.format(gateway_id="svc-safe", port=1883) + (
        '\n[[devices]]\nid = "stair_light"\ndriver = "gpio.pwm_light"\npin = 12\nsafe_brightness = 40\n'
        '\n[[devices]]\nid = "alarm"\ndriver = "gpio.siren"\npin = 16\nactive_high = false\n'
    )
    pins = _pins()
    assert drive_safe_states(load_config(write_config(tmp_path, body)).devices, pin_factory=pins) == []
    dimmer = pins.pin("GPIO12")
    assert [s.state for s in dimmer.states][-2:] == [0.4, 0.0]  # safe 40 %, then PWM stops at release
    assert pins.pin("GPIO16").released == 1.0  # active-low siren: high = silent


# -- from a broken config: the config's own outputs, else the last-known-good copy ---------------

def _pins_at_safe_levels(pins: MockFactory) -> dict[str, float | None]:
    return {name: pins.pin(name).released for name in SAFE_LEVELS}


@pytest.fixture(autouse=True)
def no_installed_gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last place safe-state looks is the device's own /var/lib/gateway: on a machine where a gateway ran
    (or is installed), its saved copy would stand in for the one a test means to be missing."""
    monkeypatch.setattr(gateway.lastgood, "DEFAULT_STATE_DIR", tmp_path / "var-lib-gateway")


def _good_config(directory: Path, rules: str = RULES) -> Path:
    return service_config(directory, "svc-safe", rules=rules)


def _save_last_good(config_path: Path) -> Path:
    """What every successful start does (``Gateway.start`` calls :func:`save_outputs`)."""
    config = load_config(config_path)
    save_outputs(config)
    return config.gateway.state_dir / OUTPUTS_FILE


def _break(config_path: Path, old: str, new: str) -> None:
    text = config_path.read_text()
    assert old in text
    config_path.write_text(text.replace(old, new, 1))


def test_a_typo_in_a_sensor_still_drives_every_output_safe_from_the_configs_own_outputs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config_path = _good_config(tmp_path)
    _break(config_path, "pin = 17\n", "pin = 17\ndebounse_ms = 20\n")  # no saved copy exists
    pins = _pins()
    with caplog.at_level(logging.INFO):
        assert safe_state(config_path, pin_factory=pins, env={}) == 0
    assert _pins_at_safe_levels(pins) == SAFE_LEVELS
    assert f"using the outputs of {config_path}" in caplog.text
    assert "debounse_ms: unknown key" in caplog.text


def test_an_invalid_mqtt_port_still_drives_every_output_safe_from_the_configs_own_outputs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config_path = _good_config(tmp_path)
    _break(config_path, "port = 1883", "port = 0")
    pins = _pins()
    with caplog.at_level(logging.INFO):
        assert safe_state(config_path, pin_factory=pins, env={}) == 0
    assert _pins_at_safe_levels(pins) == SAFE_LEVELS
    assert f"using the outputs of {config_path}" in caplog.text


def test_a_toml_syntax_error_drives_every_output_safe_from_the_saved_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config_path = _good_config(tmp_path)
    saved = _save_last_good(config_path)
    _break(config_path, 'id = "heater"', 'id = "heater')
    pins = _pins()
    with caplog.at_level(logging.INFO):
        assert safe_state(config_path, pin_factory=pins, env={}) == 0
    assert _pins_at_safe_levels(pins) == SAFE_LEVELS
    assert "not valid TOML" in caplog.text
    assert "using the last-known-good outputs saved at " in caplog.text
    assert f" in {saved}" in caplog.text


def test_a_config_nested_too_deeply_to_parse_drives_every_output_safe_from_the_saved_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config_path = _good_config(tmp_path)
    _save_last_good(config_path)
    config_path.write_text(config_path.read_text() + "\n[extra]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    pins = _pins()
    with caplog.at_level(logging.INFO):
        assert safe_state(config_path, pin_factory=pins, env={}) == 0
    assert _pins_at_safe_levels(pins) == SAFE_LEVELS
    assert "using the last-known-good outputs" in caplog.text


def test_a_missing_config_drives_every_output_safe_from_the_saved_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config_path = _good_config(tmp_path)
    saved = _save_last_good(config_path)
    config_path.unlink()
    pins = _pins()
    with caplog.at_level(logging.INFO):
        assert safe_state(config_path, state_dir=saved.parent, pin_factory=pins, env={}) == 0
    assert _pins_at_safe_levels(pins) == SAFE_LEVELS
    assert "no such file" in caplog.text and "using the last-known-good outputs" in caplog.text


def test_an_invalid_output_entry_falls_back_on_the_saved_copy_found_through_the_configs_state_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config_path = _good_config(tmp_path)
    _save_last_good(config_path)
    _break(config_path, "pin = 23\nsafe_state = false", "pin = 23\nsafe_state = \"maybe\"")
    pins = _pins()
    with caplog.at_level(logging.INFO):
        assert safe_state(config_path, pin_factory=pins, env={}) == 0
    assert _pins_at_safe_levels(pins) == SAFE_LEVELS  # the heater too, as the last good start knew it
    assert "using the last-known-good outputs" in caplog.text


def test_a_device_with_an_unknown_driver_may_be_an_output_so_the_saved_copy_is_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config_path = _good_config(tmp_path)
    _save_last_good(config_path)
    _break(config_path, 'id = "heater"\ndriver = "gpio.relay"', 'id = "heater"\ndriver = "gpio.rely"')
    pins = _pins()
    with caplog.at_level(logging.INFO):
        assert safe_state(config_path, pin_factory=pins, env={}) == 0
    assert _pins_at_safe_levels(pins) == SAFE_LEVELS
    assert "did you mean 'gpio.relay'?" in caplog.text and "using the last-known-good outputs" in caplog.text


def test_without_a_saved_copy_the_outputs_that_validate_are_still_driven_and_the_command_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config_path = _good_config(tmp_path)
    _break(config_path, "pin = 23\nsafe_state = false", "pin = 23\nsafe_state = \"maybe\"")
    pins = _pins()
    with caplog.at_level(logging.INFO):
        assert safe_state(config_path, pin_factory=pins, env={}) == 1
    assert (pins.pin("GPIO22").released, pins.pin("GPIO24").released) == (1.0, 1.0)
    assert "driving only the 2 output(s)" in caplog.text
    assert "devices[2] (heater): safe_state: Input should be a valid boolean" in caplog.text


def test_a_saved_copy_of_an_unknown_format_version_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config_path = _good_config(tmp_path)
    saved = _save_last_good(config_path)
    saved.write_text(saved.read_text().replace('"version": 1', '"version": 99'))
    _break(config_path, 'id = "heater"', 'id = "heater')
    pins = _pins()
    assert safe_state(config_path, pin_factory=pins, env={}) == 1
    assert "unknown format version 99" in caplog.text
    assert "GPIO23" not in {pin.info.name for pin in pins.pins.values()}


def test_the_saved_copy_is_looked_for_in_systemds_state_directory_when_the_config_names_none(
    tmp_path: Path,
) -> None:
    config_path = _good_config(tmp_path)
    saved = _save_last_good(config_path)
    config_path.write_text("this is not TOML")
    pins = _pins()
    assert safe_state(config_path, pin_factory=pins, env={"STATE_DIRECTORY": str(saved.parent)}) == 0
    assert _pins_at_safe_levels(pins) == SAFE_LEVELS


def test_without_a_config_or_a_saved_copy_the_command_fails_and_says_why(tmp_path: Path) -> None:
    result = run_cli("safe-state", "--config", str(tmp_path / "missing.toml"), "--state-dir", str(tmp_path / "state"),
                     env={"GPIOZERO_PIN_FACTORY": "mock"})
    assert result.returncode == 1
    assert "missing.toml cannot be read (no such file)" in result.stdout
    assert f"no last-known-good outputs in {tmp_path / 'state'}" in result.stdout
    assert "no output was driven to its safe state" in result.stdout


@pytest.fixture
def directory() -> Iterator[Path]:
    """Short enough for the AF_UNIX sockets of a real ``gateway run``."""
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_after_a_real_start_the_command_drives_the_saved_outputs_when_the_config_is_gone(directory: Path) -> None:
    config_path = _good_config(directory)
    gateway = GatewayProcess.start(directory, config_path)
    try:
        gateway.wait_ready()
        assert gateway.stop() == 0
    finally:
        gateway.close()
    config_path.unlink()
    result = run_cli("safe-state", "--config", str(config_path), "--state-dir", str(directory / "state"),
                     env={"GPIOZERO_PIN_FACTORY": "mock"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "using the last-known-good outputs saved at" in result.stdout
    assert "heater: safe state False" in result.stdout


# -- what a start saves ----------------------------------------------------------------------

def _started_config(directory: Path) -> Path:
    """No rules: the subject is what a start saves, not what the house does."""
    return _good_config(directory, rules="version = 1\n")


def _start_and_stop(config_path: Path) -> None:
    gateway = Gateway(load_config(config_path), pin_factory=_pins(), forwarder=RecordingForwarder())
    gateway.start()
    gateway.shutdown()


def test_a_start_saves_the_outputs_and_only_the_outputs(tmp_path: Path) -> None:
    config_path = _started_config(tmp_path)
    _start_and_stop(config_path)
    saved = json.loads((tmp_path / "state" / OUTPUTS_FILE).read_text())
    assert saved["version"] == 1
    assert [device["id"] for device in saved["devices"]] == ["hall_light", "heater", "vent_damper"]


def test_a_second_start_with_the_same_outputs_does_not_rewrite_the_saved_copy(tmp_path: Path) -> None:
    config_path = _started_config(tmp_path)
    _start_and_stop(config_path)
    before = (tmp_path / "state" / OUTPUTS_FILE).stat()
    _break(config_path, 'id = "hall_motion"', 'id = "hall_motion"\nname = "Hall motion"')  # a sensor, not an output
    _start_and_stop(config_path)
    after = (tmp_path / "state" / OUTPUTS_FILE).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_start_with_changed_outputs_replaces_the_saved_copy(tmp_path: Path) -> None:
    config_path = _started_config(tmp_path)
    _start_and_stop(config_path)
    _break(config_path, "pin = 23", "pin = 25")
    _start_and_stop(config_path)
    saved = json.loads((tmp_path / "state" / OUTPUTS_FILE).read_text())
    assert [device["pin"] for device in saved["devices"]] == [22, 25, 24]
