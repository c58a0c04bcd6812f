"""The local web page over real HTTP: nothing without the password, CSRF on every POST, live states,
the outputs' claims, the plots of the shipped house (docs/web.md)."""

from __future__ import annotations

import http.client
import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from core.clock import VirtualClock
from core.events import Kind
from gateway.app import Gateway
from gateway.config import ConfigError, load_config
from gateway.control import format_status
from gateway.service import Service
from gateway.web.pages import build_plot, dashboard, plot_page
from gateway.web.plot import on_spans
from gateway.web.server import LOCKOUT_FAILURES, Sources, read_password
from tests import toml_kit as toml
from tests.helpers import RecordingForwarder, wait_until, write_config
from tests.houses import house_config
from tests.web_kit import (
    OFF_AT_THE_EDGE_EARLY_IN_A_SECOND,
    OFF_AT_THE_EDGE_LATE_IN_A_SECOND,
    ON_AT_THE_EDGE,
    PASSWORD,
    fetch,
    heater_bands,
    plot_sources,
    running_site,
    shipped_house_day,
)


def test_without_the_password_the_page_answers_401_and_shows_nothing_of_the_house(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        status, body, headers = fetch(site.url + "/")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert "motion" not in body and "light" not in body
        for path in ("/live", "/plot?entity=motion", "/traces"):
            assert fetch(site.url + path)[0] == 401


def test_a_wrong_password_gets_401_and_nothing_else(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        status, body, headers = fetch(site.url + "/", password="wrong")
        assert status == 401 and "motion" not in body and "Set-Cookie" not in headers


def test_the_right_password_shows_live_states_and_who_holds_each_output(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        status, body, headers = fetch(site.url + "/", password=PASSWORD)
        assert status == 200
        assert 'id="v-motion"' in body and 'id="v-light"' in body
        assert "light_off_when_still (rules) off" in body  # the claim in force, from `gateway status`
        assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]


def test_the_session_cookie_opens_the_page_without_the_password_again(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        cookie = fetch(site.url + "/", password=PASSWORD)[2]["Set-Cookie"].split(";")[0]
        assert fetch(site.url + "/", cookie=cookie)[0] == 200
        assert fetch(site.url + "/", cookie="gw_session=forged")[0] == 401


def test_no_page_shows_a_file_path_or_the_password(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        body = fetch(site.url + "/", password=PASSWORD)[1] + fetch(site.url + "/traces", password=PASSWORD)[1]
        assert str(tmp_path) not in body and PASSWORD not in body


def test_repeated_wrong_passwords_lock_the_door_even_for_the_right_one(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        for _ in range(LOCKOUT_FAILURES):
            fetch(site.url + "/", password="guess")
        assert fetch(site.url + "/", password=PASSWORD)[0] == 401


def test_a_post_without_the_csrf_token_is_refused(tmp_path: Path) -> None:
    with running_site(tmp_path, commands=True) as site:
        status, _, _ = fetch(site.url + "/command", password=PASSWORD, data=b"entity=light&value=true")
        assert status == 403


def test_commands_are_refused_when_the_page_is_read_only(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        status, body, headers = fetch(site.url + "/", password=PASSWORD)
        cookie = headers["Set-Cookie"].split(";")[0]
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', body)
        assert csrf is not None and "switch on" not in body
        status, body, _ = fetch(site.url + "/command", cookie=cookie,
                                data=f"csrf={csrf.group(1)}&entity=light&value=true".encode())
        assert status == 403 and "off" in body
        assert site.pins.pin(22).state == 0


def _session(site_url: str) -> tuple[str, str]:
    """(cookie, CSRF token) of a logged-in page."""
    _, body, headers = fetch(site_url + "/", password=PASSWORD)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', body)
    assert csrf is not None
    return headers["Set-Cookie"].split(";")[0], csrf.group(1)


def _command(site_url: str, cookie: str, csrf: str, entity: str, value: str) -> dict[str, object]:
    """The page script's request: the outcome as JSON."""
    request = urllib.request.Request(site_url + "/command", data=f"csrf={csrf}&entity={entity}&value={value}".encode(),
                                     headers={"Cookie": cookie, "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def test_a_command_from_the_page_goes_the_hubs_way_and_is_answered_with_its_final_outcome(tmp_path: Path) -> None:
    with running_site(tmp_path, commands=True, mqtt=True) as site:
        cookie, csrf = _session(site.url)
        answer = _command(site.url, cookie, csrf, "light", "ON")  # the hub's spelling
        assert (answer["status"], answer["value"], answer["words"]) == ("done", True, "done: on")
        assert site.pins.pin(22).state == 1  # done means confirmed: the relay is on when the answer comes


def test_a_command_the_hub_could_not_send_is_rejected_by_the_same_validator_with_its_reason(tmp_path: Path) -> None:
    with running_site(tmp_path, commands=True, mqtt=True) as site:
        cookie, csrf = _session(site.url)
        light = _command(site.url, cookie, csrf, "light", "maybe")
        motion = _command(site.url, cookie, csrf, "motion", "true")
        assert light["status"] == "rejected" and "ON" in str(light["reason"])
        assert motion["status"] == "rejected" and "not an entity the hub may command" in str(motion["reason"])
        assert site.pins.pin(22).state == 0


def test_a_plain_form_command_returns_to_the_dashboard_with_the_outcome_next_to_the_output(tmp_path: Path) -> None:
    with running_site(tmp_path, commands=True, mqtt=True) as site:
        cookie, csrf = _session(site.url)
        status, body, _ = fetch(site.url + "/command", cookie=cookie,
                                data=f"csrf={csrf}&entity=light&value=true".encode())  # urllib follows the 303
        assert status == 200 and "Outputs and who holds them" in body
        said = re.search(r'<div id="o-light" class="outcome ok">([^<]*)</div>', body)
        assert said is not None and said.group(1).startswith("last command: done: on (")


def test_page_commands_meet_the_hubs_rate_limit(tmp_path: Path) -> None:
    with running_site(tmp_path, commands=True, mqtt=True) as site:
        cookie, csrf = _session(site.url)
        with ThreadPoolExecutor(8) as pool:  # a page tapped faster than 10 commands a second, burst 20
            answers = list(pool.map(lambda _: _command(site.url, cookie, csrf, "light", "ON"), range(40)))
        assert any(a["status"] == "done" for a in answers)
        assert any(a["status"] == "rejected" and str(a["reason"]).startswith("rate limit") for a in answers)


def test_stopping_the_page_ends_a_live_stream_at_once(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        cookie = fetch(site.url + "/", password=PASSWORD)[2]["Set-Cookie"].split(";")[0]
        conn = http.client.HTTPConnection("127.0.0.1", site.web.port, timeout=5)
        conn.request("GET", "/live", headers={"Cookie": cookie})
        response = conn.getresponse()
        wait_until(lambda: site.web.sources.live.clients == 1, what="the stream subscribed")
        site.web.stop()
        assert response.read() == b"retry: 3000\n\n"  # then the end of the stream, not a 5 s timeout
        response.close()
        conn.close()


def test_a_pin_change_reaches_the_live_stream(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        cookie = fetch(site.url + "/", password=PASSWORD)[2]["Set-Cookie"].split(";")[0]
        conn = http.client.HTTPConnection("127.0.0.1", site.web.port, timeout=10)
        conn.request("GET", "/live", headers={"Cookie": cookie})
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
        wait_until(lambda: site.web.sources.live.clients == 1, what="the stream subscribed")
        site.pins.pin(17).drive_high()
        seen: list[dict[str, object]] = []
        while not any(e["entity"] == "light" and e["value"] is True for e in seen):
            line = response.fp.readline().decode()
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
        assert {"entity": "motion", "value": True} in [{"entity": e["entity"], "value": e["value"]} for e in seen]
        response.close()
        conn.close()


def test_the_thermostat_plot_shows_the_heater_on_where_the_simulation_switched_it(tmp_path: Path) -> None:
    history, heater = shipped_house_day(tmp_path)
    from gateway.rulesets import load_ruleset
    from tests.web_kit import ROOT

    ruleset = load_ruleset(load_config(ROOT / "config.toml"))
    sources = Sources("house-01", status=dict, history=history,
                      thermostats=lambda: [d.item for d in ruleset.thermostats])
    end = max(e.ts for e in heater) + 60
    plot = build_plot(sources, "living_temperature", 24, now=end)
    expected = on_spans([(e.ts, e.value is True) for e in heater], end - 86_400, end)
    assert len(expected) >= 3  # the house heats several times a day
    assert plot.bands["heater"] == expected
    assert plot.hysteresis == 0.5 and {v for _, v in plot.setpoint} >= {17.0, 21.0}
    assert {rule for _, rule, _ in plot.marks} == {"living_thermostat"}


@pytest.mark.parametrize(("end", "on_at_the_edge"), [(OFF_AT_THE_EDGE_EARLY_IN_A_SECOND, False),
                                                    (OFF_AT_THE_EDGE_LATE_IN_A_SECOND, False),
                                                    (ON_AT_THE_EDGE, True)])
def test_the_plot_page_starts_and_ends_each_heater_band_at_the_second_the_simulation_switched_it(
        tmp_path: Path, end: float, on_at_the_edge: bool) -> None:
    history, heater = shipped_house_day(tmp_path, end)
    bands = heater_bands(plot_page(plot_sources(history, now=end), "living_temperature", 24), heater)
    assert (bands.spans[0][0] == round(end - 86_400)) is on_at_the_edge
    assert len(bands.starts) >= 3
    assert bands.starts == bands.switched_on
    assert bands.ends == bands.switched_off


def test_on_spans_reads_an_output_that_was_on_before_the_window() -> None:
    assert on_spans([(50.0, False), (70.0, True)], 0.0, 100.0) == [(0.0, 50.0), (70.0, 100.0)]


def test_the_password_comes_from_its_file_else_the_environment(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    assert read_password(tmp_path / "pw", env={"GATEWAY_WEB_PASSWORD": "env"}) == "from-file"
    assert read_password(None, env={"GATEWAY_WEB_PASSWORD": "env"}) == "env"
    assert read_password(None, env={}) is None


def test_https_without_the_tls_files_is_a_located_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(house_config(tmp_path, extra="[web]\nenabled = true\nhttps = true\n"))
    assert any("web.https" in p for p in caught.value.problems)


def test_the_page_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    config = load_config(house_config(tmp_path, extra="[web]\nenabled = true\n"))
    assert (config.web.host, config.web.port, config.web.commands) == ("127.0.0.1", 8080, False)
    with pytest.raises(ConfigError) as caught:
        load_config(house_config(tmp_path, extra='[web]\nlisten = "0.0.0.0"\n'))
    assert any("web.listen" in p for p in caught.value.problems)


PUMP = toml.config(toml.gateway("pump"), toml.relay("pump", 22, safe_state=True, envelope={"min_on_s": 60}))


def test_a_relay_just_switched_on_shows_the_time_left_of_its_minimum_on_time_in_status_and_on_the_page(
        tmp_path: Path) -> None:
    """A pump whose safe state is on: once back on it stays on at least 60 s (the envelope); virtual time."""
    clock = VirtualClock()
    gateway = Gateway(load_config(write_config(tmp_path, PUMP, rules="version = 1\n")), clock=clock,
                      pin_factory=MockFactory(), forwarder=RecordingForwarder())
    gateway.start()
    try:
        gateway.dispatcher.drain()
        gateway.dispatcher.process(gateway.events.make(Kind.COMMAND, "pump", False, rule="test"))
        clock.advance(5)
        gateway.dispatcher.process(gateway.events.make(Kind.COMMAND, "pump", True, rule="test"))
        clock.advance(15)
        service = Service(gateway)
        status = format_status(service.snapshot())
        page = dashboard(Sources("pump", status=service.snapshot), csrf="0")
    finally:
        gateway.shutdown()
    assert "envelope: min on 60 s: 45 s left; 2/240 switches this hour" in status
    assert "min on 60 s: 45 s left; 2/240 switches this hour" in page


def test_a_page_command_the_envelope_defers_is_answered_deferred_then_its_final_outcome_shows_next_to_it(
        tmp_path: Path) -> None:
    from gateway.mqtt.bridge import MqttBridge
    from gateway.web.commands import PageCommands

    with running_site(tmp_path, commands=True, mqtt=True, light_envelope="{ min_off_s = 2 }") as site:
        bridge = site.gateway.forwarder
        assert isinstance(bridge, MqttBridge)
        commands = PageCommands(bridge.inlet, wait_s=0.5)
        assert commands.send("light", "ON").status == "done"
        assert commands.send("light", "OFF").status == "done"
        answer = commands.send("light", "ON")  # within the 2 s the light must stay off
        assert answer.status == "deferred" and "minimum off time" in str(answer.reason)
        assert answer.words().endswith("(the outcome follows)")
        wait_until(lambda: commands.latest()["light"].status == "done", what="the deferred command done")
        assert site.pins.pin(22).state == 1
