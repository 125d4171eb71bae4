"""What the API process holds: the engine, the policy, the disposition chooser, the key cache."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from api.batching import Batcher
from api.scoring import ModelHolder, ModelScorer
from api.serving_log import ServingLogWriter
from oms.apikeys import Principal, verify
from oms.disposition import DispositionChooser, StaticChooser
from oms.policy import Policy
from oms.uow import retrying


class KeyCache:
    """Verified keys for `ttl` seconds, so the hot path does not hit the database per request.

    A revoked key stops working within `ttl` seconds (60 by default).
    """

    def __init__(self, ttl: float = 60.0, size: int = 10_000) -> None:
        self.ttl, self.size = ttl, size
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """(True, principal) when the token was verified less than `ttl` seconds ago; no I/O, so the
        middleware can call it on the event loop and skip a thread hop per request."""
        hit = self._entries.get(token)  # a dict read is atomic; writers hold the lock
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return True, hit[1]
        return False, None

    def get(self, engine: Engine, token: str) -> Principal | None:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(token)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        principal = retrying(engine, lambda session: verify(session, token), write=False)
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[token] = (now, principal)
        return principal


@dataclass
class AppState:
    engine: Engine
    policy: Policy
    serve_docs: bool = True  # /docs, /redoc and /openapi.json (RECOUP_API_DOCS)
    chooser: DispositionChooser = field(default_factory=StaticChooser)
    keys: KeyCache = field(default_factory=KeyCache)
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    models: ModelHolder | None = None  # the champion models; None: policy decisions only (degraded)
    serving_log: ServingLogWriter | None = None
    score_max_batch: int = 32  # most scores served together (`api.batching`)
    score_batch_wait: float = 0.0  # seconds a batch waits for company while the server is busy
    batchers: dict[str, Batcher] = field(default_factory=dict)  # per process, made on first use
    # where scores read first (their transactions only read): a replica of `engine`, say; None: the
    # state database
    read_engine: Engine | None = None
    # where scores read the state database: a second pool on it whose connections psycopg prepares
    # nothing on, so that `oms.driver` keeps the scoring reads' prepared statements itself
    # (`make_engine(driver_prepares=True)`); None: `engine`
    score_engine: Engine | None = None
    read_engine_failed_at: float = -float("inf")  # time.monotonic() of its last failure
    read_engine_rest: float = 30.0  # seconds scores read `engine` after a failure of `read_engine`

    def scorer(self) -> ModelScorer:
        return ModelScorer(self.models or ModelHolder(lambda: (None, None)), self.policy)
