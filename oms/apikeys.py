"""API keys: created once (the secret is shown once), stored hashed, checked in constant time.

A key looks like `rk_<key_id>.<secret>`; only SHA-256 of the secret is stored (the secret is 256 random
bits, so a plain hash is enough: there is nothing to brute-force). Scopes: `returns:read`,
`returns:write`, `review`, `admin` (admin implies every other scope).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from oms.errors import RecoupError
from oms.tables import ApiKey

SCOPES = ("returns:read", "returns:write", "inventory:write", "review", "admin")
PREFIX = "rk_"


class ApiKeyError(RecoupError):
    """A key cannot be created as asked (unknown scope, empty name)."""


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, name: str, scopes: list[str] | tuple[str, ...]) -> str:
    """Store a new key and return its full text (shown once; only a hash is kept)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ApiKeyError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not name.strip():
        raise ApiKeyError("an API key needs a name")
    if not scopes:
        raise ApiKeyError(f"an API key needs at least one scope ({', '.join(SCOPES)})")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            key_id=key_id,
            name=name.strip()[:128],
            secret_hash=_digest(secret),
            scopes=" ".join(sorted(set(scopes))),
            created_at=dt.datetime.now(dt.UTC),
        )
    )
    session.flush()
    return f"{PREFIX}{key_id}.{secret}"


def verify(session: Session, token: str) -> Principal | None:
    """The principal of a valid, unrevoked key; None otherwise."""
    if not token.startswith(PREFIX) or "." not in token:
        return None
    key_id, _, secret = token[len(PREFIX) :].partition(".")
    if not key_id or not secret or len(key_id) > 32:
        return None
    row = session.execute(select(ApiKey).where(ApiKey.key_id == key_id)).scalar_one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_hash, _digest(secret)):
        return None
    return Principal(row.key_id, row.name, frozenset(row.scopes.split()))


def revoke(session: Session, key_id: str) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = dt.datetime.now(dt.UTC)
    return True
