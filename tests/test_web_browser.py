"""The web page in a real browser: headless Chromium (the Debian package; scripts/test installs it).

Chromium is driven from the command line (``--dump-dom``, ``--screenshot``), its console on stderr:
a JavaScript error or a refused resource shows there as ``CONSOLE`` / ``Uncaught``. With
``UPDATE_SCREENSHOTS=1`` the same tests write the screenshots in docs/img/, so they stay true.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.browser_kit import Browser
from tests.helpers import wait_until
from tests.web_kit import (
    OFF_AT_THE_EDGE_EARLY_IN_A_SECOND,
    PASSWORD,
    ROOT,
    heater_bands,
    plot_site,
    running_site,
    shipped_house_day,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/test installs it)")

PHONE = "412,915"
SCREENSHOTS = ROOT / "docs" / "img"


def chromium(url: str, tmp_path: Path, *, screenshot: Path | None = None) -> subprocess.Popen[str]:
    """Chromium loading ``url`` headless; it dumps the DOM (or takes the screenshot) once the page has loaded."""
    assert CHROMIUM is not None
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chromium'}", "--enable-logging=stderr", "--v=0",
            "--timeout=5000", f"--window-size={PHONE}"]
    args += [f"--screenshot={screenshot}"] if screenshot is not None else ["--dump-dom"]
    return subprocess.Popen([*args, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(browser: subprocess.Popen[str]) -> str:
    """The dumped DOM; fails on any console message or uncaught error."""
    out, err = browser.communicate(timeout=30)
    assert browser.returncode == 0, err[-2000:]
    console = [line for line in err.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
    return out


def with_password(url: str, password: str = PASSWORD) -> str:
    return url.replace("http://", f"http://installer:{password.replace(' ', '%20')}@")


def screenshot(url: str, name: str, tmp_path: Path) -> None:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        finish(chromium(with_password(url), tmp_path, screenshot=SCREENSHOTS / name))


def test_the_page_loads_without_a_console_error(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        dom = finish(chromium(with_password(site.url + "/"), tmp_path))
        assert 'id="v-motion"' in dom and "Outputs and who holds them" in dom
        screenshot(site.url + "/", "web-dashboard.png", tmp_path)


def test_a_browser_with_a_wrong_password_gets_nothing_of_the_house(tmp_path: Path) -> None:
    with running_site(tmp_path) as site:
        dom = finish(chromium(with_password(site.url + "/", "wrong"), tmp_path))
        # Headless Chromium cancels the password prompt of the 401: at most the login form remains.
        assert "motion" not in dom and "light" not in dom and "v-" not in dom


def test_the_live_state_changes_in_the_browser_when_a_pin_changes(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    with running_site(tmp_path) as site:
        browser = Browser(CHROMIUM, tmp_path / "chromium")
        try:
            browser.go(with_password(site.url + "/"))
            assert browser.wait_for("document.getElementById('v-motion')?.textContent") == "off"
            wait_until(lambda: site.web.sources.live.clients >= 1, what="the page's live stream")
            site.pins.pin(17).drive_high()
            browser.wait_for("document.getElementById('v-motion').textContent === 'on'")
            assert browser.wait_for("document.getElementById('v-light').textContent === 'on'")  # the rule, live
            assert browser.errors == []
        finally:
            browser.close()


def test_the_browser_draws_the_heater_bands_where_the_simulation_put_them(tmp_path: Path) -> None:
    # A fixed day, not the wall clock's: the heater is off at the window's left edge and switches on in the
    # first half of a second, the case that made this test fail at 22:58 UTC (tests/test_web.py sweeps the others).
    end = OFF_AT_THE_EDGE_EARLY_IN_A_SECOND
    history, heater = shipped_house_day(tmp_path, end)
    web, url = plot_site(history, now=end)
    try:
        dom = finish(chromium(with_password(url + "/plot?entity=living_temperature"), tmp_path))
        bands = heater_bands(dom, heater)
        assert len(bands.spans) >= 3
        assert bands.starts == bands.switched_on
        assert bands.ends == bands.switched_off
        assert '<polyline class="setpoint"' in dom and 'class="hysteresis"' in dom and 'class="mark"' in dom
        screenshot(url + "/plot?entity=living_temperature", "web-plot.png", tmp_path)
    finally:
        web.stop()


def test_a_command_from_the_page_is_answered_next_to_the_output_without_a_reload(tmp_path: Path) -> None:
    assert CHROMIUM is not None
    with running_site(tmp_path, commands=True, mqtt=True) as site:
        browser = Browser(CHROMIUM, tmp_path / "chromium")
        try:
            browser.go(with_password(site.url + "/"))
            assert browser.wait_for("document.getElementById('v-light')?.textContent") == "off"
            wait_until(lambda: site.web.sources.live.clients >= 1, what="the page's live stream")
            browser.evaluate("window.stillThisPage = true; "
                             "document.querySelector('form.cmd button').click()")
            said = browser.wait_for("document.getElementById('o-light').textContent.startsWith('last command: done')"
                                    " && document.getElementById('o-light').textContent")
            assert said == "last command: done: on" and browser.evaluate("window.stillThisPage") is True
            assert browser.evaluate("document.querySelector('form.cmd button').textContent") == "switch off"
            assert browser.wait_for("document.querySelector('td[data-live=\"light\"]:not([id])').textContent === 'on'")
            assert site.pins.pin(22).state == 1 and browser.errors == []
            if os.environ.get("UPDATE_SCREENSHOTS") == "1":
                browser.screenshot(SCREENSHOTS / "web-dashboard-phone.png", width=390)
        finally:
            browser.close()
