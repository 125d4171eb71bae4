"""The SQL the dashboards run: plain functions of an engine returning DataFrames (no Streamlit here).

Every query either reads a derived table (analytics_*, aggregated by the pipelines) or is bounded by an
index (one customer, one return, one style, the flagged slice of one model version), so a page stays
fast on a history of millions of order lines. Money comes back as float64, timestamps as UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from sqlalchemy import Engine, inspect, text

from oms import enums
from oms.frames import plain_rows

POSITIVE = ("fraud", "abuse")
# Reviews that count as a loss-prevention decision: `ReturnService.decide` refuses a second one.
DECISION_SOURCES = enums.ANALYST_SOURCES
NOT_RETURNED = ("rejected", "cancelled", "expired")
FLAGGED_DECISIONS = ("review", "deny")  # the scorer's decision at the policy (the queue's cut applied)
# a return in these states has nothing left to act on: the queue leaves it out
SETTLED_STATUSES = ("completed", "rejected", "cancelled", "expired")
SCORE_BINS = 1000  # resolution of the backtest's score histogram


def _missing() -> str:
    # imported late: features.analytics pulls in scipy, which pages that never read analytics skip
    from features.analytics import MISSING

    return MISSING


def _in(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)  # closed vocabularies only, never user input


def _timestamps(values: pd.Series) -> pd.Series:
    known = values.dropna()
    if len(known) and isinstance(known.iloc[0], str):  # SQLite hands back text
        return pd.to_datetime(values, utc=True, format="ISO8601")
    return pd.to_datetime(values, utc=True)


def read(
    engine: Engine,
    sql: str,
    params: Mapping[str, Any] | None = None,
    *,
    times: Iterable[str] = (),
    numbers: Iterable[str] = (),
    whole_history: bool = False,
) -> pd.DataFrame:
    """Run `sql`; `whole_history` marks aggregations over a whole model version, for which PostgreSQL
    must hash-join even when its statistics are stale (right after `recoup score` replaced the version,
    it estimates one row and would pick nested loops over every return)."""
    with engine.connect() as connection:
        if whole_history and engine.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL enable_nestloop = off"))
        result = connection.execute(text(sql), dict(params or {}))
        columns = list(result.keys())
        frame = pd.DataFrame(plain_rows(result), columns=columns)
    for column in times:
        frame[column] = _timestamps(frame[column])
    for column in numbers:
        frame[column] = pd.to_numeric(frame[column]).astype("float64")
    return frame


def _month(engine: Engine, column: str) -> str:
    if engine.dialect.name == "postgresql":
        return f"to_char({column}, 'YYYY-MM')"
    return f"substr({column}, 1, 7)"


def _floor(engine: Engine, expression: str) -> str:
    if engine.dialect.name == "postgresql":
        return f"CAST(floor({expression}) AS INTEGER)"
    return f"CAST({expression} AS INTEGER)"  # non-negative here, so truncation is the floor


def _first_reason(engine: Engine, column: str) -> str:
    if engine.dialect.name == "postgresql":
        return f"({column} -> 0 ->> 'text')"
    return f"json_extract({column}, '$[0].text')"


def _json(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return json.loads(value)
    return list(value)


# --- what exists -----------------------------------------------------------------------------------


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def locations(engine: Engine) -> pd.DataFrame:
    return read(engine, "SELECT location_id, kind, name FROM locations ORDER BY location_id")


def scored_versions(engine: Engine) -> pd.DataFrame:
    """Model versions with scores in return_scores: returns scored and when (newest first)."""
    frame = read(
        engine,
        "SELECT model_name, model_version, COUNT(*) AS returns, MAX(scored_at) AS scored_at "
        "FROM return_scores GROUP BY model_name, model_version",
        times=["scored_at"],
    )
    return frame.sort_values("scored_at", ascending=False, kind="stable").reset_index(drop=True)


# --- the review queue ------------------------------------------------------------------------------

# What a returned line is worth: the refund if recorded, else the price paid for the units (the order
# line's unit price less its share of the line discount), else the list price (receiptless).
LINE_VALUE = (
    "COALESCE(l.refund_amount, l.quantity * (ol.unit_price - ol.discount / ol.quantity), "
    "l.quantity * p.list_price)"
)


def review_queue(engine: Engine, model_name: str, model_version: str) -> pd.DataFrame:
    """Returns to decide: held for review, or flagged by one model version's decision (review or deny),
    not decided by an analyst and not settled (completed, rejected, cancelled, expired); with value
    and expected loss. Pending review first, then by score, then by value.

    The candidates come from two index scans (the version's flagged scores, the returns held for
    review, which the API may have scored live without a batch score row); then one level of joins and
    one GROUP BY: right after `recoup score` replaced a version's rows the planner's statistics may say
    "one row", and this shape stays a chain of index lookups whatever the estimate.
    """
    sql = f"""
        SELECT r.return_id, MIN(s.score) AS score, MIN(s.band) AS band, MIN(s.decision) AS decision,
               MIN({_first_reason(engine, "s.reasons")}) AS top_reason,
               MIN(r.requested_at) AS requested_at, MIN(r.status) AS status, MIN(r.channel) AS channel,
               MIN(r.location_id) AS location_id, MIN(r.customer_id) AS customer_id,
               MIN(r.order_id) AS order_id, MIN(r.refund_method) AS refund_method,
               SUM({LINE_VALUE}) AS value, SUM(l.quantity) AS units, COUNT(l.line_no) AS lines
        FROM returns r
        LEFT JOIN return_scores s ON s.return_id = r.return_id
             AND s.model_name = :model_name AND s.model_version = :model_version
        LEFT JOIN return_lines l ON l.return_id = r.return_id
        LEFT JOIN order_lines ol ON ol.order_id = l.order_id AND ol.line_no = l.order_line_no
        LEFT JOIN products p ON p.sku = l.sku
        WHERE r.return_id IN (
                SELECT f.return_id FROM return_scores f
                WHERE f.model_name = :model_name AND f.model_version = :model_version
                  AND f.decision IN ({_in(FLAGGED_DECISIONS)})
                UNION
                SELECT h.return_id FROM returns h WHERE h.status = 'pending_review')
          AND r.status NOT IN ({_in(SETTLED_STATUSES)})
          AND NOT EXISTS (
              SELECT 1 FROM fraud_reviews f
              WHERE f.return_id = r.return_id AND f.source IN ({_in(DECISION_SOURCES)}))
        GROUP BY r.return_id
    """
    frame = read(
        engine,
        sql,
        {"model_name": model_name, "model_version": model_version},
        times=["requested_at"],
        numbers=["score", "value", "units", "lines"],
    )
    frame["value"] = frame["value"].fillna(0.0)
    frame["expected_loss"] = frame["score"] * frame["value"]
    frame["top_reason"] = frame["top_reason"].fillna("")
    frame["band"] = frame["band"].fillna("unscored")  # held for review by the API, no batch score yet
    frame["location_id"] = frame["location_id"].fillna(_missing())
    frame["pending"] = frame["status"] == "pending_review"
    order = ["pending", "score", "value", "return_id"]
    return (
        frame.sort_values(order, ascending=[False, False, False, True], kind="stable")
        .drop(columns="pending")
        .reset_index(drop=True)
    )


def return_detail(engine: Engine, return_id: str, model_name: str, model_version: str) -> dict[str, Any]:
    """The return's header, its score row (reasons as a list) and its analyst decision, if any."""
    header = read(
        engine,
        "SELECT r.return_id, r.order_id, r.customer_id, r.channel, r.location_id, r.requested_at, "
        "r.received_at, r.employee_id, r.status, r.refund_method, r.rma_number, r.decision, "
        "s.score, s.band, s.decision AS score_decision, s.reasons, s.scored_at "
        "FROM returns r LEFT JOIN return_scores s ON s.return_id = r.return_id "
        "AND s.model_name = :model_name AND s.model_version = :model_version "
        "WHERE r.return_id = :return_id",
        {"return_id": return_id, "model_name": model_name, "model_version": model_version},
        times=["requested_at", "received_at", "scored_at"],
    )
    if header.empty:
        return {}
    row = header.iloc[0].to_dict()
    row["reasons"] = _json(row["reasons"])
    return row


