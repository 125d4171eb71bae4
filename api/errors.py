"""Domain errors -> HTTP: not found 404, illegal or conflicting change 409, bad request 422; the database
out of reach (after `oms.uow.retrying`'s attempts) 503 with Retry-After, never a bare 500."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.responses import JSONResponse

from oms.apikeys import ApiKeyError
from oms.disposition import InfeasibleDispositionError
from oms.errors import RecoupError
from oms.lifecycle import (
    ConflictError,
    IllegalTransitionError,
    InsufficientStockError,
    InvalidRequestError,
    NotFoundError,
    RefundHeldError,
)
from oms.refunds import RefundError
from oms.uow import CommitUnknownError, is_disconnect


class IdempotencyMismatchError(RecoupError):
    """The Idempotency-Key was used before with another request."""


class NotDocumentedError(RecoupError):
    """The API documentation is switched off (RECOUP_API_DOCS)."""


STATUS: list[tuple[type[Exception], int, str]] = [
    (CommitUnknownError, 503, "commit_unknown"),
    (NotFoundError, 404, "not_found"),
    (NotDocumentedError, 404, "not_found"),
    (RefundHeldError, 409, "refund_held"),
    (IllegalTransitionError, 409, "illegal_transition"),
    (InsufficientStockError, 409, "insufficient_stock"),
    (ConflictError, 409, "conflict"),
    (IdempotencyMismatchError, 422, "idempotency_key_reused"),
    (InvalidRequestError, 422, "invalid_request"),
    (InfeasibleDispositionError, 422, "infeasible_disposition"),
    (RefundError, 422, "refund_refused"),
    (ApiKeyError, 422, "invalid_request"),
]


def error_body(exc: Exception) -> tuple[int, dict]:
    for kind, status, code in STATUS:
        if isinstance(exc, kind):
            return status, {"error": {"code": code, "message": str(exc)}}
    return 422, {"error": {"code": "invalid_request", "message": str(exc)}}


def database_error(exc: DBAPIError) -> tuple[int, dict]:
    """A database failure as an answer: the database out of reach (connection lost or refused) is 503;
    anything else is 500, named by the error's class only (its text may hold data)."""
    if is_disconnect(exc) or isinstance(exc, OperationalError):
        detail = str(exc.orig or exc).strip().splitlines()[0][:200]
        message = f"the database is out of reach: {detail}"
        return 503, {"error": {"code": "database_unavailable", "message": message}}
    message = f"the database refused the request ({type(exc.orig).__name__})"
    return 500, {"error": {"code": "database_error", "message": message}}


def install(app: FastAPI) -> None:
    @app.exception_handler(RecoupError)
    async def _domain(_: Request, exc: RecoupError) -> JSONResponse:
        status, body = error_body(exc)
        return JSONResponse(body, status_code=status, headers={"Retry-After": "1"} if status == 503 else None)

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        status, body = database_error(exc)
        return JSONResponse(body, status_code=status, headers={"Retry-After": "1"} if status == 503 else None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"where": ".".join(str(p) for p in error.get("loc", ())), "message": str(error.get("msg", ""))}
            for error in exc.errors()[:20]
        ]
        first = problems[0] if problems else {"where": "request", "message": "invalid"}
        return JSONResponse(
            {
                "error": {"code": "invalid_request", "message": f"{first['where']}: {first['message']}"},
                "problems": problems,
            },
            status_code=422,
        )
