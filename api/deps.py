"""FastAPI dependencies as `Annotated` aliases: the app state, the calling principal, the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from api.state import AppState
from oms.apikeys import Principal


async def get_state(request: Request) -> AppState:
    # async: FastAPI runs a plain function in its threadpool, a thread hop per request for a lookup
    return request.app.state.recoup


async def get_principal(request: Request) -> Principal:
    # set by the API-key middleware, which has already refused requests without a valid key
    return request.state.principal


State = Annotated[AppState, Depends(get_state)]
Caller = Annotated[Principal, Depends(get_principal)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=128,
        description="Retry-safe POSTs: the same key and body return the same response without a second effect.",
    ),
]
