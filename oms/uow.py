"""Units of work: one transaction per command, with concurrency failures turned into `ConflictError`, and
a lost database connection retried on a new one where that is safe (`retrying`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from oms.errors import RecoupError
from oms.lifecycle import ConflictError

T = TypeVar("T")

# Messages of the errors a losing concurrent writer gets (SQLite busy/snapshot, PostgreSQL
# serialization failure or deadlock): the change did not happen and can be retried.
_CONFLICT_MARKERS = (
    "database is locked",
    "could not serialize",
    "deadlock detected",
    "database table is locked",
)


@contextmanager
def unit_of_work(engine: Engine, *, write: bool = True) -> Iterator[Session]:
    """A session inside one transaction: committed on success, rolled back on any error.

    On SQLite a writing unit takes the write lock when it begins (BEGIN IMMEDIATE), so concurrent
    writers queue up instead of failing when one commits between another's read and write.

    A reading unit (`write=False`) never keeps a change: on PostgreSQL its transaction is READ ONLY
    (the database refuses writes) and ends with COMMIT, because a ROLLBACK makes psycopg drop every
    prepared statement of the connection and the hot read paths (scoring) would be re-planned on every
    request; on SQLite it is rolled back.

    A reading unit also sees one snapshot: on PostgreSQL it is REPEATABLE READ, so the statements of a
    read (the policy context and the features of a score, a return and its lines) all see the database
    as of the same moment; under READ COMMITTED each statement takes its own snapshot, and a return
    committed in between would count in some of them and not in others. A read-only REPEATABLE READ
    transaction never fails to serialize. SQLite transactions are serializable already.
    """
    sqlite = engine.dialect.name == "sqlite"
    bind = engine.execution_options(sqlite_begin="IMMEDIATE") if write and sqlite else engine
    with Session(bind, expire_on_commit=False) as session:
        try:
            with session.begin():
                if not write and not sqlite:
                    session.connection(
                        execution_options={"postgresql_readonly": True, "isolation_level": "REPEATABLE READ"}
                    )
                yield session
                if not write and sqlite:
                    # detach what was read with its loaded state (as a commit would leave it), then drop
                    # anything written
                    session.expunge_all()
                    session.rollback()
        except StaleDataError as exc:
            raise ConflictError("the return was changed by someone else; re-read it and retry") from exc
        except DBAPIError as exc:
            if any(marker in str(exc.orig).lower() for marker in _CONFLICT_MARKERS):
                raise ConflictError("a concurrent change won; re-read the return and retry") from exc
            raise


class CommitUnknownError(RecoupError):
    """The connection was lost while the transaction committed: the change may or may not be stored."""


def is_disconnect(exc: BaseException) -> bool:
    """Whether `exc` is the loss of the database connection (terminated backend, network, restart):
    SQLAlchemy has invalidated the connection, and the pool hands out a new one next."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


RETRY_ATTEMPTS = 3


def retrying(
    engine: Engine,
    work: Callable[[Session], T],
    *,
    write: bool = True,
    replayable: bool = False,
    attempts: int = RETRY_ATTEMPTS,
) -> T:
    """`work` in a unit of work, run again on a new connection when the connection is lost.

    A connection lost before the commit took nothing with it (the database rolls back what it had), so
    reads and writes alike run again. One lost during a write's commit leaves the outcome unknown: the
    write runs again only when `replayable` (its Idempotency-Key is stored in the same transaction, so a
    change that did commit is found and replayed); otherwise `CommitUnknownError`. A pooled connection
    that the server dropped while idle fails on first use: the pool then replaces every connection of
    that age, so one more attempt is usually enough; `attempts` covers connections lost again meanwhile."""
    for attempt in range(1, attempts + 1):
        committing = False
        try:
            with unit_of_work(engine, write=write) as session:
                result = work(session)
                committing = True
            return result
        except DBAPIError as exc:
            if not is_disconnect(exc) or attempt == attempts:
                raise
            if write and committing and not replayable:
                raise CommitUnknownError(
                    "the database connection was lost while the change was being committed: it may or may "
                    "not have been made; read the return to see, and send changes with an Idempotency-Key "
                    "so that a retry is always safe"
                ) from exc
            time.sleep(0.005 * attempt)
    raise AssertionError("unreachable")
