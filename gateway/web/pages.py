"""The page's HTML: small, readable on a phone, no external resource. Every value shown is escaped.

No secret and no file path appears here: the status snapshot is filtered to what an installer needs
(errors are shown as the drivers word them, which name ports, not files of the gateway).
"""

from __future__ import annotations

import datetime as dt
import html
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.values import is_on
from gateway.control import envelope_words
from gateway.history import query
from gateway.web.plot import Plot, on_spans, render

if TYPE_CHECKING:
    from gateway.web.server import Sources

STYLE = """
body{font-family:system-ui,sans-serif;margin:0.6em;max-width:760px;color:#222}
h1{font-size:1.2em}h2{font-size:1.05em;margin-top:1.2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;font-size:0.9em}td,th{padding:2px 6px;text-align:left;
border-bottom:1px solid #eee}.bad{color:#b00}.ok{color:#070}.muted{color:#777}svg{width:100%;height:auto}
pre{white-space:pre-wrap;font-size:0.8em;background:#f6f6f6;padding:0.5em}
td{vertical-align:top;overflow-wrap:anywhere}form.cmd{display:inline}.outcome{font-size:0.85em}
.plotbox{overflow-x:auto}.plotbox svg{min-width:640px}
"""

LIVE_JS = """
const es = new EventSource('/live');
es.onmessage = (m) => {
  const e = JSON.parse(m.data);
  // every cell showing the entity: its row among the entities, and among the outputs if it is one
  for (const cell of document.querySelectorAll('[data-live="' + CSS.escape(e.entity) + '"]')) {
    let v = e.value;
    if (e.kind === 'availability') { if (v === false) cell.textContent = 'unavailable'; continue; }
    if (v === true) v = 'on'; else if (v === false) v = 'off'; else if (v === null) v = '-';
    cell.textContent = v + (e.unit ? ' ' + e.unit : '');
    cell.dataset.updated = '1';
  }
};
for (const form of document.querySelectorAll('form.cmd')) {
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();  // the answer comes here, not as a new page (without the script, the form posts)
    const said = document.getElementById('o-' + form.entity.value);
    const button = form.querySelector('button');
    button.disabled = true;
    said.className = 'outcome'; said.textContent = 'sent…';
    try {
      // location.origin: a page opened as http://user:password@host/ cannot fetch a URL with credentials
      const r = await fetch(location.origin + '/command', {
        method: 'POST', body: new URLSearchParams(new FormData(form)), headers: {'Accept': 'application/json'}});
      const o = r.ok ? await r.json() : {status: 'failed', words: 'failed: HTTP ' + r.status};
      said.textContent = 'last command: ' + o.words;
      said.className = 'outcome ' + (o.status === 'failed' || o.status === 'rejected' ? 'bad' : 'ok');
      if (o.status === 'done' && typeof o.value === 'boolean') {
        form.value.value = o.value ? 'false' : 'true';
        button.textContent = 'switch ' + (o.value ? 'off' : 'on');
      }
    } catch (err) {
      said.className = 'outcome bad'; said.textContent = 'no answer: ' + err;
    } finally { button.disabled = false; }
  });
}
"""


def _page(title: str, body: str, *, live: bool = False) -> str:
    script = f"<script>{LIVE_JS}</script>" if live else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<style>{STYLE}</style></head><body>{body}{script}</body></html>")


def _e(value: object) -> str:
    return html.escape(str(value))


def _show(value: Any, unit: str | None = None) -> str:
    if value is True:
        text = "on"
    elif value is False:
        text = "off"
    elif value is None:
        text = "-"
    else:
        text = str(value)
    return text + (f" {unit}" if unit else "")


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = int(max(seconds, 0))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"


def login_page() -> str:
    """What anyone without the password gets: a form, and nothing of the house."""
    return _page("Gateway: log in", '<h1>Gateway</h1><form method="post" action="/login">'
                 '<label>Password <input type="password" name="password" autofocus></label> '
                 '<button>Log in</button></form>')


