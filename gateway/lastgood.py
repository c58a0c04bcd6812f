"""The last-known-good outputs: what ``gateway safe-state`` drives when ``config.toml`` is broken.

``gateway safe-state`` (the unit's ``ExecStopPost=``) is the last line of defence after a crash or a
SIGKILL: the kernel keeps every output at the level the dead process drove, heater on included. It
needs only the outputs, so it must not depend on the rest of the config being valid. An installer
who leaves a typo in a sensor, sets ``mqtt.port = 0`` or truncates the file makes the gateway fail
its start; the outputs must still be driven safe.

Where the outputs come from, in order (:func:`choose_outputs`):

1. the config, if it validates as a whole;
2. the config's own actuator ``[[devices]]`` entries, if each validates on its own and every entry's
   ``driver`` is known (an unknown driver might be an output: the config's list is then not trusted);
3. the copy every successful start saves (:func:`save_outputs`), ``<state_dir>/outputs.json``:
   the validated device tables of the actuators, exactly what the last running gateway drove;
4. as a last resort, those of the config's actuator entries that validate (the run still fails).

The saved copy's state dir is ``--state-dir`` if given; else, in order, the config's
``[gateway] state_dir`` (from a ``state_dir = "..."`` line when the file is not valid TOML),
systemd's ``$STATE_DIRECTORY`` (set by the unit's ``StateDirectory=gateway``) and
``/var/lib/gateway``: the first that holds a usable copy wins.

The file is versioned JSON, written atomically (a temporary file, fsync, rename, fsync of the
directory) and only when the outputs changed, to spare the SD card::

    {"version": 1, "saved_at": "2026-11-29T10:00:00Z", "config": "/etc/gateway/config.toml",
     "gateway": "house", "devices": [{"driver": "gpio.relay", "id": "heater", "pin": 23, ...}]}
"""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from core.errors import FileRefused, read_installer_file
from core.files import write_atomically
from drivers.base import Actuator, DeviceConfig
from drivers.registry import DRIVERS, unknown_driver_message
from gateway.config import MAX_CONFIG_BYTES, Config, ConfigError, format_errors, load_config

log = logging.getLogger(__name__)

OUTPUTS_FILE = "outputs.json"
FORMAT_VERSION = 1
DEFAULT_STATE_DIR = Path("/var/lib/gateway")


class NoOutputs(Exception):
    """Neither the config nor a saved copy describes the outputs: nothing can be driven safe."""


@dataclass(frozen=True, slots=True)
class Outputs:
    """The actuator device tables to drive safe, and where they came from."""

    devices: tuple[DeviceConfig, ...]
    origin: str
    """One line for the journal: which outputs these are and why."""
    fallback: bool = False
    """True when the config's own outputs could not be used."""
    problems: tuple[str, ...] = ()
    """Outputs known to exist that are not in ``devices`` (the command then exits 1)."""


def is_output(driver: str) -> bool:
    """Whether ``driver`` (a config ``driver = "..."`` name) is an actuator."""
    cls = DRIVERS.get(driver)
    return cls is not None and issubclass(cls, Actuator)


def output_devices(config: Config) -> list[DeviceConfig]:
    """The config's actuator device tables, in config order."""
    return [device for device in config.devices if is_output(device.driver)]


# -- saving (every successful start) ---------------------------------------------------------------

def save_outputs(config: Config, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> bool:
    """Save the config's outputs to ``<state_dir>/outputs.json`` unless the file already says the same.

    Returns whether it wrote. Never raises for a file-system problem: the gateway runs on without the
    copy (logged as an error), since refusing to start would leave the outputs to nothing at all.
    """
    path = config.gateway.state_dir / OUTPUTS_FILE
    devices = [device.model_dump(mode="json") for device in output_devices(config)]
    record: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "config": str(config.source) if config.source is not None else None,
        "gateway": config.gateway.id,
        "devices": devices,
    }
    if _unchanged(path, record):
        return False
    record["saved_at"] = now().strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        write_atomically(path, json.dumps(record, indent=1) + "\n")
    except OSError as exc:
        log.error("could not save the last-known-good outputs to %s (gateway safe-state needs them when "
                  "the config is broken): %s", path, exc)
        return False
    log.info("saved the outputs of %d actuator(s) to %s for gateway safe-state", len(devices), path)
    return True


def _unchanged(path: Path, record: Mapping[str, Any]) -> bool:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {k: v for k, v in saved.items() if k != "saved_at"} == record




# -- reading (gateway safe-state) ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SavedOutputs:
    path: Path
    saved_at: str
    devices: tuple[DeviceConfig, ...]
    problems: tuple[str, ...]
    """Saved entries the current drivers no longer accept (after a software update)."""


def load_saved_outputs(state_dir: Path) -> SavedOutputs:
    """The copy in ``state_dir``; :class:`NoOutputs` with the reason if there is no usable one."""
    path = state_dir / OUTPUTS_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoOutputs(f"no last-known-good outputs in {state_dir} (no {OUTPUTS_FILE})") from None
    except OSError as exc:
        raise NoOutputs(f"{path}: cannot read: {exc.strerror}") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise NoOutputs(f"{path}: not valid JSON") from None
    if not isinstance(record, dict) or record.get("version") != FORMAT_VERSION:
        version = record.get("version") if isinstance(record, dict) else None
        raise NoOutputs(f"{path}: unknown format version {version!r} (this gateway reads {FORMAT_VERSION})")
    entries = record.get("devices")
    if not isinstance(entries, list):
        raise NoOutputs(f"{path}: no list of devices")
    devices, problems = _validate_outputs(str(path), entries)
    return SavedOutputs(path, str(record.get("saved_at", "an unknown time")), tuple(devices), tuple(problems))


