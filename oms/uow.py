"""Units of work: one transaction per command, with concurrency failures turned into `ConflictError`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from oms.lifecycle import ConflictError

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
