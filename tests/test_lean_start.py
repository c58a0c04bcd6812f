"""What `gateway run` loads, and what it leaves out: memory a Raspberry Pi does not pay for (docs/performance.md).

Each check runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests import toml_kit as toml
from tests.helpers import write_config

ROOT = Path(__file__).resolve().parent.parent

STARTED_GATEWAY = """
import json, sys
import gateway.cli, gateway.logs, gateway.mqtt, gateway.service  # what `gateway run` imports besides the app
from gpiozero.pins.mock import MockFactory
from gateway.app import Gateway
from gateway.config import load_config
from tests.helpers import RecordingForwarder

gateway = Gateway(load_config(sys.argv[1]), pin_factory=MockFactory(), forwarder=RecordingForwarder())
gateway.start()
try:
    gateway.engine.wall.poll()
    gateway.dispatcher.drain()
    print(json.dumps(sorted(sys.modules)))
finally:
    gateway.shutdown()
"""

SCHEDULED = """
version = 1

[[rules]]
id = "porch_light_at_dusk"
[[rules.triggers]]
type = "schedule"
cron = "30 18 * * *"
[[rules.actions]]
type = "turn_on"
entity = "porch_light"
"""

DAILY = """
version = 1

[[rules]]
id = "porch_light_at_dusk"
[[rules.triggers]]
type = "schedule"
at = "18:30"
weekdays = ["mon", "fri"]
[[rules.actions]]
type = "turn_on"
entity = "porch_light"
"""

UNSCHEDULED = """
version = 1

[[rules]]
id = "light_follows_door"
[[rules.triggers]]
type = "state"
entity = "door"
to = true
[[rules.actions]]
type = "turn_on"
entity = "porch_light"
"""


def modules_of_a_started_gateway(tmp_path: Path, rules: str) -> set[str]:
    return modules_of_config(gpio_house(tmp_path, rules))


def gpio_house(tmp_path: Path, rules: str) -> Path:
    """A relay and a contact, no schedules of its own: the config's path."""
    text = toml.config(toml.gateway("lean"), toml.relay("porch_light", 22), toml.device("door", "gpio.input", pin=27))
    text += '\n[rules]\nunsynced_clock = "run"\nwatch = false\n'  # schedules start on any clock
    return write_config(tmp_path, text, rules=rules)


def modules_of_config(config: Path) -> set[str]:
    return names_printed_by(STARTED_GATEWAY, config)


