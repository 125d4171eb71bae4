"""Offline features: every return in history as of its own `requested_at` (vectorised, for training
and batch scoring), and the product snapshots the online path reads."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, delete

from features import engine
from features.catalogue import FRAUD_FEATURES_V1, LINE_FEATURES_V1, Feature, names
from features.sources import (
    build_history,
    load_offline,
    location_snapshot_rows,
    product_event_arrays,
    product_snapshot_rows,
    store_event_arrays,
)
from oms.frames import load_frame
from oms.tables import LocationStats, ProductStats


def fraud_features(
    bind: Engine | Connection,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    features: tuple[Feature, ...] = FRAUD_FEATURES_V1,
) -> pd.DataFrame:
    """One row per return requested in [start, end) (all when omitted), columns return_id, requested_at
    and the features, each computed from events strictly before the return's requested_at."""
    requests, history, identity = load_offline(bind, as_of=end)
    values = engine.compute(requests, history)
    frame = pd.DataFrame(
        # .array keeps the timestamps as they are (to_numpy on a zoned column makes an object per row)
        {"return_id": identity["return_id"].to_numpy(), "requested_at": identity["requested_at"].array}
    )
    for name in names(features):
        frame[name] = values[name]
    if start is not None:
        frame = frame[frame["requested_at"] >= start]
    return frame.reset_index(drop=True)