def dashboard(sources: Sources, csrf: str) -> str:
    try:
        status = sources.status()
    except TimeoutError:
        return _page("Gateway", "<h1>Gateway</h1><p class=bad>The dispatcher did not answer within 3 s: "
                     "it may be hung (the systemd watchdog restarts it).</p>")
    parts = [f"<h1>Gateway {_e(status.get('gateway', sources.gateway_id))}</h1>"]
    mqtt = status.get("mqtt") or {}
    if mqtt.get("enabled"):
        link = f"broker: <b>{_e(mqtt.get('connection'))}</b>, outbox {_e(mqtt.get('outbox_depth'))} queued"
    else:
        link = "broker: MQTT disabled"
    bus = status.get("bus") or {}
    parts.append(f"<p>up {_ago(status.get('uptime'))}; {_e(status.get('rules'))} rules; {link}; "
                 f"bus {_e(bus.get('queued'))} queued, {_e(bus.get('dropped'))} dropped</p>")
    parts.append(_check_section(sources, status.get("reload")))
    parts.append("<h2>Entities (live)</h2><table><tr><th>entity</th><th>value</th><th>updated</th></tr>")
    plottable = set()
    for entity in status.get("entities", []):
        value = _show(entity["value"], entity.get("unit")) if entity["available"] else "unavailable"
        eid = entity["id"]
        if isinstance(entity["value"], int | float) and not isinstance(entity["value"], bool):
            plottable.add(eid)
        name = f'<a href="/plot?entity={_e(eid)}">{_e(eid)}</a>' if eid in plottable else _e(eid)
        parts.append(f'<tr><td>{name}</td><td id="v-{_e(eid)}" data-live="{_e(eid)}">{_e(value)}</td>'
                     f'<td class=muted>{_ago(entity.get("age"))} ago</td></tr>')
    parts.append("</table>")
    parts.append("<h2>Outputs and who holds them</h2><table><tr><th>output</th><th>value</th><th>claims "
                 "(in force first)</th></tr>")
    outcomes = sources.outcomes()
    for entity, output in (status.get("outputs") or {}).items():
        claims = "; ".join(f"{_e(c['holder'])} ({_e(c['level'])}) {_e(_show(c['value']))}"
                           for c in output.get("claims") or [])
        claims = claims or f"no claim: default {_e(_show(output.get('default')))}"
        owner = f" <span class=muted>[owned by {_e(output['owner'])}]</span>" if output.get("owner") else ""
        limits = envelope_words(output.get("envelope"))
        limits = f"<div class=muted>envelope: {_e(limits)}</div>" if limits else ""
        button = ""
        if sources.command is not None:
            target = "false" if is_on(output.get("value")) else "true"
            button = (f'<form class=cmd method="post" action="/command">'
                      f'<input type="hidden" name="csrf" value="{csrf}">'
                      f'<input type="hidden" name="entity" value="{_e(entity)}">'
                      f'<input type="hidden" name="value" value="{target}">'
                      f'<button>switch {"off" if target == "false" else "on"}</button></form>')
            last = outcomes.get(entity)
            said = f"last command: {_e(last.words())} ({_ago(time.time() - last.ts)} ago)" if last else ""
            css = "bad" if last is not None and last.status in ("failed", "rejected") else "ok"
            button += f'<div id="o-{_e(entity)}" class="outcome {css}">{said}</div>'
        parts.append(f'<tr><td>{_e(entity)}</td><td data-live="{_e(entity)}">{_e(_show(output.get("value")))}</td>'
                     f"<td>{claims}{owner}{limits}{button}</td></tr>")
    parts.append("</table><h2>Devices</h2><table>")
    for device in status.get("devices", []):
        health = str(device["health"])
        css = "ok" if health.startswith("running") else "bad"
        parts.append(f"<tr><td>{_e(device['id'])}</td><td class=muted>{_e(device['driver'])}</td>"
                     f"<td class={css}>{_e(health)}</td></tr>")
    parts.append("</table><h2>Recent rule firings</h2><table>")
    now = time.time()
    for firing in status.get("firings", []):
        rule = _e(firing["rule"])
        parts.append(f'<tr><td>{_ago(now - firing["ts"])} ago</td><td><a href="/traces?rule={rule}">{rule}</a></td>'
                     f'<td>{_e(firing["entity"])} → {_e(_show(firing["value"]))}</td></tr>')
    parts.append("</table>")
    parts.append(f'<form method="post" action="/logout"><input type="hidden" name="csrf" value="{csrf}">'
                 "<button>Log out</button></form>")
    return _page(f"Gateway {status.get('gateway', '')}", "".join(parts), live=True)


