"""What Alembic compares: derived tables rebuilt by the pipelines (`analytics_*`) are not migrated."""

from __future__ import annotations


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    return not (type_ == "table" and name is not None and name.startswith("analytics_"))
