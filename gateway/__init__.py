"""The gateway application (see docs/architecture.md)."""

__version__ = "0.1.0"
"""The one place the version is written: pyproject.toml reads it (``[tool.setuptools.dynamic]``), and the
gateway reports it (health, discovery) without asking the installed distributions."""
