"""Small presentation helpers shared by the pages: number formats and empty-state messages."""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd
import streamlit as st

from dashboards import data


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def money(value: float | None) -> str:
    if _missing(value):
        return "–"
    return f"{value:,.2f}"


def percent(value: float | None, digits: int = 1) -> str:
    if _missing(value):
        return "–"
    return f"{value:.{digits}%}"


def number(value: float | None, digits: int = 2) -> str:
    if _missing(value):
        return "–"
    return f"{value:.{digits}f}"


def count(value: float | None) -> str:
    if _missing(value):
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


# Codes shown to people: enum values (pending_review, return_to_vendor, doesnt_fit) and feature names
# (cust_spend_90d) read as words. Only the exceptions to "underscores become spaces" are listed.
_WORDS = {"doesnt": "doesn't", "boris": "BORIS", "sku": "item", "cust": "customer", "emp": "employee"}
_CODES = {"store_credit": "store credit", "original_tender": "original tender", "all": "all"}


def label(code: object) -> str:
    """Human words for a code value: `pending_review` -> "pending review", `doesnt_fit` -> "doesn't fit";
    "–" for a missing value."""
    if _missing(code):
        return "–"
    text = str(code)
    if text in _CODES:
        return _CODES[text]
    return " ".join(_WORDS.get(word, word) for word in text.split("_"))


def feature_label(name: str) -> str:
    """A feature name in words with its window: `cust_spend_90d` -> "customer spend (90 days)"."""
    words = str(name).split("_")
    window = ""
    if words and words[-1].endswith("d") and words[-1][:-1].isdigit():
        window = f" ({words.pop()[:-1]} days)"
    return " ".join(_WORDS.get(word, word) for word in words) + window


def labelled(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """`frame` with the code values of `columns` in words (for charts and tables)."""
    return frame.assign(**{column: frame[column].map(label) for column in columns if column in frame})


_CODE = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")
_IDS = ("sku", "id", "size", "period", "month")


def _auto_config(column: str, values: pd.Series) -> dict[str, Any]:
    name = str(column)
    title = feature_label(name)
    title = title[:1].upper() + title[1:]
    if pd.api.types.is_bool_dtype(values):
        return st.column_config.CheckboxColumn(title)
    if pd.api.types.is_numeric_dtype(values):
        if any(word in name for word in ("rate", "share", "precision", "recall")):
            return st.column_config.NumberColumn(title, format="percent")
        if any(word in name for word in ("value", "amount", "loss", "refunded", "cost", "price")):
            return st.column_config.NumberColumn(title, format="%.2f")
        if pd.api.types.is_integer_dtype(values):
            return st.column_config.NumberColumn(title, format="%d")
        return st.column_config.NumberColumn(title, format="%.2f")
    if pd.api.types.is_datetime64_any_dtype(values):
        return st.column_config.DatetimeColumn(title, format="YYYY-MM-DD HH:mm")
    return st.column_config.TextColumn(title)


def _is_code_column(column: str, values: pd.Series) -> bool:
    if str(column).endswith("_id") or str(column) in _IDS:
        return False
    if not (pd.api.types.is_string_dtype(values) or values.dtype == object):
        return False
    present = values.dropna()
    return len(present) > 0 and present.map(lambda v: isinstance(v, str) and bool(_CODE.match(v))).all()


def dataframe(frame: pd.DataFrame, *, column_config: dict[str, Any] | None = None, **options: Any) -> Any:
    """`st.dataframe` with people's words: every column gets a title (`value_refunded` -> "Value
    refunded") and a format (rates as percentages, money with two decimals) unless `column_config` says
    otherwise, and code values (`pending_review`, `doesnt_fit`) read as words. Missing values show as "–"."""
    shown = frame.copy()
    for column in shown.columns:
        if _is_code_column(column, shown[column]):
            shown[column] = shown[column].map(lambda v: label(v) if isinstance(v, str) else v)
    config: dict[str, Any] = {}
    given = column_config or {}
    for column in shown.columns:
        auto = _auto_config(column, shown[column])
        chosen = given.get(column)
        if chosen is None:
            config[column] = auto
        elif isinstance(chosen, str):
            config[column] = {**auto, "label": chosen}
        else:
            config[column] = {**auto, **{k: v for k, v in dict(chosen).items() if v is not None}}
    for column in shown.columns:  # a missing value shows as "–", never as "None"
        if shown[column].isna().any():
            shown[column], config[column] = _with_dashes(shown[column], config[column])
    options.setdefault("hide_index", True)
    return st.dataframe(shown, column_config=config, **options)


def _with_dashes(values: pd.Series, config: dict[str, Any]) -> tuple[pd.Series, dict[str, Any]]:
    """A column holding missing values as text: the values formatted as the column's config would show
    them, "–" where missing (Streamlit's grid shows a missing value as "None")."""
    kind = (config.get("type_config") or {}).get("type")
    if kind in ("progress", "checkbox"):
        return values, config
    present = values.notna()
    if kind == "number" and pd.api.types.is_numeric_dtype(values):
        form = (config.get("type_config") or {}).get("format") or "%.2f"

        def show(value: float) -> str:
            if form == "percent":
                return f"{value:.1%}"
            try:
                return form % value
            except (TypeError, ValueError):
                return str(value)

        text = values.map(lambda v: show(v) if pd.notna(v) else "–")
        return text.astype(object), {**config, "type_config": {"type": "text"}, "alignment": "right"}
    if pd.api.types.is_datetime64_any_dtype(values):
        text = values.dt.strftime("%Y-%m-%d %H:%M").where(present, "–")
        return text.astype(object), {**config, "type_config": {"type": "text"}}
    return values.astype(object).where(present, "–"), {**config, "type_config": {"type": "text"}}