def return_lines(engine: Engine, return_id: str) -> pd.DataFrame:
    return read(
        engine,
        f"SELECT l.line_no, l.sku, p.description, p.category, p.style_id, p.size, l.quantity, l.reason, "
        f"l.condition, l.disposition, l.refund_amount, {LINE_VALUE} AS value, l.order_id, l.order_line_no "
        "FROM return_lines l "
        "LEFT JOIN order_lines ol ON ol.order_id = l.order_id AND ol.line_no = l.order_line_no "
        "LEFT JOIN products p ON p.sku = l.sku "
        "WHERE l.return_id = :return_id ORDER BY l.line_no",
        {"return_id": return_id},
        numbers=["refund_amount", "value"],
    )


def reviews_of_return(engine: Engine, return_id: str) -> pd.DataFrame:
    return read(
        engine,
        "SELECT reviewed_at, outcome, fraud_type, source, reviewer, note FROM fraud_reviews "
        "WHERE return_id = :return_id ORDER BY reviewed_at",
        {"return_id": return_id},
        times=["reviewed_at"],
    )


def customer_timeline(engine: Engine, customer_id: str, limit: int = 500) -> pd.DataFrame:
    """The customer's orders, returns and reviews as one chronological table (newest first)."""
    params = {"customer_id": customer_id}
    orders = read(
        engine,
        "SELECT o.order_id, o.placed_at, o.channel, o.location_id, "
        "SUM(ol.quantity * ol.unit_price - ol.discount) AS value, SUM(ol.quantity) AS units "
        "FROM orders o JOIN order_lines ol ON ol.order_id = o.order_id "
        "WHERE o.customer_id = :customer_id "
        "GROUP BY o.order_id, o.placed_at, o.channel, o.location_id",
        params,
        times=["placed_at"],
        numbers=["value", "units"],
    )
    returns = read(
        engine,
        f"SELECT r.return_id, r.requested_at, r.channel, r.location_id, r.status, r.order_id, l.reason, "
        f"l.quantity, {LINE_VALUE} AS value "
        "FROM returns r JOIN return_lines l ON l.return_id = r.return_id "
        "LEFT JOIN order_lines ol ON ol.order_id = l.order_id AND ol.line_no = l.order_line_no "
        "LEFT JOIN products p ON p.sku = l.sku "
        "WHERE r.customer_id = :customer_id",
        params,
        times=["requested_at"],
        numbers=["quantity", "value"],
    )
    reviews = read(
        engine,
        "SELECT f.return_id, f.reviewed_at, f.outcome, f.fraud_type, f.source, f.reviewer "
        "FROM fraud_reviews f JOIN returns r ON r.return_id = f.return_id "
        "WHERE r.customer_id = :customer_id",
        params,
        times=["reviewed_at"],
    )
    events = [
        pd.DataFrame(
            {
                "at": orders["placed_at"],
                "event": "order",
                "id": orders["order_id"],
                "channel": orders["channel"],
                "location_id": orders["location_id"],
                "value": orders["value"],
                "detail": orders["units"].map(lambda u: f"{u:,.0f} units"),
            }
        )
    ]
    if len(returns):
        grouped = returns.groupby("return_id", sort=False)
        per_return = grouped.agg(
            at=("requested_at", "first"),
            channel=("channel", "first"),
            location_id=("location_id", "first"),
            status=("status", "first"),
            order_id=("order_id", "first"),
            value=("value", "sum"),
        )
        per_return["reasons"] = grouped["reason"].agg(lambda rs: ", ".join(sorted(set(rs))))
        events.append(
            pd.DataFrame(
                {
                    "at": per_return["at"],
                    "event": "return",
                    "id": per_return.index,
                    "channel": per_return["channel"],
                    "location_id": per_return["location_id"],
                    "value": per_return["value"],
                    "detail": per_return["status"]
                    + " · "
                    + per_return["reasons"]
                    + per_return["order_id"].map(lambda o: "" if pd.notna(o) else " · receiptless"),
                }
            ).reset_index(drop=True)
        )
    if len(reviews):
        events.append(
            pd.DataFrame(
                {
                    "at": reviews["reviewed_at"],
                    "event": "review",
                    "id": reviews["return_id"],
                    "channel": None,
                    "location_id": None,
                    "value": float("nan"),
                    "detail": reviews["outcome"]
                    + reviews["fraud_type"].map(lambda t: f" ({t})" if isinstance(t, str) and t else "")
                    + " · "
                    + reviews["source"].fillna("")
                    + reviews["reviewer"].map(lambda r: f" · by {r}" if isinstance(r, str) and r else ""),
                }
            )
        )
    present = [e for e in events if len(e)]
    timeline = pd.concat(present, ignore_index=True) if present else events[0]
    return timeline.sort_values("at", ascending=False, kind="stable").head(limit).reset_index(drop=True)


