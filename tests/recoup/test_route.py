"""The README's route, as a new user runs it: simulate, import, train, create a key, serve, send returns;
then `recoup skew` finds the API computed every feature as training did (the snapshots online scoring
reads were written by import and train), and finds it out when they are wrong."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.recoup.test_cli import recoup

pytestmark = pytest.mark.slow  # `make test` leaves it out; `make test-all` and CI run it


def _orders_to_return(data: Path, count: int) -> list[str]:
    """The latest orders of known customers that nothing was returned from yet."""
    orders = pd.read_csv(data / "orders.csv", parse_dates=["placed_at"])
    returned = set(pd.read_csv(data / "returns.csv")["order_id"].dropna())
    fresh = orders[orders["customer_id"].notna() & ~orders["order_id"].isin(returned)]
    return fresh.sort_values("placed_at")["order_id"].tail(count).tolist()


def _return(client: httpx.Client, order_id: str) -> None:
    response = client.post(
        "/v1/returns",
        json={
            "channel": "mail",
            "order_id": order_id,
            "location_id": "RC1",
            "lines": [{"order_line_no": 1, "quantity": 1, "reason": "changed_mind"}],
        },
    )
    assert response.status_code == 201, response.text


def _skew_after(env: dict[str, str], served: int, deadline: float) -> subprocess.CompletedProcess[str]:
    """`recoup skew` once the serving log holds `served` returns (it is written in the background)."""
    database = env["RECOUP_DATABASE_URL"].removeprefix("sqlite:///")
    while time.monotonic() < deadline:
        with sqlite3.connect(database) as db:
            logged = db.execute("SELECT count(*) FROM serving_log WHERE return_id IS NOT NULL").fetchone()[0]
        if logged >= served:
            break
        time.sleep(0.2)
    return recoup("skew", env=env)


def test_the_documented_route_serves_the_features_training_computed(tmp_path: Path) -> None:
    env = {
        "RECOUP_DATABASE_URL": f"sqlite:///{tmp_path / 'recoup.db'}",
        "RECOUP_VAR_DIR": str(tmp_path / "var"),
        "RECOUP_ENV": "development",
    }
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=282)).date().isoformat()  # ends about a week ago
    data = tmp_path / "data"
    steps = [
        ("simulate", "--customers", "5000", "--months", "9", "--start", start, "--out", str(data)),
        ("import", str(data)),
        ("train",),
    ]
    for step in steps:
        done = recoup(*step, env=env)
        assert done.returncode == 0, (step, done.stderr)
        if step[0] in ("import", "train"):
            assert "snapshots for online scoring" in done.stdout, done.stdout
    assert "review queue at the policy" in done.stdout, done.stdout
    assert "recoup-fraud version 1 serves" in done.stdout, done.stdout  # a model: every feature is served
    created = recoup("apikey", "create", "--name", "till", "--scope", "returns:write", env=env)
    assert created.returncode == 0, created.stderr
    key = next(word for word in created.stdout.split() if word.startswith("rk_"))

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "recoup.cli", "serve", "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "recoup serve did not start"
            time.sleep(0.2)
        orders = _orders_to_return(data, 12)
        with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            for order_id in orders[:8]:
                _return(client, order_id)
            skew = _skew_after(env, 8, time.monotonic() + 30)
            assert skew.returncode == 0, skew.stderr
            assert skew.stdout.startswith("no skew: ") and "on 8 served returns" in skew.stdout, skew.stdout

            # the check can fail: scored from no snapshots, product return rates are wrong
            with sqlite3.connect(tmp_path / "recoup.db") as db:
                db.execute("DELETE FROM product_stats")
            for order_id in orders[8:]:
                _return(client, order_id)
            skew = _skew_after(env, 12, time.monotonic() + 30)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert skew.returncode == 1, skew.stdout
    assert "features differ from training on 12 served returns" in skew.stderr, skew.stderr
    assert "return_rate" in skew.stderr, skew.stderr
