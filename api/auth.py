"""API-key authentication and scopes, checked before anything else (so a request without a valid key
gets 401 and one without the scope 403, whatever its body)."""

from __future__ import annotations

import re
from typing import Any

import anyio
from sqlalchemy.exc import DBAPIError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import database_error

SCOPE_EXTENSION = "x-required-scope"
_DECISION = re.compile(r"^/v1/returns/[^/]+/decision/?$")
_SCORE = re.compile(r"^/v1/returns/score/?$")
_STOCK = re.compile(r"^/v1/inventory/[^/]+/[^/]+/?$")


def needs(scope: str) -> dict[str, Any]:
    """`openapi_extra` for a route: documents the scope it needs (the middleware enforces the same rule,
    and a test checks every route's declaration against `required_scope`)."""
    return {SCOPE_EXTENSION: scope}


def required_scope(method: str, path: str) -> str:
    """The scope a request needs: reads need returns:read, analyst decisions review, stock counts
    inventory:write, other writes returns:write; any other method admin."""
    if method in ("GET", "HEAD"):
        return "returns:read"
    if method == "POST":
        if _DECISION.match(path):
            return "review"
        if _SCORE.match(path):
            return "returns:read"
        return "returns:write"
    if method == "PUT" and _STOCK.match(path):
        return "inventory:write"
    return "admin"


def _token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            text = value.decode("latin-1")
            if text[:7].lower() == "bearer ":
                return text[7:].strip()
        elif name == b"x-api-key":
            return value.decode("latin-1").strip()
    return None


def _error(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="recoup"'} if status == 401 else None
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class ApiKeyMiddleware:
    """Every path under /v1 needs a valid key carrying the endpoint's scope."""

    def __init__(self, app: ASGIApp, prefix: str = "/v1") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state.recoup
        token = _token(scope)
        if not token:
            await _error(401, "unauthenticated", "an API key is required (Authorization: Bearer rk_...)")(
                scope, receive, send
            )
            return
        known, principal = state.keys.cached(token)
        if not known:
            try:
                principal = await anyio.to_thread.run_sync(state.keys.get, state.engine, token)
            except DBAPIError as exc:  # outside the app's exception handlers: answered here
                status, body = database_error(exc)
                await JSONResponse(body, status_code=status, headers={"Retry-After": "1"})(
                    scope, receive, send
                )
                return
        if principal is None:
            await _error(401, "unauthenticated", "the API key is unknown or revoked")(scope, receive, send)
            return
        needed = required_scope(scope["method"], scope["path"])
        if not principal.allows(needed):
            await _error(403, "forbidden", f"this key lacks the scope {needed!r}")(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)