def linked_accounts(engine: Engine, customer_id: str, limit: int = 200) -> pd.DataFrame:
    """Other customers sharing a card fingerprint, device or delivery postcode with this one, with their
    returns and confirmed fraud/abuse decisions."""
    sql = """
        SELECT o2.customer_id, 'card' AS shared_by, p.card_fingerprint AS shared_value
        FROM orders o JOIN payments p ON p.order_id = o.order_id
        JOIN payments p2 ON p2.card_fingerprint = p.card_fingerprint
        JOIN orders o2 ON o2.order_id = p2.order_id
        WHERE o.customer_id = :customer_id AND p.card_fingerprint IS NOT NULL
          AND o2.customer_id IS NOT NULL AND o2.customer_id <> :customer_id
        UNION
        SELECT o2.customer_id, 'device', o.device_id
        FROM orders o JOIN orders o2 ON o2.device_id = o.device_id
        WHERE o.customer_id = :customer_id AND o.device_id IS NOT NULL
          AND o2.customer_id IS NOT NULL AND o2.customer_id <> :customer_id
        UNION
        SELECT o2.customer_id, 'ship postcode', o.ship_postcode
        FROM orders o JOIN orders o2 ON o2.ship_postcode = o.ship_postcode
        WHERE o.customer_id = :customer_id AND o.ship_postcode IS NOT NULL
          AND o2.customer_id IS NOT NULL AND o2.customer_id <> :customer_id
    """
    links = read(engine, f"SELECT * FROM ({sql}) links LIMIT {int(limit)}", {"customer_id": customer_id})
    if links.empty:
        return pd.DataFrame(columns=["customer_id", "shared_by", "returns", "fraud_or_abuse", "reviews"])
    shared = links.groupby("customer_id").agg(
        shared_by=("shared_by", lambda s: ", ".join(sorted(set(s)))),
        shared_values=("shared_value", "nunique"),
    )
    ids = list(shared.index)
    binds = {f"c{i}": value for i, value in enumerate(ids)}
    placeholders = ", ".join(f":c{i}" for i in range(len(ids)))
    history = read(
        engine,
        f"""
        SELECT r.customer_id, COUNT(DISTINCT r.return_id) AS returns,
               COUNT(DISTINCT CASE WHEN f.outcome IN ({_in(POSITIVE)}) THEN f.return_id END) AS fraud_or_abuse,
               COUNT(DISTINCT f.return_id) AS reviews
        FROM returns r LEFT JOIN fraud_reviews f ON f.return_id = r.return_id
        WHERE r.customer_id IN ({placeholders})
        GROUP BY r.customer_id
        """,
        binds,
    ).set_index("customer_id")
    out = shared.join(history, how="left").fillna({"returns": 0, "fraud_or_abuse": 0, "reviews": 0})
    for column in ("returns", "fraud_or_abuse", "reviews"):
        out[column] = out[column].astype("int64")
    return out.sort_values(["fraud_or_abuse", "returns"], ascending=False).reset_index()


