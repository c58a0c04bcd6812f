"""Benchmarks of the gateway: ``python -m bench`` (see docs/performance.md).

Numbers from one machine are comparable only as ratios, so every benchmark
runs a plain baseline in the same run. A path that does not exist yet on this
branch prints ``not yet measurable: <reason>`` instead of a figure.
"""
