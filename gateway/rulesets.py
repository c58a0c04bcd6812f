"""The house's rule set: its rule files loaded against its ``config.toml`` (``rules.dir`` and the devices).

A module of its own, apart from :mod:`gateway.assembly`: ``gateway check`` (systemd's ``ExecStartPre``, before
every start) and the web page's check need the rule files' loader, not the engine, the controllers and the
dispatcher that the assembly imports (~40 ms of every start, docs/performance.md)."""

from __future__ import annotations

from gateway.config import Config
from rules.loader import RuleSet, check_rules, load_rules


def load_ruleset(config: Config) -> RuleSet:
    """The rule set of ``config`` (its ``rules.dir``, checked against its devices); :class:`RulesError` if bad."""
    return load_rules(config.rules.dir, config.entities())


def check_ruleset(config: Config) -> tuple[RuleSet | None, list[str]]:
    """For ``gateway check``: the rule set and its warnings, or None and every problem (one line each)."""
    return check_rules(config.rules.dir, config.entities())