def line_features(
    bind: Engine | Connection, *, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None
) -> pd.DataFrame:
    """One row per returned line (return_id, line_no, requested_at, the line features, and the realised
    disposition and recovery value where known), for the recovery model."""
    returns = load_frame(bind, "returns", ["return_id", "order_id", "location_id", "requested_at"])
    lines = load_frame(
        bind,
        "return_lines",
        [
            "return_id",
            "line_no",
            "order_id",
            "order_line_no",
            "sku",
            "quantity",
            "reason",
            "condition",
            "disposition",
            "recovery_value",
        ],
    )
    products = load_frame(
        bind, "products", ["sku", "style_id", "category", "brand", "list_price", "unit_cost"]
    )
    orders = load_frame(bind, "orders", ["order_id", "placed_at"])
    order_lines = load_frame(
        bind, "order_lines", ["order_id", "line_no", "sku", "quantity", "unit_price", "discount"]
    )
    locations = load_frame(bind, "locations", ["location_id", "kind"])
    if end is not None:
        returns = returns[returns["requested_at"] < end]
    rows = lines.merge(returns, on=["return_id"], suffixes=("", "_header")).merge(
        products, on="sku", how="left"
    )
    rows = rows.merge(
        order_lines.drop(columns="sku").rename(
            columns={
                "line_no": "order_line_no",
                "quantity": "ol_quantity",
                "unit_price": "ol_unit_price",
                "discount": "ol_discount",
            }
        ),
        on=["order_id", "order_line_no"],
        how="left",
    )
    rows = rows.merge(orders, on="order_id", how="left").merge(
        locations.rename(columns={"kind": "location_kind"}), on="location_id", how="left"
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        paid = (rows["ol_unit_price"] * rows["ol_quantity"] - rows["ol_discount"]) / rows["ol_quantity"]
    rows["unit_price"] = paid.where(rows["ol_quantity"].notna(), rows["list_price"])
    rows["days_since_purchase"] = (rows["requested_at"] - rows["placed_at"]).dt.total_seconds() / 86400
    rows["receiptless"] = rows["order_id"].isna().astype(int)
    # the style's return rate as of the request day: the same snapshot logic as the fraud features
    # (only the product events: building the whole offline history here would double the job's time)
    product_events = product_event_arrays(orders, order_lines, returns, lines, products)
    line_t = rows["requested_at"].dt.as_unit("us").astype("int64").to_numpy()
    counts = engine.product_counts(
        {
            "sku": rows["sku"].to_numpy(object),
            "style_id": rows["style_id"].to_numpy(object),
            "category": rows["category"].to_numpy(object),
        },
        line_t,
        product_events,
    )
    rows["style_return_rate"] = engine.product_rates(counts)["style_return_rate"]
    if start is not None:
        rows = rows[rows["requested_at"] >= start]
    columns = [
        "return_id",
        "line_no",
        "requested_at",
        *names(LINE_FEATURES_V1),
        "disposition",
        "recovery_value",
    ]
    return (
        rows[columns]
        .sort_values(["requested_at", "return_id", "line_no"], kind="stable")
        .reset_index(drop=True)
    )


def write_product_snapshots(bind: Engine, *, now: dt.datetime | None = None) -> int:
    """Rebuild the snapshots online serving reads, `product_stats` and `location_stats`, from the whole
    history. Only complete days are written (as of 00:00 UTC today at the latest): a row for tomorrow
    would miss the rest of today's events."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    last_day = ((now or dt.datetime.now(dt.UTC)) - epoch) // dt.timedelta(days=1)
    returns = load_frame(
        bind,
        "returns",
        ["return_id", "order_id", "location_id", "requested_at", "refund_method", "employee_id"],
    )
    lines = load_frame(bind, "return_lines", ["return_id", "sku", "quantity"])
    orders = load_frame(bind, "orders", ["order_id", "location_id", "placed_at"])
    order_lines = load_frame(bind, "order_lines", ["order_id", "sku", "quantity"])
    products = load_frame(bind, "products", ["sku", "style_id", "category"])
    rows = product_snapshot_rows(product_event_arrays(orders, order_lines, returns, lines, products))
    rows = rows[rows["day"] <= last_day]
    locations = location_snapshot_rows(*store_event_arrays(returns, orders))
    locations = locations[locations["day"] <= last_day]
    with bind.begin() as connection:
        connection.execute(delete(ProductStats))
        connection.execute(delete(LocationStats))
        if len(rows):
            _bulk_insert(connection, "product_stats", rows)
        if len(locations):
            connection.execute(
                LocationStats.__table__.insert(),
                [
                    {
                        "location_id": location,
                        "day": int(day),
                        "as_of": epoch + dt.timedelta(days=int(day)),
                        "returns": int(returns),
                        "receiptless": int(receiptless),
                        "orders": int(orders),
                    }
                    for location, day, returns, receiptless, orders in locations.itertuples(
                        index=False, name=None
                    )
                ],
            )
        connection.exec_driver_sql("ANALYZE product_stats")
        connection.exec_driver_sql("ANALYZE location_stats")
    if bind.dialect.name == "postgresql":
        # the rewrite left every old row dead: reclaim them now, in the job, rather than leave an
        # autovacuum of both tables to run later beside the scoring traffic that reads them
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM product_stats, location_stats")
    return len(rows) + len(locations)


def _bulk_insert(connection: Connection, table: str, rows: pd.DataFrame) -> None:
    """Append a frame of plain values (COPY on PostgreSQL, executemany on SQLite)."""
    columns = list(rows.columns)
    raw = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        payload = rows.to_csv(index=False, header=False)
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)") as copy,
        ):
            copy.write(payload)
        return
    values = [tuple(row) for row in rows.astype(object).itertuples(index=False, name=None)]
    raw.executemany(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})", values
    )


def recompute_before(bind: Engine | Connection, return_ids: list[str]) -> pd.DataFrame:
    """Features of the given returns recomputed from a history cut at each return's own time.

    Every source table is truncated to events strictly before the return (orders placed, returns
    requested, reviews decided), so a feature that differs from the batch value saw the future.
    Slow (one recomputation per return): for leakage checks on samples.
    """
    from features.sources import build_requests

    frames = {
        "returns": load_frame(
            bind,
            "returns",
            [
                "return_id",
                "order_id",
                "customer_id",
                "channel",
                "location_id",
                "employee_id",
                "requested_at",
                "refund_method",
            ],
        ),
        "lines": load_frame(
            bind,
            "return_lines",
            ["return_id", "line_no", "order_id", "order_line_no", "sku", "quantity", "reason"],
        ),
        "orders": load_frame(
            bind,
            "orders",
            ["order_id", "customer_id", "channel", "location_id", "placed_at", "device_id", "ship_postcode"],
        ),
        "order_lines": load_frame(
            bind,
            "order_lines",
            ["order_id", "line_no", "sku", "quantity", "unit_price", "discount", "promotion_id"],
        ),
        "payments": load_frame(bind, "payments", ["order_id", "method", "amount", "card_fingerprint"]),
        "products": load_frame(
            bind, "products", ["sku", "style_id", "category", "size", "list_price", "return_window_days"]
        ),
        "customers": load_frame(bind, "customers", ["customer_id", "created_at"]),
        "reviews": load_frame(bind, "fraud_reviews", ["return_id", "reviewed_at", "outcome"]),
    }
    rows = []
    for return_id in return_ids:
        target = frames["returns"][frames["returns"]["return_id"] == return_id]
        t = target["requested_at"].iloc[0]
        earlier_returns = frames["returns"][frames["returns"]["requested_at"] < t]
        orders = frames["orders"][frames["orders"]["placed_at"] < t]
        visible_orders = set(orders["order_id"])
        if target["order_id"].notna().iloc[0]:
            visible_orders.add(target["order_id"].iloc[0])  # the returned order itself, placed before t
            orders = frames["orders"][frames["orders"]["order_id"].isin(visible_orders)]
        order_lines = frames["order_lines"][frames["order_lines"]["order_id"].isin(visible_orders)]
        payments = frames["payments"][frames["payments"]["order_id"].isin(visible_orders)]
        reviews = frames["reviews"][frames["reviews"]["reviewed_at"] < t]
        kept_lines = frames["lines"][
            frames["lines"]["return_id"].isin(set(earlier_returns["return_id"]) | {return_id})
        ]
        requests = build_requests(
            target.reset_index(drop=True),
            kept_lines,
            orders,
            order_lines,
            payments,
            frames["products"],
            frames["customers"],
        )
        history = build_history(
            earlier_returns, kept_lines, orders, order_lines, payments, frames["products"], reviews
        )
        values = engine.compute(requests, history)
        rows.append(
            {"return_id": return_id, **{name: float(values[name][0]) for name in names(FRAUD_FEATURES_V1)}}
        )
    return pd.DataFrame(rows)
