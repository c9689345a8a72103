"""report.html in real headless Chromium (Debian ``chromium`` + ``chromium-driver``).

Checks what only a browser can: no console errors, no network request of any kind, the verdict
within the first screen at 1280×900, the flame graph drawn by the vendored d3-flame-graph, and
hostile strings from a server inert in the live DOM. A screenshot is kept in test-artifacts/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service

from pathprobe.reports.render import render_html
from tests.conftest import ServerProc, free_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1280, 900
MAIN = "from pathprobe.cli.main import main; main()"


def make_driver(user_data_dir: str, javascript: bool = True) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-default-apps",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--user-data-dir={user_data_dir}",
    ):
        options.add_argument(flag)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    # Exactly 1280×900 of page, whatever the headless window's own chrome takes.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    return driver


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with tempfile.TemporaryDirectory(prefix="pp-chromium-") as profile:
        driver = make_driver(profile)
        try:
            yield driver
        finally:
            driver.quit()


def write_report(tmp_path: Path, report: dict[str, Any]) -> Path:
    path = tmp_path / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def load_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def test_report_opens_offline_clean_with_the_verdict_on_top(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    path = write_report(tmp_path, load_fixture("report_full.json"))
    # The browser's own start-up (new-tab page) is logged too: drop it before our navigation.
    browser.get("about:blank")
    browser.get_log("performance")
    browser.get_log("browser")
    browser.get(path.as_uri())
    browser.set_script_timeout(20)
    # The flame graphs are drawn by script; wait until report.js marked them.
    drawn = browser.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const t0 = Date.now();
        (function poll() {
          const boxes = document.querySelectorAll('[data-flame]');
          const ready = document.querySelectorAll('[data-flame][data-ready="1"] svg rect');
          if (boxes.length && ready.length) { done(ready.length); }
          else if (Date.now() - t0 > 15000) { done(0); }
          else { setTimeout(poll, 100); }
        })();
        """
    )
    assert drawn > 0, "flame graph was not drawn"

    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []

    urls = requested_urls(browser)
    assert path.as_uri() in urls
    outside = [u for u in urls if not (u == path.as_uri() or u.startswith("data:"))]
    assert outside == []

    rect = browser.execute_script(
        "const r = document.getElementById('verdict').getBoundingClientRect();"
        "return {top: r.top, bottom: r.bottom, width: r.width};"
    )
    assert rect["top"] >= 0
    assert rect["bottom"] <= HEIGHT
    assert rect["width"] > 600
    headline = browser.execute_script(
        "return document.querySelector('#verdict .headline').innerText"
    )
    assert "The proxy hop" in headline

    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "report.png"))
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


HOSTILE = (
    "<img src=x onerror=\"window.__pwned='img'\">"
    "</script><script>window.__pwned='script'</script>"
    "<svg onload=\"window.__pwned='svg'\"></svg>{{7*7}}"
)


def test_hostile_strings_stay_text_in_the_live_dom(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    report = load_fixture("report_full.json")
    report["verdict"]["summary"] = HOSTILE
    report["verdict"]["ranking"][0]["evidence"] = [HOSTILE]
    report["paths"][HOSTILE] = report["paths"].pop("proxy")
    lb_step = report["paths"]["lb"]["steps"][0]
    lb_step["by_replica"] = {HOSTILE: {"count": 1, "p50_ms": 1, "p99_ms": 2}}
    lb_step["status_codes"] = {HOSTILE: 3}
    window = report["probes"]["server"]["windows"][0]
    window["folded"] = {f"main;{HOSTILE}": 50, **window["folded"]}
    report["run"]["command"] = HOSTILE
    path = write_report(tmp_path, report)
    browser.get(path.as_uri())
    browser.execute_async_script("setTimeout(arguments[arguments.length - 1], 500)")

    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    on_attrs = browser.execute_script(
        "return [...document.querySelectorAll('*')].filter(e => "
        "[...e.attributes].some(a => a.name.startsWith('on'))).length"
    )
    assert on_attrs == 0
    summary = browser.execute_script("return document.querySelector('#verdict .summary').innerText")
    assert summary == HOSTILE  # shown verbatim, as text
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []


def test_without_javascript_the_verdict_and_tables_are_there(tmp_path: Path) -> None:
    path = write_report(tmp_path, load_fixture("report_full.json"))
    with tempfile.TemporaryDirectory(prefix="pp-chromium-") as profile:
        driver = make_driver(profile, javascript=False)
        try:
            driver.get(path.as_uri())
            text = driver.find_element("id", "verdict").text
            assert "The proxy hop" in text
            rows = driver.find_elements("css selector", "#latency-table tbody tr")
            assert len(rows) == 9
            noscript_note = driver.find_element("css selector", "#server noscript + p, #server")
            assert "heaviest stacks" in noscript_note.text.lower()
            assert driver.find_elements("css selector", ".flame svg") == []
        finally:
            driver.quit()


def test_real_run_against_a_hostile_server(
    spawn_server: Callable[..., ServerProc], browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """End to end: diagnose a server that puts HTML/JS in its status line, headers (replica,
    Server-Timing) and body; re-render with ``pathprobe report``; nothing runs in the browser."""
    server = spawn_server("hostile")
    out = tmp_path / "out"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            MAIN,
            "diagnose",
            "--path",
            f"direct={server.url}",
            "--rate",
            "10",
            "--duration",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=free_env(),
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "report.json").read_text())
    replicas = report["paths"]["direct"]["steps"][0].get("by_replica", {})
    assert any("<script>" in name for name in replicas)  # the hostile value reached the JSON

    (out / "report.html").unlink()
    again = subprocess.run(
        [sys.executable, "-c", MAIN, "report", str(out / "report.json")],
        capture_output=True,
        text=True,
        timeout=120,
        env=free_env(),
        check=False,
    )
    assert again.returncode == 0, again.stderr
    page = out / "report.html"
    assert "<script>alert" not in page.read_text()

    browser.get("about:blank")
    browser.get_log("performance")
    browser.get_log("browser")
    browser.get(page.as_uri())
    browser.execute_async_script("setTimeout(arguments[arguments.length - 1], 300)")
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    attribution = browser.find_element("id", "attribution").text
    assert "<script>alert('pp-xss')</script>" in attribution  # shown, as text
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == []
    urls = requested_urls(browser)
    assert [u for u in urls if u != page.as_uri() and not u.startswith("data:")] == []
