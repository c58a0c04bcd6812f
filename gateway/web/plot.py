"""A small server-side SVG plotter: one sensor over a time span, the outputs it drives as on/off bands,
rule firings as marks (linked to their traces), and for a thermostat its setpoint and hysteresis band.

Plain SVG text, no JavaScript and nothing fetched: the page works offline on a phone. Elements carry
``class`` and ``data-*`` attributes (``band`` with ``data-output``, ``data-start``, ``data-end``;
``mark`` with ``data-rule``; ``setpoint``; ``hysteresis``; ``series``) so tests and people can read
the plot back.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 44, 16, 10, 22  # RIGHT: room for half of the last time label
BAND_H = 12
BAND_COLOURS = ("#e4572e", "#17bebb", "#76b041", "#ffc914", "#2e282a")


@dataclass(slots=True)
class Plot:
    """What one plot shows; times are wall-clock seconds."""

    title: str
    start: float
    end: float
    series: list[tuple[float, float]] = field(default_factory=list)
    unit: str = ""
    bands: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Output -> the spans it was on."""
    marks: list[tuple[float, str, str]] = field(default_factory=list)
    """(time, rule, what it did)."""
    setpoint: list[tuple[float, float]] = field(default_factory=list)
    """A step series: the setpoint from each time on."""
    hysteresis: float | None = None


def on_spans(changes: Sequence[tuple[float, bool]], start: float, end: float) -> list[tuple[float, float]]:
    """The spans an output was on, from its confirmed changes (oldest first), clipped to [start, end].

    The state before the first change is taken as that change's opposite."""
    spans: list[tuple[float, float]] = []
    on_since: float | None = None
    if changes and not changes[0][1]:
        on_since = start  # its first known change is "off": it was on before
    for ts, on in changes:
        if on and on_since is None:
            on_since = max(ts, start)
        elif not on and on_since is not None:
            if ts > start:
                spans.append((on_since, min(ts, end)))
            on_since = None
    if on_since is not None:
        spans.append((on_since, end))
    return [(a, b) for a, b in spans if b > a]


def render(plot: Plot, tz: dt.tzinfo | None = None) -> str:
    """The plot as an ``<svg>`` element."""
    span = max(plot.end - plot.start, 1.0)
    band_rows = len(plot.bands)
    chart_bottom = HEIGHT - BOTTOM - band_rows * (BAND_H + 2)
    values = [v for _, v in plot.series] + [v for _, v in plot.setpoint]
    if plot.hysteresis is not None:
        values += [v - plot.hysteresis for _, v in plot.setpoint]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    pad = (high - low) * 0.08
    low, high = low - pad, high + pad

    def x(ts: float) -> float:
        return LEFT + (min(max(ts, plot.start), plot.end) - plot.start) / span * (WIDTH - LEFT - RIGHT)

    def y(value: float) -> float:
        return TOP + (high - value) / (high - low) * (chart_bottom - TOP)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" class="plot" role="img" '
           f'aria-label="{html.escape(plot.title)}">',
           f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{chart_bottom - TOP}" '
           'fill="#fafafa" stroke="#ccc"/>']
    for i in range(5):  # value grid
        value = low + (high - low) * i / 4
        out.append(f'<text x="{LEFT - 4}" y="{y(value) + 4:.1f}" font-size="10" text-anchor="end">{value:.1f}</text>')
    step = _tick_step(span)
    first = plot.start - plot.start % step + step
    tick = first
    while tick < plot.end:
        label = dt.datetime.fromtimestamp(tick, tz).strftime("%H:%M")
        out.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{TOP}" y2="{chart_bottom}" stroke="#eee"/>'
                   f'<text x="{x(tick):.1f}" y="{HEIGHT - 6}" font-size="10" text-anchor="middle">{label}</text>')
        tick += step
    if plot.setpoint and plot.hysteresis is not None:
        for (t0, value), t1 in _steps(plot.setpoint, plot.end):
            top, bottom = y(value), y(value - plot.hysteresis)
            out.append(f'<rect class="hysteresis" x="{x(t0):.1f}" y="{top:.1f}" width="{x(t1) - x(t0):.1f}" '
                       f'height="{bottom - top:.1f}" fill="#ffd8b0" opacity="0.6"/>')
    if plot.setpoint:
        corners: list[str] = []
        for (t0, value), t1 in _steps(plot.setpoint, plot.end):
            corners += [f"{x(t0):.1f},{y(value):.1f}", f"{x(t1):.1f},{y(value):.1f}"]
        out.append(f'<polyline class="setpoint" points="{" ".join(corners)}" fill="none" stroke="#c0392b" '
                   'stroke-dasharray="4 3"/>')
    if plot.series:
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in plot.series if plot.start <= t <= plot.end)
        out.append(f'<polyline class="series" points="{points}" fill="none" stroke="#1f5fa8" stroke-width="1.5"/>')
    for row, (output, spans) in enumerate(sorted(plot.bands.items())):
        top = chart_bottom + 2 + row * (BAND_H + 2)
        colour = BAND_COLOURS[row % len(BAND_COLOURS)]
        out.append(f'<text x="{LEFT - 4}" y="{top + BAND_H - 2}" font-size="9" text-anchor="end">'
                   f'{html.escape(output[:8])}</text>')
        for a, b in spans:
            out.append(f'<rect class="band" data-output="{html.escape(output)}" data-start="{a:.0f}" '
                       f'data-end="{b:.0f}" x="{x(a):.1f}" y="{top}" width="{max(x(b) - x(a), 1):.1f}" '
                       f'height="{BAND_H}" fill="{colour}"><title>{html.escape(output)} on</title></rect>')
    for ts, rule, what in plot.marks:
        link = f"/traces?rule={html.escape(rule)}"
        out.append(f'<a href="{link}"><line class="mark" data-rule="{html.escape(rule)}" data-ts="{ts:.0f}" '
                   f'x1="{x(ts):.1f}" x2="{x(ts):.1f}" y1="{TOP}" y2="{chart_bottom}" stroke="#8e44ad" '
                   f'stroke-width="2" opacity="0.5"><title>{html.escape(rule)}: {html.escape(what)}</title></line></a>')
    out.append("</svg>")
    return "".join(out)


def _steps(points: Sequence[tuple[float, float]], end: float) -> list[tuple[tuple[float, float], float]]:
    """Each step of a step series with the time it ends."""
    return [(point, points[i + 1][0] if i + 1 < len(points) else end) for i, point in enumerate(points)]


def _tick_step(span: float) -> float:
    for step in (600, 1800, 3600, 3 * 3600, 6 * 3600, 86_400):
        if span / step <= 9:
            return step
    return 7 * 86_400