# --- analytics tables ------------------------------------------------------------------------------


def analytics(
    engine: Engine,
    name: str,
    where: str | None = None,
    params: Mapping[str, Any] | None = None,
    *,
    order_by: str | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Rows of an analytics table (filtered in SQL), with the dtypes `features.analytics` documents."""
    from features.analytics import TABLES

    schema = TABLES[name]
    sql = f"SELECT {', '.join(schema)} FROM {name}"
    if where:
        sql += f" WHERE {where}"
    if order_by:
        sql += f" ORDER BY {order_by}"
    if limit:
        sql += f" LIMIT {int(limit)}"
    frame = read(engine, sql, params)
    for column, dtype in schema.items():
        values = frame[column]
        if dtype.startswith("datetime"):
            frame[column] = _timestamps(values)
        elif dtype == "bool":
            frame[column] = values.fillna(False).astype(bool)
        elif dtype == "string":
            frame[column] = values.astype("string")
        elif dtype == "int64":
            frame[column] = pd.to_numeric(values).fillna(0).astype("int64")
        else:
            frame[column] = pd.to_numeric(values).astype("float64")
    return frame


def _product_filter(dimension: str) -> tuple[str, str]:
    """(joins, condition) selecting returned lines of one value of a return-rate dimension."""
    missing = _missing()
    if dimension == "sku":
        return "", "l.sku = :value"
    if dimension in ("style_id", "category", "brand", "size"):
        return "JOIN products p ON p.sku = l.sku", f"COALESCE(p.{dimension}, '{missing}') = :value"
    if dimension in ("channel", "location_id"):
        return "JOIN orders o ON o.order_id = r.order_id", f"COALESCE(o.{dimension}, '{missing}') = :value"
    raise ValueError(f"no reason drill-down for dimension {dimension!r}")


def reason_mix(engine: Engine, dimension: str, value: str) -> pd.DataFrame:
    """Returned units and returns by reason for one value of a dimension (receipted, real returns)."""
    joins, condition = _product_filter(dimension)
    return read(
        engine,
        f"""
        SELECT l.reason, SUM(l.quantity) AS units, COUNT(DISTINCT l.return_id) AS returns
        FROM return_lines l JOIN returns r ON r.return_id = l.return_id {joins}
        WHERE r.status NOT IN ({_in(NOT_RETURNED)}) AND l.order_line_no IS NOT NULL AND {condition}
        GROUP BY l.reason ORDER BY units DESC
        """,
        {"value": value},
        numbers=["units", "returns"],
    )


def size_mix(engine: Engine, dimension: str, value: str) -> pd.DataFrame:
    """Units sold, returned and returned for fit by size (mature sales, from analytics_size_curve)."""
    if dimension == "style_id":
        where, params = "style_id = :value", {"value": value}
    elif dimension == "category":
        where, params = "category = :value", {"value": value}
    elif dimension == "sku":
        where = "style_id = (SELECT style_id FROM products WHERE sku = :value)"
        params = {"value": value}
    elif dimension == "brand":
        where = "style_id IN (SELECT DISTINCT style_id FROM products WHERE brand = :value)"
        params = {"value": value}
    else:
        raise ValueError(f"no size drill-down for dimension {dimension!r}")
    curve = analytics(engine, "analytics_size_curve", where, params)
    if curve.empty:
        return pd.DataFrame(columns=["size", "size_rank", "units_sold", "units_returned", "fit_returns"])
    sizes = (
        curve.groupby("size", as_index=False)
        .agg(
            size_rank=("size_rank", "mean"),
            units_sold=("units_sold", "sum"),
            units_returned=("units_returned", "sum"),
            fit_returns=("fit_returns", "sum"),
        )
        .sort_values(["size_rank", "size"], kind="stable")
    )
    sizes["return_rate"] = sizes["units_returned"] / sizes["units_sold"].where(sizes["units_sold"] > 0)
    sizes["fit_rate"] = sizes["fit_returns"] / sizes["units_sold"].where(sizes["units_sold"] > 0)
    return sizes.reset_index(drop=True)


# --- operations ------------------------------------------------------------------------------------


def status_counts(engine: Engine, location_id: str | None = None) -> pd.DataFrame:
    """Returns by status and return channel (optionally at one location)."""
    where, params = (
        ("WHERE location_id = :location_id", {"location_id": location_id}) if location_id else ("", {})
    )
    return read(
        engine,
        f"SELECT status, channel, COUNT(*) AS returns FROM returns {where} GROUP BY status, channel",
        params,
        numbers=["returns"],
    )


# --- models --------------------------------------------------------------------------------------


def score_histogram(engine: Engine, model_name: str, model_version: str, bins: int = 20) -> pd.DataFrame:
    """Returns per request month and score bin (0..bins-1) for one model version."""
    bucket = _floor(engine, f"s.score * {int(bins)}")
    return read(
        engine,
        f"""
        SELECT {_month(engine, "r.requested_at")} AS month, {bucket} AS bin, COUNT(*) AS returns
        FROM return_scores s JOIN returns r ON r.return_id = s.return_id
        WHERE s.model_name = :model_name AND s.model_version = :model_version
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        {"model_name": model_name, "model_version": model_version},
        numbers=["returns"],
        whole_history=True,
    ).assign(bin=lambda f: f["bin"].clip(upper=bins - 1).astype("int64"))


