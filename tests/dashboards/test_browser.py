"""The dashboards in a real browser: `streamlit run dashboards/app.py` on loopback against the test world's
SQLite database and headless Chromium. The test signs in once through the password form, then opens
every page by its URL and reloads it (the signed session cookie keeps the user in), failing on any
Streamlit exception element, "None"/"nan" or raw column name in the visible text; signing out ends the
session for good. A full-page screenshot of each page is saved under the folder the test prints
(RECOUP_SCREENSHOT_DIR, else the test's tmp dir): the README's tour uses them.

Without Chromium the test fails when CI=true and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.dashboards.chromium import Chromium, find_chromium
from tests.dashboards.conftest import APP, PASSWORDS, World

pytestmark = pytest.mark.slow  # `make test` leaves it out; `make test-all` and CI run it


# url path, h1 title, a text the fully rendered page shows
PAGES = (
    ("", "Recoup", "Operations"),
    ("review_queue", "Review queue", "Flagged, undecided"),
    ("return_rates", "Return rates", "Abnormal items"),
    ("operations", "Operations", "Refund cycle time"),
    ("models", "Models", "Policy backtest"),
)
STATE = """(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const h1 = document.querySelector('h1');
  return JSON.stringify({
    running: !app || app.getAttribute('data-test-script-state') !== 'notRunning',
    connected: !!app && app.getAttribute('data-test-connection-state') === 'CONNECTED',
    title: h1 ? h1.innerText.trim() : null,
    text: (() => {
      // the visible words: Material icons are ligature names (home, keyboard_arrow_right), not words
      const body = document.body;
      if (!body) return '';
      const icons = [...body.querySelectorAll('[data-testid="stIconMaterial"], .material-symbols-rounded')];
      const shown = icons.map(i => i.style.display);
      icons.forEach(i => { i.style.display = 'none'; });
      const text = body.innerText;
      icons.forEach((i, k) => { i.style.display = shown[k]; });
      return text;
    })(),
    exceptions: [...document.querySelectorAll('[data-testid="stException"]')].map(e => e.innerText.slice(0, 2000)),
  });
})()"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def chromium_binary() -> str:
    binary = find_chromium()
    if binary is None:
        message = "chromium is not installed (Debian: apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)
    return binary


@pytest.fixture
def server(world: World, tmp_path: Path) -> Iterator[str]:
    database = tmp_path / "recoup.db"
    shutil.copyfile(world.sqlite_file, database)
    port = _free_port()
    environment = {
        **os.environ,
        "RECOUP_ENV": "test",
        "RECOUP_VAR_DIR": str(tmp_path / "var"),
        "RECOUP_DATABASE_URL": f"sqlite:///{database}",
        "RECOUP_MLFLOW_TRACKING_URI": world.mlflow_uri,
        "RECOUP_MLFLOW_ARTIFACT_ROOT": world.artifact_root,
        "RECOUP_DASHBOARD_USERS": str(world.users_file),
    }
    environment.pop("RECOUP_DASHBOARD_AUTOLOGIN", None)
    log = tmp_path / "streamlit.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(APP),
                "--server.headless=true",
                "--server.address=127.0.0.1",
                f"--server.port={port}",
                "--server.fileWatcherType=none",
                "--browser.gatherUsageStats=false",
            ],
            cwd=APP.parents[1],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _rendered(browser: Chromium, title: str, marker: str, timeout: float = 90.0) -> dict:
    """Wait until the script run has finished and the page shows its title and marker (or an exception)
    and the DOM has stayed so for a second; returns the last state."""
    deadline = time.monotonic() + timeout
    stable_since = None
    state: dict = {}
    while time.monotonic() < deadline:
        state = json.loads(browser.evaluate(STATE))
        done = (
            state["connected"]
            and not state["running"]
            and (state["exceptions"] or (state["title"] == title and marker in state["text"]))
        )
        if done:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 1.0:
                return state
        else:
            stable_since = None
        time.sleep(0.25)
    raise AssertionError(f"{title} did not finish rendering in {timeout:.0f} s: {json.dumps(state)[:1500]}")


SIGN_IN = "sign in to continue"
# What a page must never show a user: Python's missing values, and identifiers from the code or database
# (snake_case words such as line_no or size_rank).
RAW = (
    (re.compile(r"\bNone\b"), "None"),
    (re.compile(r"\b(?:nan|NaN|NaT|<NA>)\b"), "a missing value"),
    (re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b"), "a raw column or code name"),
)


def _raw_text(text: str) -> list[str]:
    found = []
    for pattern, what in RAW:
        for match in pattern.finditer(text):
            around = text[max(match.start() - 60, 0) : match.end() + 60].replace("\n", " | ")
            found.append(f"{what} {match.group(0)!r} in ...{around}...")
    return found


def _sign_in_form(browser: Chromium) -> None:
    browser.wait_for(
        f"document.body && document.body.innerText.includes({json.dumps(SIGN_IN)})"
        " && !!document.querySelector('input[type=password]')",
        timeout=60,
    )


def _click(browser: Chromium, label: str) -> None:
    clicked = browser.evaluate(
        "(() => { const b = [...document.querySelectorAll('button')]"
        f".find(b => b.innerText.trim() === {json.dumps(label)}); if (!b) return false; b.click(); return true; }})()"
    )
    assert clicked, f"no button {label!r} on the page"


def _session_cookie(browser: Chromium) -> list[dict]:
    return [c for c in browser.cookies() if c["name"] == "recoup_session"]


def test_sign_in_once_then_every_page_by_url_and_reload(
    chromium_binary: str, server: str, tmp_path: Path, record_property
) -> None:
    shots = Path(os.environ.get("RECOUP_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    record_property("screenshots", str(shots))
    print(f"\ndashboard screenshots: {shots}")
    browser = Chromium.start(chromium_binary, tmp_path / "chromium-profile")
    problems = []
    try:
        browser.open(f"{server}/operations")
        _sign_in_form(browser)
        browser.type_into('input[aria-label="User name"]', "ada")
        browser.type_into("input[type=password]", PASSWORDS["ada"])
        _click(browser, "Sign in")
        _rendered(browser, "Recoup", "Operations")
        cookie = _session_cookie(browser)
        assert cookie, "signing in left no session cookie"
        assert cookie[0]["expires"] > time.time() + 3600, cookie
        for path, title, marker in PAGES:
            for visit in ("opened", "reloaded"):
                if visit == "opened":
                    browser.open(f"{server}/{path}")
                else:
                    browser.reload()
                time.sleep(0.5)  # let the new page's run start before polling its state
                state = _rendered(browser, title, marker, timeout=120)
                where = f"{title} ({visit} by URL)"
                if SIGN_IN in state["text"]:
                    problems.append(f"{where}: signed out")
                if state["exceptions"]:
                    problems.append(f"{where}: {state['exceptions']}")
                if "Page not found" in state["text"]:
                    problems.append(f"{where}: Streamlit says the page was not found")
                problems += [f"{where}: {found}" for found in _raw_text(state["text"])]
            browser.screenshot(shots / f"{path or 'home'}.png")
        _click(browser, "Sign out")
        _sign_in_form(browser)
        browser.reload()
        time.sleep(0.5)
        _sign_in_form(browser)
        assert not _session_cookie(browser), "the session cookie outlived the sign-out"
    finally:
        browser.close()
    assert not problems, "\n".join(problems)
    assert sorted(p.name for p in shots.glob("*.png")) == sorted(
        f"{path or 'home'}.png" for path, _, _ in PAGES
    )
    assert all(p.stat().st_size > 20_000 for p in shots.glob("*.png"))
