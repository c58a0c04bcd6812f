"""The ``gateway`` command.

    gateway run    [--config PATH] [--simulate] [--state-dir DIR]   run the gateway
    gateway check  [--config PATH]                                  validate config and rules

Exit status: 0 success, 1 invalid config or rules (one line per problem on
stderr), 2 usage error. ``run`` exits 0 after SIGTERM or Ctrl-C once every
actuator is in its safe state; a second Ctrl-C forces an immediate exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from gateway.config import Config, ConfigError, load_config

log = logging.getLogger("gateway")

DEFAULT_CONFIG = Path(os.environ.get("GATEWAY_CONFIG", "config.toml"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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
    run.set_defaults(handler=cmd_run)

    check = sub.add_parser("check", help="validate the config and the rule files, then exit")
    _config_option(check)
    check.set_defaults(handler=cmd_check)
    return parser


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
    from rules.loader import RulesError, load_rules

    config = _load(args.config)
    if config is None:
        return 1
    try:
        rules = load_rules(config.rules.dir, config.entities())
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    print(
        f"{args.config}: OK: gateway {config.gateway.id}, {len(config.devices)} devices, "
        f"{len(config.entities())} entities, {len(rules)} rules from {config.rules.dir}"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import Gateway, simulation_state_dir
    from gateway.logs import setup_logging
    from rules.loader import RulesError

    setup_logging(args.log_level)
    config = _load(args.config)
    if config is None:
        return 1
    state_dir = args.state_dir or (simulation_state_dir(config.gateway.id) if args.simulate else None)
    if state_dir is not None:
        config = config.model_copy(
            update={"gateway": config.gateway.model_copy(update={"state_dir": state_dir.resolve()})}
        )
    try:
        gateway = Gateway(config, simulate=args.simulate)
    except RulesError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    _install_signal_handlers(gateway.request_stop)
    try:
        gateway.start()
        gateway.run()
    finally:
        gateway.shutdown()
    return 0


def _install_signal_handlers(request: Callable[[], None]) -> None:
    """The handlers only ask the dispatcher loop to stop; a second Ctrl-C exits at once."""
    pressed = {"count": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        pressed["count"] += 1
        if signum == signal.SIGINT and pressed["count"] > 1:
            os._exit(130)
        log.info("received %s, stopping", signal.Signals(signum).name)
        request()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


if __name__ == "__main__":
    sys.exit(main())