def backtest_bins(
    engine: Engine, model_name: str, model_version: str, since: pd.Timestamp | None
) -> pd.DataFrame:
    """Scored returns aggregated per score bin (1/SCORE_BINS wide) with what history says of them.

    value: refund (list price where none was recorded); reviewed / positive: returns with any review /
    with a fraud or abuse outcome (any source, chargebacks included); audited / audited_positive: the
    random-audit sample (unbiased); positive_value: value of the positive returns.
    """
    bucket = _floor(engine, f"s.score * {SCORE_BINS}")
    since_clause = "AND r.requested_at >= :since" if since is not None else ""
    params: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if since is not None:
        params["since"] = since.to_pydatetime()
    sql = f"""
        WITH scored AS (
            SELECT s.return_id, s.score, r.requested_at
            FROM return_scores s JOIN returns r ON r.return_id = s.return_id
            WHERE s.model_name = :model_name AND s.model_version = :model_version {since_clause}
        ), worth AS (
            SELECT l.return_id, SUM(COALESCE(l.refund_amount, l.quantity * p.list_price)) AS value
            FROM return_lines l JOIN scored ON scored.return_id = l.return_id
            LEFT JOIN products p ON p.sku = l.sku
            GROUP BY l.return_id
        ), judged AS (
            SELECT f.return_id,
                   MAX(CASE WHEN f.outcome IN ({_in(POSITIVE)}) THEN 1 ELSE 0 END) AS positive,
                   MAX(CASE WHEN f.source = 'random_audit' THEN 1 ELSE 0 END) AS audited,
                   MAX(CASE WHEN f.source = 'random_audit' AND f.outcome IN ({_in(POSITIVE)}) THEN 1 ELSE 0 END)
                       AS audited_positive
            FROM fraud_reviews f GROUP BY f.return_id
        )
        SELECT {bucket} AS bin, COUNT(*) AS returns, SUM(COALESCE(w.value, 0)) AS value,
               SUM(CASE WHEN j.return_id IS NOT NULL THEN 1 ELSE 0 END) AS reviewed,
               SUM(COALESCE(j.positive, 0)) AS positive,
               SUM(CASE WHEN j.positive = 1 THEN COALESCE(w.value, 0) ELSE 0 END) AS positive_value,
               SUM(COALESCE(j.audited, 0)) AS audited,
               SUM(COALESCE(j.audited_positive, 0)) AS audited_positive,
               MIN(s.requested_at) AS first_request, MAX(s.requested_at) AS last_request
        FROM scored s LEFT JOIN worth w ON w.return_id = s.return_id
        LEFT JOIN judged j ON j.return_id = s.return_id
        GROUP BY 1 ORDER BY 1
    """
    frame = read(
        engine,
        sql,
        params,
        times=["first_request", "last_request"],
        numbers=["returns", "value", "reviewed", "positive", "positive_value", "audited", "audited_positive"],
        whole_history=True,
    )
    frame["bin"] = frame["bin"].clip(upper=SCORE_BINS - 1).astype("int64")
    return frame


