"""A lost database connection is not a 5xx: PostgreSQL terminates the API's backends again and again
under a steady load of scores, reads and lifecycle commands, and every answer is a 2xx or 4xx."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from api.main import engine_for
from api.serving_log import ServingLogWriter
from api.state import AppState
from oms.apikeys import Principal, create_key
from oms.db import make_engine
from oms.policy import load_policy
from oms.settings import DEFAULT_POLICY_PATH
from oms.uow import unit_of_work
from tests.api.conftest import CLOCK, LiveServer
from tests.conftest import truncate
from tests.factories import load_lifecycle_world

SCORE = {
    "channel": "store",
    "order_id": "W-1001",
    "location_id": "S1",
    "lines": [{"order_line_no": 2, "quantity": 1, "reason": "doesnt_fit"}],
}
TERMINATE = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
)


@pytest.fixture
def production_like(live_server: LiveServer, postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The live server with an API process's own engines (commands, scores) and serving log."""
    truncate(postgres_url)
    engine = engine_for(postgres_url)
    load_lifecycle_world(engine, tmp_path / "world")
    with unit_of_work(engine) as session:
        key = create_key(session, "till", ["returns:read", "returns:write"])
    state = AppState(
        engine=engine,
        policy=load_policy(DEFAULT_POLICY_PATH),
        clock=lambda: CLOCK,
        score_engine=engine_for(postgres_url, scoring=True),
        serving_log=ServingLogWriter(engine, interval=0.05),
    )
    live_server.app.state.recoup = state
    yield live_server.url, key
    live_server.app.state.recoup = None
    state.serving_log.close()
    engine.dispose()
    state.score_engine.dispose()


@pytest.mark.postgres
def test_terminated_backends_under_load_give_no_5xx(
    production_like: tuple[str, str], postgres_url: str
) -> None:
    url, key = production_like
    headers = {"Authorization": f"Bearer {key}"}
    stop = threading.Event()
    answers: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    serial = itertools.count()

    def client(kind: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                n = next(serial)
                if kind == "score":
                    response = http.post("/v1/returns/score", json=SCORE, headers=headers)
                elif kind == "read":
                    response = http.get("/v1/returns", params={"order_id": "W-1001"}, headers=headers)
                else:  # a mail return, then its cancellation, each with its Idempotency-Key
                    create = {**SCORE, "channel": "mail", "location_id": "W1"}
                    response = http.post(
                        "/v1/returns", json=create, headers={**headers, "Idempotency-Key": f"create-{n}"}
                    )
                    if response.status_code == 201:
                        answers[(kind, response.status_code)] += 1
                        response = http.post(
                            f"/v1/returns/{response.json()['return_id']}/cancel",
                            json={},
                            headers={**headers, "Idempotency-Key": f"cancel-{n}"},
                        )
                answers[(kind, response.status_code)] += 1
                if response.status_code >= 500:
                    failures.append(f"{kind} {response.status_code}: {response.text[:300]}")
                time.sleep(0.04)

    admin = make_engine(postgres_url, isolation_level="AUTOCOMMIT")
    terminated = 0
    threads = [threading.Thread(target=client, args=(kind,)) for kind in ("score", "score", "read", "write")]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            time.sleep(0.25)
            with admin.connect() as connection:
                terminated += connection.execute(TERMINATE).scalar_one()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        admin.dispose()
    assert terminated >= 20, terminated  # the faults happened
    assert failures == [], (len(failures), failures[:5], answers)
    for kind in ("score", "read", "write"):
        assert answers[(kind, 200)] + answers[(kind, 201)] > 20, answers


def test_a_database_out_of_reach_still_gets_answers(live_server: LiveServer) -> None:
    """Nothing listens where the database should be: a score is answered (degraded, for review), a read is
    a 503 with Retry-After, never a bare 500; so is an API key that is not cached yet."""
    nowhere = make_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/nowhere", connect_args={"connect_timeout": 2}
    )
    state = AppState(engine=nowhere, policy=load_policy(DEFAULT_POLICY_PATH), clock=lambda: CLOCK)
    token = "rk_cachedkey.secret"
    state.keys._entries[token] = (
        time.monotonic(),
        Principal("cachedkey", "till", frozenset({"returns:read"})),
    )
    live_server.app.state.recoup = state
    try:
        with httpx.Client(base_url=live_server.url, timeout=30) as http:
            headers = {"Authorization": f"Bearer {token}"}
            score = http.post("/v1/returns/score", json=SCORE, headers=headers)
            assert score.status_code == 200, score.text
            body = score.json()
            assert body["degraded"] and body["decision"] == "review" and body["score"] is None
            assert [r["code"] for r in body["reasons"]] == ["database_unavailable"]
            read = http.get("/v1/returns/R-1", headers=headers)
            assert read.status_code == 503 and read.headers["Retry-After"] == "1", read.text
            assert read.json()["error"]["code"] == "database_unavailable"
            unknown_key = http.get("/v1/returns/R-1", headers={"Authorization": "Bearer rk_other.secret"})
            assert (
                unknown_key.status_code == 503
                and unknown_key.json()["error"]["code"] == "database_unavailable"
            )
    finally:
        live_server.app.state.recoup = None
        nowhere.dispose()
