"""Domain errors -> HTTP: not found 404, illegal or conflicting change 409, bad request 422."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse

from oms.apikeys import ApiKeyError
from oms.disposition import InfeasibleDispositionError
from oms.errors import RecoupError
from oms.lifecycle import ConflictError, IllegalTransitionError, InvalidRequestError, NotFoundError
from oms.refunds import RefundError


class IdempotencyMismatchError(RecoupError):
    """The Idempotency-Key was used before with another request."""


class NotDocumentedError(RecoupError):
    """The API documentation is switched off (RECOUP_API_DOCS)."""


STATUS: list[tuple[type[Exception], int, str]] = [
    (NotFoundError, 404, "not_found"),
    (NotDocumentedError, 404, "not_found"),
    (IllegalTransitionError, 409, "illegal_transition"),
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


def install(app: FastAPI) -> None:
    @app.exception_handler(RecoupError)
    async def _domain(_: Request, exc: RecoupError) -> JSONResponse:
        status, body = error_body(exc)
        return JSONResponse(body, status_code=status)

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
