"""Running a command for an endpoint: one transaction, with Idempotency-Key replay stored inside it."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse

from api.errors import IdempotencyMismatchError
from api.state import AppState
from oms.apikeys import Principal
from oms.lifecycle import ConflictError
from oms.tables import IdempotencyKey
from oms.uow import retrying

Command = Callable[[Session], tuple[int, Any]]


def actor(caller: Principal) -> str:
    return f"api:{caller.name}"


def run_command(
    state: AppState, caller: Principal, key: str | None, path: str, body: BaseModel | None, command: Command
) -> JSONResponse:
    """Run `command` in one transaction (again on a new connection if the connection is lost, where that
    is safe: `oms.uow.retrying`). With an Idempotency-Key, the response is stored in the same
    transaction as the effect: a retry with the same key and body replays it (no second effect), the same
    key with another body is refused (422). Failed commands (4xx) are not stored: a retry runs again."""
    if key is None:
        status, out = retrying(state.engine, lambda session: _encoded(command(session)))
        return JSONResponse(out, status_code=status)
    payload = body.model_dump(mode="json") if body is not None else {}
    digest = hashlib.sha256(json.dumps({"path": path, "body": payload}, sort_keys=True).encode()).hexdigest()

    def keyed(session: Session) -> tuple[int, Any, bool]:
        stored = session.get(IdempotencyKey, (caller.key_id, key))
        if stored is not None:
            if stored.request_hash != digest:
                raise IdempotencyMismatchError(
                    "this Idempotency-Key was already used with a different request; use a new key"
                )
            return stored.status_code, stored.response, True
        status, encoded = _encoded(command(session))
        session.add(
            IdempotencyKey(
                key_id=caller.key_id,
                idempotency_key=key,
                request_hash=digest,
                status_code=status,
                response=encoded,
                created_at=dt.datetime.now(dt.UTC),
            )
        )
        return status, encoded, False

    for attempt in range(2):
        try:
            # replayable: a commit whose outcome was lost is found by its key on the next attempt
            status, encoded, replayed = retrying(state.engine, keyed, replayable=True)
        except IntegrityError as exc:
            # a concurrent request with the same key committed first: replay its response
            if attempt == 1:
                raise ConflictError("a concurrent request changed the same data; retry") from exc
            continue
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        return JSONResponse(encoded, status_code=status, headers=headers)
    raise AssertionError("unreachable")


def _encoded(result: tuple[int, Any]) -> tuple[int, Any]:
    status, out = result
    return status, jsonable_encoder(out)