def serving_log_recent(engine: Engine, limit: int = 50_000) -> pd.DataFrame:
    """The latest `limit` scores the API served (newest first; `ix_serving_log_served`)."""
    frame = read(
        engine,
        "SELECT served_at, model_version, score, degraded, latency_ms, return_id FROM serving_log "
        f"ORDER BY served_at DESC LIMIT {int(limit)}",
        times=["served_at"],
        numbers=["score", "latency_ms"],
    )
    frame["degraded"] = frame["degraded"].fillna(False).astype(bool)
    return frame


def serving_skew(engine: Engine, model_name: str, model_version: str, limit: int = 50_000) -> pd.DataFrame:
    """Scores served online next to the batch score of the same return and model version (the latest
    `limit` served scores of that version that became returns; degraded answers have no model score)."""
    return read(
        engine,
        f"""
        SELECT g.return_id, g.score AS served_score, s.score AS batch_score
        FROM (SELECT return_id, score FROM serving_log
              WHERE return_id IS NOT NULL AND score IS NOT NULL AND model_version = :model_version
              ORDER BY served_at DESC LIMIT {int(limit)}) g
        JOIN return_scores s ON s.return_id = g.return_id
         AND s.model_name = :model_name AND s.model_version = :model_version
        """,
        {"model_name": model_name, "model_version": model_version},
        numbers=["served_score", "batch_score"],
    )


def feature_skew(engine: Engine) -> pd.DataFrame:
    """`analytics_serving_skew` as the pipelines wrote it: per feature, served values compared with the
    offline recomputation (compared, mismatched, max_abs_difference)."""
    return read(
        engine,
        "SELECT feature, compared, mismatched, max_abs_difference FROM analytics_serving_skew",
        numbers=["compared", "mismatched", "max_abs_difference"],
    )


def returns_requested_between(engine: Engine) -> tuple[pd.Timestamp | None, pd.Timestamp | None, int]:
    frame = read(
        engine,
        "SELECT MIN(requested_at) AS first_at, MAX(requested_at) AS last_at, COUNT(*) AS n FROM returns",
        times=["first_at", "last_at"],
    )
    row = frame.iloc[0]
    return (
        None if pd.isna(row["first_at"]) else row["first_at"],
        None if pd.isna(row["last_at"]) else row["last_at"],
        int(row["n"] or 0),
    )
