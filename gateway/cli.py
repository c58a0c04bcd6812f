"""The ``gateway`` command.

    gateway run        [--config PATH] [--simulate] [--state-dir DIR]   run the gateway
    gateway check      [--config PATH] [--hardware]                     validate config and rules (and this board)
    gateway simulate   [--config PATH] --events FILE.jsonl             rules in virtual time, actions as JSON lines
    gateway traces     [--config PATH] [RULE] [--last N]               why each rule fired or did not
    gateway status     [--config PATH] [--socket PATH] [--json]         ask the running service
    gateway history    [--config PATH] [--entity E] [--since 2h] [--json] what happened, and why
    gateway safe-state [--config PATH] [--state-dir DIR]                every actuator to its safe state

Exit status: 0 success, 1 invalid config or rules (one line per problem on
stderr), 2 usage error. ``run`` exits 0 after SIGTERM or Ctrl-C once every
actuator is in its safe state; a second Ctrl-C forces an immediate exit;
SIGHUP reloads the rule files. ``status`` exits 3 when the service is not
running (as ``systemctl status`` does) and 1 when it does not answer.
``safe-state`` works from a broken config (the config's own outputs, else the
copy of them the last successful start saved); it exits 1 if any actuator
could not be driven safe, or if no description of the outputs exists.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway")

DEFAULT_CONFIG = Path(os.environ.get("GATEWAY_CONFIG", "config.toml"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) not in (cmd_run, cmd_check):
        gc.enable()  # paused for the start by gateway.__main__; `run` resumes it at the end of its start
    if args.command is None:
        parser.print_help()
        return 2
    result: int = args.handler(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="IoT edge gateway for sensor events")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway")
    _config_option(run)
    run.add_argument("--simulate", action="store_true", help="mock GPIO pins and simulated serial devices")
    run.add_argument("--state-dir", type=Path, help="override gateway.state_dir")
    run.add_argument("--log-level", default=os.environ.get("GATEWAY_LOG_LEVEL", "INFO"))
    run.add_argument("--no-mqtt", action="store_true", help="local rules only: no broker connection")
    _socket_option(run)
    run.add_argument(
        "--pin-dump", type=Path, metavar="FILE",
        help="with --simulate: at exit, write every mock pin's level history as JSON",
    )
    run.set_defaults(handler=cmd_run)

    check = sub.add_parser("check", help="validate the config and the rule files, then exit")
    _config_option(check)
    check.add_argument(
        "--hardware", action="store_true",
        help="on the device: also check what `run` will open (pin factory, ports, buses, 1-wire, groups, "
             "state dir, broker, clock), one line per finding with its fix",
    )
    check.set_defaults(handler=cmd_check)

    sim = sub.add_parser("simulate", help="run the rules in virtual time on a scripted list of events")
    _config_option(sim)
    sim.add_argument("--events", type=Path, required=True, metavar="FILE.jsonl",
                     help="one JSON object per line: a time offset and an entity/value (see docs/rules.md)")
    sim.set_defaults(handler=cmd_simulate)

    traces = sub.add_parser("traces", help="the last evaluations of each rule: why it fired, or did not")
    _config_option(traces)
    traces.add_argument("rule", nargs="?", help="only this rule")
    traces.add_argument("--last", type=int, metavar="N", help="only the last N evaluations")
    traces.add_argument("--simulate", action="store_true", help="read the traces of `gateway run --simulate`")
    traces.add_argument("--state-dir", type=Path, help="override gateway.state_dir")
    traces.set_defaults(handler=cmd_traces)

    status = sub.add_parser("status", help="devices, readings, rule firings and broker link of the running service")
    _config_option(status)
    _socket_option(status)
    status.add_argument(
        "--simulate", action="store_true", help="ask a `gateway run --simulate` of --config instead",
    )
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")
    status.set_defaults(handler=cmd_status)

    history = sub.add_parser("history", help="what happened (from the event history), with causes")
    _config_option(history)
    history.add_argument("--entity", "-e", action="append", default=[], metavar="E",
                         help="only this entity (repeat for more)")
    history.add_argument("--since", default="24h", help="how far back: 90s, 30m, 2h, 1d (default 24h)")
    history.add_argument("--last", type=int, metavar="N", help="only the last N events")
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    history.add_argument("--simulate", action="store_true", help="read the history of `gateway run --simulate`")
    history.add_argument("--state-dir", type=Path, help="override gateway.state_dir")
    history.set_defaults(handler=cmd_history)

    safe = sub.add_parser(
        "safe-state", help="drive every actuator to its safe state (systemd ExecStopPost=), even from a broken config",
    )
    _config_option(safe)
    safe.add_argument(
        "--state-dir", type=Path,
        help="where the last-known-good outputs are saved, used when the config is invalid "
             "(default: the config's gateway.state_dir, else $STATE_DIRECTORY, else /var/lib/gateway)",
    )
    safe.set_defaults(handler=cmd_safe_state)
    return parser


def _socket_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--socket", type=Path, dest="socket",
        help="status socket (default: $RUNTIME_DIRECTORY/control.sock, else /run/gateway/control.sock)",
    )


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", "-c", type=Path, default=DEFAULT_CONFIG,
        help="config file (default: $GATEWAY_CONFIG or ./config.toml)",
    )


def _load(path: Path) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    """Problems (exit 1) and warnings (exit 0) go to stderr, one line each; the summary to stdout.

    With ``--hardware`` the doctor's findings follow on stdout (:mod:`gateway.doctor`), also after
    bad rule files; exit 1 if the files or the board have a problem."""
    from gateway.config import state_dir_problems
    from gateway.rulesets import check_ruleset

    config = _load(args.config)
    if config is None:
        return 1
    ruleset, lines = check_ruleset(config)
    state_dir = state_dir_problems(config)
    for line in [*state_dir, *lines] if ruleset is None else state_dir:
        print(line, file=sys.stderr)
    if ruleset is not None:
        for line in lines:
            print(f"warning: {line}", file=sys.stderr)
    if ruleset is not None and not state_dir:
        print(
            f"{args.config}: OK: gateway {config.gateway.id}, {len(config.devices)} devices, "
            f"{len(config.entities())} entities; {ruleset.summary()} from {config.rules.dir}"
        )
    hardware_ok = _check_hardware(config) if args.hardware else True
    return 0 if ruleset is not None and not state_dir and hardware_ok else 1


def _check_hardware(config: Config) -> bool:
    from gateway.doctor import examine

    report = examine(config)
    for finding in report.findings:
        print(finding)
    print(report.summary())
    return not report.problems


def cmd_simulate(args: argparse.Namespace) -> int:
    from gateway.simulate import simulate

    config = _load(args.config)
    if config is None:
        return 1
    return simulate(config, args.events)


def cmd_traces(args: argparse.Namespace) -> int:
    from rules.traces import print_traces

    config = _load(args.config)
    if config is None:
        return 1
    state_dir = _with_state_dir(config, args).gateway.state_dir
    return print_traces(state_dir, args.rule, args.last)


def cmd_history(args: argparse.Namespace) -> int:
    """Exit 0 with the events (none is not an error: say so on stderr), 1 for a bad config or ``--since``."""
    import time
    from zoneinfo import ZoneInfo

    from gateway.history import HISTORY_FILE, format_rows, parse_since, query

    config = _load(args.config)
    if config is None:
        return 1
    try:
        since = time.time() - parse_since(args.since)
    except ValueError as exc:
        print(f"gateway history: --since: {exc}", file=sys.stderr)
        return 1
    path = _with_state_dir(config, args).gateway.state_dir / HISTORY_FILE
    rows = query(path, since=since, entities=args.entity, limit=args.last)
    if not rows:
        print(f"gateway history: no events since {args.since} ago in {path}", file=sys.stderr)
        return 0
    if args.json:
        print("\n".join(json.dumps(row.to_json()) for row in rows))
    else:
        print(format_rows(rows, ZoneInfo(config.gateway.timezone)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import Gateway
    from gateway.logs import setup_logging
    from gateway.mqtt import MqttSetupError
    from gateway.service import Service, control_socket_path
    from rules.loader import RulesError

    setup_logging(args.log_level)
    config = _load(args.config)
    if config is None:
        return 1
    config = _with_state_dir(config, args)
    if args.simulate:
        # A laptop's clock is trusted as it is: the simulated house runs its schedules at once.
        config = config.model_copy(update={"rules": config.rules.model_copy(update={"unsynced_clock": "run"})})
    try:
        gateway = Gateway(config, simulate=args.simulate, mqtt=not args.no_mqtt)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except MqttSetupError as exc:
        print(f"{config.source or 'config'}: {exc}", file=sys.stderr)
        return 1
    _end_of_start()  # the config, rules and drivers just built stay for the life of the process
    socket_path = args.socket or control_socket_path(config.gateway.state_dir if args.simulate else None)
    service = Service(gateway, socket_path=socket_path)
    web = None
    if config.web.enabled:
        from gateway.web import start_web

        web = start_web(config, gateway, service.snapshot)
    try:
        return service.run()
    finally:
        if web is not None:
            web.stop()
        if args.pin_dump is not None:
            _dump_pins(gateway, args.pin_dump)


def _end_of_start() -> None:
    """Write the cache of the methods dataclasses wrote during the start if it lacked any
    (:func:`core.lean_imports.save_generated_methods`), make what the start built permanent
    (:func:`gateway.app.freeze_long_lived`), then resume the garbage collector that ``gateway.__main__``
    paused for the start.

    Frozen without a collection first: the start's cyclic garbage (pydantic's schema builds, the imports'
    leftovers) stays with the rest, 0.2 to 0.5 MB. A collection of it cost more CPU than the pause saved
    (everything the start allocated, walked once at the end: 25 ms here, cold in the caches), where running
    the collector all along walks the start's objects in about ninety small batches (docs/performance.md,
    *Start → READY*, 2 Dec 2026). Freezing first: no collection can run between the two."""
    from core.lean_imports import save_generated_methods
    from gateway.app import freeze_long_lived

    save_generated_methods()
    freeze_long_lived()
    gc.enable()


def _with_state_dir(config: Config, args: argparse.Namespace) -> Config:
    from gateway.app import simulation_state_dir

    state_dir = getattr(args, "state_dir", None) or (
        simulation_state_dir(config.gateway.id) if args.simulate else None
    )
    if state_dir is None:
        return config
    return config.model_copy(
        update={"gateway": config.gateway.model_copy(update={"state_dir": state_dir.resolve()})}
    )


def _dump_pins(gateway: Gateway, path: Path) -> None:
    """What each mock pin did, read from the pins themselves after shutdown (``--simulate`` only)."""
    from gateway.simpins import pin_report

    if gateway.simulated_pins is None:
        print("--pin-dump needs --simulate", file=sys.stderr)
        return
    path.write_text(json.dumps(pin_report(gateway.simulated_pins), indent=1))


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.control import ControlError, NotRunning, format_status, request
    from gateway.service import control_socket_path

    socket_path = args.socket
    if socket_path is None and args.simulate:
        config = _load(args.config)
        if config is None:
            return 1
        socket_path = control_socket_path(_with_state_dir(config, args).gateway.state_dir)
    socket_path = socket_path or control_socket_path()
    try:
        reply = request(socket_path, {"cmd": "status"})
    except ControlError as exc:
        print(f"gateway status: {exc}", file=sys.stderr)
        return 3 if isinstance(exc, NotRunning) else 1
    if not reply.get("ok"):
        print(f"gateway status: {reply.get('error', 'no status in the reply')}", file=sys.stderr)
        return 1
    print(json.dumps(reply["status"], indent=1) if args.json else format_status(reply["status"]))
    return 0


def cmd_safe_state(args: argparse.Namespace) -> int:
    """Never stops at an invalid config: see :func:`gateway.service.safe_state`."""
    from gateway.logs import setup_logging
    from gateway.service import safe_state

    setup_logging("INFO")
    return safe_state(args.config, state_dir=args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