def _check_section(sources: Sources, reload: Mapping[str, Any] | None) -> str:
    valid, lines = sources.check()
    head = '<span class=ok>valid</span>' if valid else '<span class=bad>INVALID: a reload would be refused</span>'
    out = [f"<h2>Rule files</h2><p>on disk: {head}"]
    if reload:
        when = dt.datetime.fromtimestamp(reload.get("at") or time.time(), sources.timezone).strftime("%H:%M:%S")
        out.append(f"; last reload at {when}: <b>{_e(reload.get('result'))}</b>")
    out.append("</p>")
    shown = [*lines, *((reload or {}).get("problems") or [])]
    if shown:
        out.append("<pre>" + "\n".join(_e(line) for line in shown[:20]) + "</pre>")
    return "".join(out)


def build_plot(sources: Sources, entity: str, hours: float, now: float | None = None) -> Plot:
    """The plot of ``entity`` over the last ``hours``: its values, the outputs its events drove (and a
    thermostat's heater/cooler), the rules that fired on it, a thermostat's setpoint and band."""
    end = time.time() if now is None else now
    start = end - hours * 3600
    plot = Plot(title=entity, start=start, end=end)
    if sources.history is None:
        return plot
    rows = query(sources.history, since=start - 86_400, until=end)
    ids = {row.id: row for row in rows}
    thermostat = next((t for t in sources.thermostats() if t.sensor == entity), None)
    outputs: set[str] = {o for o in (getattr(thermostat, "heater", None), getattr(thermostat, "cooler", None)) if o}
    for row in rows:
        if row.entity == entity and row.kind == "reading" and isinstance(row.value, int | float) \
                and not isinstance(row.value, bool) and row.ts >= start:
            plot.series.append((row.ts, float(row.value)))
            plot.unit = row.unit or plot.unit
        if row.kind == "command" and row.rule and row.ts >= start:
            cause = ids.get(row.cause or "")
            if cause is not None and cause.entity == entity:
                outputs.add(row.entity)
                plot.marks.append((row.ts, row.rule, f"{row.entity} → {_show(row.value)}"))
    for output in sorted(outputs):
        changes = [(r.ts, is_on(r.value)) for r in rows if r.entity == output and r.kind == "state"]
        plot.bands[output] = on_spans(changes, start, end)
    if thermostat is not None:
        steps = [(r.ts, float(r.value)) for r in rows if r.entity == f"{thermostat.id}_setpoint"
                 and r.kind == "state" and isinstance(r.value, int | float)]
        before = [s for s in steps if s[0] <= start]
        plot.setpoint = ([(start, before[-1][1])] if before else []) + [s for s in steps if s[0] > start]
        plot.hysteresis = float(thermostat.hysteresis)
    return plot


def plot_page(sources: Sources, entity: str, hours: float) -> str:
    if not 0 < hours <= 24 * 7:
        raise ValueError("hours out of range")
    plot = build_plot(sources, entity, hours, now=sources.wall())
    legend = ", ".join(_e(o) for o in plot.bands) or "none"
    body = (f'<p><a href="/">← gateway</a></p><h1>{_e(entity)}: last {hours:g} h</h1>'
            f"<div class=plotbox>{render(plot, sources.timezone)}</div><p class=muted>{len(plot.series)} readings; "
            f"bands: {legend}; marks: rule firings (tap for the trace)"
            + ("; dashed: setpoint, shaded: hysteresis band" if plot.setpoint else "") + "</p>")
    return _page(f"{entity}: last {hours:g} h", body)


def traces_page(sources: Sources, rule: str | None) -> str:
    text = sources.traces(rule) or "no traces"
    title = f"traces of {rule}" if rule else "traces"
    return _page(title, f'<p><a href="/">← gateway</a></p><h1>{_e(title)}</h1><pre>{_e(text)}</pre>')