def _validate_outputs(where: str, entries: Sequence[Any]) -> tuple[list[DeviceConfig], list[str]]:
    """Each actuator entry validated on its own; sensors skipped; problems for what cannot be used.

    An entry whose driver is unknown (or missing) is a problem: it might be an output.
    """
    devices: list[DeviceConfig] = []
    problems: list[str] = []
    for index, entry in enumerate(entries):
        label = f"{where}: devices[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{label}: not a table")
            continue
        if isinstance(entry.get("id"), str):
            label += f" ({entry['id']})"
        driver = entry.get("driver")
        if not isinstance(driver, str) or driver not in DRIVERS:
            known = unknown_driver_message(driver) if isinstance(driver, str) else "no driver"
            problems.append(f"{label}: {known}; it may be an output")
            continue
        if not is_output(driver):
            continue
        try:
            devices.append(DRIVERS[driver].Config.model_validate(entry))
        except ValidationError as exc:
            problems.extend(format_errors(label, exc, entry))
        except Exception as exc:  # e.g. RecursionError from a table nested thousands deep
            problems.append(f"{label}: cannot be validated: {exc}")
    return devices, problems


def choose_outputs(
    config_path: Path, *, state_dir: Path | None = None, env: Mapping[str, str] | None = None,
) -> Outputs:
    """The outputs ``gateway safe-state`` drives (see the module docstring); :class:`NoOutputs` if none."""
    env = os.environ if env is None else env
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        config_problems = exc.problems
    except RecursionError:
        config_problems = [f"{config_path}: nested too deeply"]
    except Exception as exc:  # safe-state must never die on a config it cannot read
        config_problems = [f"{config_path}: {exc}"]
    else:
        return Outputs(tuple(output_devices(config)), f"using the outputs of {config_path}")

    data = _read_toml(config_path)
    first = _first([problem.removeprefix(f"{config_path}: ") for problem in config_problems])
    invalid = f"{config_path} is invalid ({first})" if data is not None else f"{config_path} cannot be read ({first})"
    devices: list[DeviceConfig] = []
    unusable = [f"{config_path}: cannot be read"]
    if data is not None:
        entries = data.get("devices", [])
        if isinstance(entries, list):
            devices, unusable = _validate_outputs(str(config_path), entries)
        else:
            unusable = [f"{config_path}: devices: not a list of tables"]
        if not unusable:
            return Outputs(tuple(devices), f"{invalid}; its outputs validate on their own: "
                                           f"using the outputs of {config_path}")

    reasons = []
    for directory in _state_dirs(config_path, data, state_dir, env):
        try:
            saved = load_saved_outputs(directory)
        except NoOutputs as exc:
            reasons.append(str(exc))
            continue
        origin = f"{invalid}; using the last-known-good outputs saved at {saved.saved_at} in {saved.path}"
        return Outputs(saved.devices, origin, fallback=True, problems=saved.problems)

    if devices:
        origin = (f"{invalid}; {'; '.join(reasons)}; driving only the {len(devices)} output(s) of "
                  f"{config_path} that validate")
        return Outputs(tuple(devices), origin, fallback=True, problems=tuple(unusable))
    raise NoOutputs(f"{invalid}; {'; '.join(reasons)}: no output was driven to its safe state")


def _first(problems: Sequence[str]) -> str:
    more = len(problems) - 1
    return problems[0] + (f"; and {more} more problem{'s' if more > 1 else ''}" if more > 0 else "")


def _read_toml(path: Path) -> dict[str, Any] | None:
    try:
        return tomllib.loads(read_installer_file(path, MAX_CONFIG_BYTES))
    except Exception:  # a FIFO, unreadable, not UTF-8, not TOML, nested too deeply: load_config said which
        return None


_STATE_DIR_LINE = re.compile(r"""^[ \t]*state_dir[ \t]*=[ \t]*(?:"([^"\n]+)"|'([^'\n]+)')""", re.MULTILINE)


def _state_dir_line(config_path: Path) -> str | None:
    """``state_dir = "..."`` read from a config that is not valid TOML."""
    try:
        match = _STATE_DIR_LINE.search(read_installer_file(config_path, MAX_CONFIG_BYTES))
    except (OSError, FileRefused):
        return None
    return (match.group(1) or match.group(2)) if match else None


def _state_dirs(
    config_path: Path, data: Mapping[str, Any] | None, override: Path | None, env: Mapping[str, str],
) -> list[Path]:
    """Where to look for the saved copy, in order (see the module docstring)."""
    if override is not None:
        return [override]
    candidates: list[Path] = []
    if data is not None:
        section = data.get("gateway")
        configured = section.get("state_dir") if isinstance(section, dict) else None
    else:  # not TOML: the line as an installer writes it is still the best guess (a wrong one costs nothing)
        configured = _state_dir_line(config_path)
    if isinstance(configured, str) and configured:
        candidates.append(config_path.resolve().parent / configured)  # relative to the config, as load_config
    systemd = env.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        candidates.append(Path(systemd))
    candidates.append(DEFAULT_STATE_DIR)
    return list(dict.fromkeys(candidates))