def names_printed_by(script: str, argument: Path) -> set[str]:
    """What ``script``, run in a fresh interpreter with ``argument``, prints as a JSON list on its last line:
    a fresh process, so that what it imports or builds is its own and not what the test run loaded."""
    done = subprocess.run([sys.executable, "-c", script, str(argument)], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_a_gateway_without_schedules_never_imports_the_scheduler_nor_multiprocessing(tmp_path: Path) -> None:
    modules = modules_of_a_started_gateway(tmp_path, UNSCHEDULED)
    assert "apscheduler.schedulers.background" not in modules
    assert "multiprocessing" not in modules


def test_a_gateway_with_a_cron_schedule_uses_apscheduler_triggers_but_not_its_scheduler(tmp_path: Path) -> None:
    modules = modules_of_a_started_gateway(tmp_path, SCHEDULED)
    assert "apscheduler.triggers.cron" in modules
    assert "apscheduler.schedulers.background" not in modules
    assert "multiprocessing" not in modules


def test_a_gateway_without_schedules_never_imports_the_cron_trigger_nor_asyncio(tmp_path: Path) -> None:
    modules = modules_of_a_started_gateway(tmp_path, UNSCHEDULED)
    assert "apscheduler.triggers.cron" not in modules
    assert "asyncio" not in modules  # APScheduler's util imports it: 1.4 MB and 14 ms of start-up


def test_a_gateway_whose_schedules_are_daily_times_never_imports_apscheduler_nor_asyncio(tmp_path: Path) -> None:
    # `at` (and `weekdays`) schedules run on DailyAt, the standard library's: only `cron` needs APScheduler.
    modules = modules_of_a_started_gateway(tmp_path, DAILY)
    assert not {name for name in modules if name.split(".")[0] == "apscheduler"}
    assert "asyncio" not in modules


def test_the_shipped_house_never_imports_apscheduler_nor_asyncio(tmp_path: Path) -> None:
    # Its thermostat's daily schedule (rules.d/house.toml) is its only one: 1.6 MB and 18 ms less on a Pi.
    shutil.copytree(ROOT / "rules.d", tmp_path / "rules.d")
    text = (ROOT / "config.toml").read_text()
    assert "\n[rules]\n" in text
    text = text.replace("\n[rules]\n", '\n[rules]\nunsynced_clock = "run"\nwatch = false\n')  # schedules start
    # Its own state directory, not the device's /var/lib/gateway (a start saves the outputs there).
    assert 'state_dir = "/var/lib/gateway"' in text
    text = text.replace('state_dir = "/var/lib/gateway"', f'state_dir = "{tmp_path / "state"}"')
    config = tmp_path / "config.toml"
    config.write_text(text)
    modules = modules_of_config(config)
    assert "rules.thermostat" in modules
    assert not {name for name in modules if name.split(".")[0] == "apscheduler"}
    assert "asyncio" not in modules


def test_a_gpio_house_never_imports_the_analog_i2c_or_onewire_drivers(tmp_path: Path) -> None:
    modules = modules_of_a_started_gateway(tmp_path, UNSCHEDULED)
    assert not {"drivers.analog", "drivers.i2c", "drivers.i2c_sensors", "drivers.onewire"} & modules


LOADED_CONFIG = """
import json, sys
from gateway.config import load_config

load_config(sys.argv[1]).drivers()
print(json.dumps(sorted(sys.modules)))
"""


def test_a_config_imports_only_the_driver_modules_it_names(tmp_path: Path) -> None:
    text = toml.config(toml.gateway("lean"), toml.relay("porch_light", 22), toml.device("door", "gpio.input", pin=27))
    config = write_config(tmp_path, text, rules=UNSCHEDULED)
    modules = names_printed_by(LOADED_CONFIG, config)
    assert {"drivers.gpio", "drivers.actuators"} <= modules
    assert not {"drivers.modbus", "drivers.fan", "drivers.pulse", "drivers.button"} & modules


BUILT_MODELS = """
import json, sys
import gateway.cli, gateway.logs, gateway.mqtt, gateway.service  # what `gateway run` imports besides the app
import pydantic
from gpiozero.pins.mock import MockFactory
from gateway.app import Gateway
from gateway.config import Config, load_config
from tests.helpers import RecordingForwarder

gateway = Gateway(load_config(sys.argv[1]), pin_factory=MockFactory(), forwarder=RecordingForwarder())
gateway.start()
try:
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)
    built = [m for m in subclasses(pydantic.BaseModel)
             if m.__module__.split(".")[0] in {"core", "drivers", "gateway", "rules"} and m.__pydantic_complete__]
    # the house's own `Config` (its drivers' union) has the same name as the base: told apart by identity
    print(json.dumps(sorted(f"{m.__module__}.{m.__qualname__}" + ("" if m is not Config else " (base)")
                            for m in built)))
finally:
    gateway.shutdown()
"""


def test_a_started_gateway_has_built_no_validator_it_has_not_used(tmp_path: Path) -> None:
    # pydantic's defer_build: a model's validator is built at its first use, not at import. The base
    # `Config` (a house with devices validates with a model of its own drivers' union), the conditioning
    # steps and the rule-file blocks the house does not use are never built: start-up CPU (docs/performance.md).
    built = names_printed_by(BUILT_MODELS, gpio_house(tmp_path, UNSCHEDULED))
    assert "gateway.config.Config (base)" not in built
    assert not {name for name in built if name.startswith("drivers.conditioning.")}
    assert "rules.model.Thermostat" not in built
    assert "drivers.envelope.EnvelopeConfig" not in built  # no device declares an `envelope`


def test_a_started_gateway_has_not_built_the_nested_conditions_nor_the_alarm_sensors(tmp_path: Path) -> None:
    # They were built at import (model_rebuild for the recursive union, a default AlarmSensors() instance):
    # the rule file's own validator holds what it needs of them; alone they were 0.3 MB of every start.
    built = names_printed_by(BUILT_MODELS, gpio_house(tmp_path, UNSCHEDULED))
    unused = ("AllCondition", "AnyCondition", "NotCondition", "AlarmSensors")
    assert not {f"rules.model.{name}" for name in unused} & built


def test_a_gateway_started_from_a_valid_config_never_imports_difflib_nor_getpass(tmp_path: Path) -> None:
    # difflib serves the did-you-mean of a mistake, getpass `python -m rules.codes`: neither runs in a start.
    modules = modules_of_a_started_gateway(tmp_path, UNSCHEDULED)
    assert not {"difflib", "getpass"} & modules


CLOCK_FROM_TIMESYNCD = """
import json, sys
from pathlib import Path
from core.clocksync import clock_sync_status

assert clock_sync_status(flag=Path(sys.argv[1])).source == "timesyncd"
print(json.dumps(sorted(sys.modules)))
"""


def test_a_clock_that_timesyncd_vouches_for_is_checked_without_loading_ctypes(tmp_path: Path) -> None:
    # ctypes (0.3 MB) is for the kernel's adjtimex, asked only when timesyncd's flag file is absent.
    flag = tmp_path / "synchronized"
    flag.touch()
    assert "ctypes" not in names_printed_by(CLOCK_FROM_TIMESYNCD, flag)


CHECKED_CONFIG = """
import json, sys
from gateway.cli import main

assert main(["check", "--config", sys.argv[1]]) == 0
print(json.dumps(sorted(sys.modules)))
"""


def test_gateway_check_validates_without_importing_the_engine_nor_the_dispatcher(tmp_path: Path) -> None:
    # systemd runs `gateway check` before every start (ExecStartPre): it needs the rule files' loader, not
    # what runs them (the engine, the controllers, the dispatcher: ~40 ms of every start, docs/performance.md).
    text = toml.config(toml.gateway("lean"), toml.relay("porch_light", 22), toml.device("door", "gpio.input", pin=27))
    config = write_config(tmp_path, text, rules=UNSCHEDULED)
    modules = names_printed_by(CHECKED_CONFIG, config)
    assert "rules.loader" in modules
    assert not {"rules.engine", "gateway.dispatcher", "gateway.assembly"} & modules


def test_a_house_without_a_thermostat_never_imports_the_thermostat_controller(tmp_path: Path) -> None:
    modules = modules_of_a_started_gateway(tmp_path, UNSCHEDULED)
    assert "rules.thermostat" not in modules


def test_a_rule_files_header_is_validated_without_building_the_whole_files_validator(tmp_path: Path) -> None:
    # The loader validates each [[rules]] (and thermostat, alarm, virtual) entry with its own model, then
    # what is left of the file (its `version`, unknown keys): RuleFile's validator embeds every block's
    # schema again, ~5 ms of each start for a table it never sees (docs/performance.md).
    built = names_printed_by(BUILT_MODELS, gpio_house(tmp_path, UNSCHEDULED))
    assert "rules.model.Rule" in built
    assert "rules.model.RuleFile" not in built


def test_a_started_gateway_has_built_no_validator_for_models_only_a_message_or_a_bundle_uses(tmp_path: Path) -> None:
    # Built at import before (no defer_build): the hub's JSON command objects, a remote rule bundle.
    built = names_printed_by(BUILT_MODELS, gpio_house(tmp_path, UNSCHEDULED))
    assert not {"gateway.mqtt.commands._StateObject", "gateway.mqtt.commands._SirenObject",
                "gateway.remote_rules.Bundle"} & built


def test_a_started_gateway_has_built_no_separate_validator_for_models_inside_its_config(tmp_path: Path) -> None:
    # The house's `Config` validator holds a serial field's and an [[mqtt_entities]] entry's schema: a
    # validator of their own, built at import, was a second build of each.
    text = toml.config(toml.gateway("lean"), toml.relay("porch_light", 22), toml.device("door", "gpio.input", pin=27),
                       toml.serial_kv("climate", "temperature", port="loop://"))
    text += '\n[[mqtt_entities]]\nid = "outdoor"\ntopic = "weather/outdoor"\ntype = "number"\n'
    built = names_printed_by(BUILT_MODELS, write_config(tmp_path, text, rules=UNSCHEDULED))
    assert "gateway.config.Config" in built  # the house's own, its devices' union
    assert not {"drivers.serial_line.FieldConfig", "gateway.mqtt.foreign.MqttEntityConfig"} & built


def test_the_config_sections_a_file_leaves_out_are_validated_without_validators_of_their_own(tmp_path: Path) -> None:
    # A default section (`outbox`, `bus`, `web`, ...) was an instance built at import: a validator of its own
    # per section, beside the house's `Config` validator that already holds each section's schema.
    built = names_printed_by(BUILT_MODELS, gpio_house(tmp_path, UNSCHEDULED))
    sections = {"MqttSection", "OutboxSection", "RulesSection", "BusSection", "HistorySection", "WebSection"}
    assert not {f"gateway.config.{name}" for name in sections} & built


def test_a_config_without_its_optional_sections_gets_each_sections_defaults(tmp_path: Path) -> None:
    from gateway.config import BusSection, HistorySection, MqttSection, OutboxSection, WebSection, load_config

    text = toml.config(toml.gateway("lean"), toml.relay("porch_light", 22))
    config = load_config(write_config(tmp_path, text, rules=UNSCHEDULED))
    assert config.outbox == OutboxSection()
    assert config.bus == BusSection()
    assert config.history == HistorySection()
    assert config.web == WebSection()
    assert config.mqtt == MqttSection()


def test_a_gateway_without_remote_rules_never_imports_their_module(tmp_path: Path) -> None:
    # [mqtt] remote_rules is off unless asked for: its module (a pydantic model, staging and swapping of
    # bundles) is imported only by a gateway that takes bundles over MQTT.
    assert "gateway.remote_rules" not in modules_of_a_started_gateway(tmp_path, UNSCHEDULED)


TOKENIZER_USED = STARTED_GATEWAY.replace(
    "    print(json.dumps(sorted(sys.modules)))",
    "    import tokenize\n"
    "    print(json.dumps(['tokenize compiled'] if tokenize._compile.cache_info().currsize else []))",
)


def test_a_started_gateway_never_parses_a_c_functions_text_signature(tmp_path: Path) -> None:
    # pydantic asks each `default_factory` for its signature when it builds a validator; for `list` that is
    # inspect parsing the C type's text signature with tokenize, whose patterns cost 10 ms to compile at the
    # first use (docs/performance.md). The models' factories are Python functions (core/fields.py).
    assert names_printed_by(TOKENIZER_USED, gpio_house(tmp_path, UNSCHEDULED)) == set()


def test_a_gateway_started_as_the_command_starts_it_never_imports_gpiozeros_boards_nor_its_spi_chips(
        tmp_path: Path) -> None:
    # gpiozero's __init__ imports every device it has (boards, SPI chips, the board's own sensors): 42 M instructions,
    # 4 % of a start to READY; the drivers import only the submodules they use (core.lean_imports.lazy_package)
    script = "from core.lean_imports import prepare_lean_process\nprepare_lean_process()\n" + STARTED_GATEWAY
    modules = names_printed_by(script, gpio_house(tmp_path, UNSCHEDULED))
    assert "gpiozero.output_devices" in modules
    assert not {"gpiozero.boards", "gpiozero.spi_devices", "gpiozero.internal_devices", "colorzero.color"} & modules
