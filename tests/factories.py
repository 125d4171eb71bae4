"""Test data: contract directories built from the hand-readable sample, and database fingerprints."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import Connection, select

from oms.tables import metadata
from simulator.sample import sample_tables, write_csv_tables


def sample_rows(**kwargs: int) -> dict[str, list[dict[str, str]]]:
    return sample_tables(**kwargs)


def write_tables(directory: Path, tables: dict[str, list[dict[str, str]]]) -> Path:
    return write_csv_tables(directory, tables)


def fingerprint(connection: Connection) -> dict[str, tuple[int, str]]:
    """Row count and a checksum of every table's content, in primary-key order."""
    result: dict[str, tuple[int, str]] = {}
    for table in metadata.sorted_tables:
        digest = hashlib.sha256()
        rows = connection.execute(select(table).order_by(*table.primary_key.columns)).all()
        for row in rows:
            digest.update(repr(tuple(row)).encode())
        result[table.name] = (len(rows), digest.hexdigest()[:16])
    return result
