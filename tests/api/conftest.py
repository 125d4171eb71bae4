"""A real uvicorn server on loopback for the API tests; each test points it at its own database."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine

from api.main import create_app
from api.state import AppState
from oms.apikeys import SCOPES, create_key
from oms.policy import load_policy
from oms.settings import DEFAULT_POLICY_PATH
from oms.uow import unit_of_work
from tests.factories import NOW, load_lifecycle_world

CLOCK = dt.datetime.fromisoformat(NOW.replace("Z", "+00:00"))


@dataclass
class LiveServer:
    app: FastAPI
    url: str


@pytest.fixture(scope="session")
def live_server() -> Iterator[LiveServer]:
    app = create_app(None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield LiveServer(app, f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(timeout=5)


@dataclass
class Api:
    url: str
    keys: dict[str, str]
    client: httpx.Client
    engine: Engine

    def headers(self, scope: str = "admin", **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}", **extra}


@pytest.fixture
def api(live_server: LiveServer, engine: Engine, tmp_path: Path) -> Iterator[Api]:
    load_lifecycle_world(engine, tmp_path / "world")
    with unit_of_work(engine) as session:
        keys = {scope: create_key(session, f"key-{scope}", [scope]) for scope in SCOPES}
        keys["till"] = create_key(session, "till", ["returns:read", "returns:write"])
    live_server.app.state.recoup = AppState(
        engine=engine, policy=load_policy(DEFAULT_POLICY_PATH), clock=lambda: CLOCK
    )
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        yield Api(live_server.url, keys, client, engine)
    live_server.app.state.recoup = None
