"""Small presentation helpers shared by the pages: number formats and empty-state messages."""

from __future__ import annotations

import math

import streamlit as st

from dashboards import data


def money(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.2f}"


def percent(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}%}"


def count(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.0f}"


def missing_tables(url: str, names: tuple[str, ...]) -> list[str]:
    present = data.table_names(url)
    return [name for name in names if name not in present]


def require_analytics(url: str, names: tuple[str, ...]) -> None:
    """Stop the page with an explanation when the analytics tables have not been built yet."""
    missing = missing_tables(url, names)
    if missing:
        st.info(
            "The analytics tables are not built yet "
            f"({', '.join(missing)}). They are written by the Dagster analytics asset "
            "(`dagster asset materialize` / the daily schedule) or by `recoup demo`."
        )
        st.stop()
