"""The driver reference is true: every example in docs/drivers.md validates, and all of them together
pass ``gateway check`` and run in ``--simulate`` with events from every device."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import ClassVar, get_args

import pytest

from core.events import Kind
from drivers.actuators import Relay
from drivers.base import Actuator, DeviceConfig
from drivers.registry import DRIVERS, catalogue
from gateway.app import Gateway
from gateway.cli import main
from gateway.config import load_config
from tests.helpers import RecordingForwarder, wait_until, write_config

DOC = Path(__file__).resolve().parent.parent / "docs" / "drivers.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
HEADER = '[gateway]\nid = "doc-check"\nstate_dir = "state"\n\n'


def test_the_reference_has_examples() -> None:
    assert len(BLOCKS) >= len(DRIVERS)


def block_id(block: str) -> str:
    """The device's id, to name the example's test."""
    found = re.search(r'id = "(\w+)"', block)
    assert found is not None, block
    return found.group(1)


@pytest.mark.parametrize("block", BLOCKS, ids=[block_id(b) for b in BLOCKS])
def test_every_example_in_the_reference_validates(block: str, tmp_path: Path) -> None:
    load_config(write_config(tmp_path, HEADER + block))


def test_every_driver_has_an_example() -> None:
    shown = set(re.findall(r'driver = "([\w.]+)"', "".join(BLOCKS)))
    assert shown == set(DRIVERS)


def test_gateway_check_accepts_a_config_using_every_driver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, HEADER + "\n".join(BLOCKS))
    assert main(["check", "--config", str(path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_every_driver_shows_events_in_simulation(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, HEADER + "\n".join(BLOCKS)))
    collect = RecordingForwarder()
    gateway = Gateway(config, simulate=True, forwarder=collect, mqtt=False)
    gateway.start()
    runner = threading.Thread(target=gateway.run, name="test-dispatcher")
    runner.start()
    expected: dict[str, set[str]] = {d.id: {s.id for s in d.entities()} for d in gateway.drivers}
    kinds = {d.id: Kind.STATE if isinstance(d, Actuator) else Kind.READING for d in gateway.drivers}

    def silent() -> list[str]:
        seen = {(e.kind, e.entity) for e in list(collect.events)}
        return [dev for dev, entities in expected.items() if not any((kinds[dev], e) in seen for e in entities)]

    try:
        wait_until(lambda: not silent(), timeout=15, what="events from every device")
    except AssertionError:
        pytest.fail(f"no events from {silent()}")
    finally:
        gateway.request_stop()
        runner.join(5)
        gateway.shutdown()



def test_the_house_of_every_new_driver_passes_gateway_check(tmp_path: Path) -> None:
    from tests.houses import drivers_house

    assert main(["check", "--config", str(drivers_house(tmp_path))]) == 0


BAD = HEADER + """
[[devices]]
id = "door"
driver = "gpio.input"
pin = 4
conditioning = [{ step = "debounse", ms = 30 }, { step = "median", window = 3 }]

[[devices]]
id = "boiler"
driver = "gpio.relay"
pin = 5
envelope = { max_switches = 3 }

[[devices]]
id = "air"
driver = "serial.pms5003"
port = "/dev/ttyS0"
fields.pm25 = { entity = "air_pm25" }
"""


def test_driver_config_mistakes_are_each_reported_where_they_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, BAD)
    assert main(["check", "--config", str(path)]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        f"{path}: devices[0] (door).conditioning[0].step: unknown step 'debounse'; did you mean 'debounce'? "
        "(allowed here: debounce, glitch, hold, deadband, throttle)",
        f"{path}: devices[0] (door).conditioning[1].step: unknown step 'median' "
        "(allowed here: debounce, glitch, hold, deadband, throttle)",
        f"{path}: devices[1] (boiler).envelope.max_switches: unknown key",
        f"{path}: devices[2] (air).fields: unknown field 'pm25'; did you mean 'pm2_5'? (this sensor reports: "
        "pm1_0_cf1, pm2_5_cf1, pm10_cf1, pm1_0, pm2_5, pm10, n0_3, n0_5, n1_0, n2_5, n5_0, n10)",
    ]


def test_each_driver_is_listed_under_the_name_its_config_model_declares() -> None:
    for name, cls in DRIVERS.items():
        assert get_args(cls.Config.model_fields["driver"].annotation) == (name,)


def test_the_catalogue_refuses_two_drivers_claiming_one_name() -> None:
    with pytest.raises(ValueError, match=r"'gpio\.relay' claimed by Relay and Relay"):
        catalogue(Relay, Relay)


def test_the_catalogue_refuses_a_driver_whose_model_names_no_driver() -> None:
    class Vague(Relay):
        Config: ClassVar[type[DeviceConfig]] = DeviceConfig

    with pytest.raises(TypeError, match=r"Vague\.Config must narrow driver to one Literal name"):
        catalogue(Vague)


def test_the_catalogue_is_closed() -> None:
    with pytest.raises(TypeError):
        DRIVERS["gpio.lamp"] = Relay  # type: ignore[index]
