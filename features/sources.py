"""Where the features' inputs come from: raw rows (the same columns offline and online) and the shared
builders that turn them into requests and events.

Offline, every raw row set is read in full (`load_offline`); online, the same columns are read for one
request only, with `WHERE` clauses on the indexed keys (customer, order, card, device, postcode, store,
employee). The builders below run on both and hand numpy arrays to `features.engine`; only a customer's
orders come online already summed per order (`features.online.CUSTOMER_ORDERS`, the sums `order_events`
makes offline).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from features.catalogue import DAY_US
from features.engine import Arrays, History, Requests, day_start, factorize, isin
from oms.frames import load_frame

CUSTOMER_HISTORY_DAYS = 365


def _text(values, *, repeated: bool = False) -> np.ndarray:
    """Object array with None for missing values.

    `repeated`: a column of few distinct values held by Arrow (the product keys of every order line) is
    converted through its dictionary: one Python string per distinct value instead of one per row
    (0.14 s against 0.42 s for 5M skus of 20k distinct values, and a fraction of the memory). Not for
    keys that are mostly distinct (order or customer ids): there the dictionary costs more."""
    if (
        repeated
        and isinstance(values, pd.Series)
        and hasattr(values.array, "__arrow_array__")
        and len(values)
    ):
        encoded = pa.chunked_array(values.array.__arrow_array__()).combine_chunks().dictionary_encode()
        words = encoded.dictionary.to_numpy(zero_copy_only=False)
        codes = encoded.indices.fill_null(-1).to_numpy()
        out = words[np.maximum(codes, 0)] if len(words) else np.empty(len(codes), dtype=object)
        out[codes < 0] = None
        return out
    out = np.empty(len(values), dtype=object)
    if len(values) <= 64 and not isinstance(values, pd.Series):  # one request's few values
        out[:] = [None if _missing(v) else v for v in values]
        return out
    out[:] = values.to_numpy(dtype=object) if isinstance(values, pd.Series) else values
    missing = pd.isna(out)
    if missing.any():
        out[missing] = None
    return out


def _missing(value) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)


def _micros(values) -> np.ndarray:
    """Timestamps (datetime64 or datetime objects) -> int64 microseconds since the epoch (NaT -> min)."""
    stamps = pd.to_datetime(pd.Series(values), utc=True, format="ISO8601")
    return stamps.dt.as_unit("us").astype("int64").to_numpy()


# --- shared builders --------------------------------------------------------------------------------


def order_events(rows: Arrays) -> Arrays:
    """Order lines (order_id, customer_id, t, quantity, unit_price, discount) -> one event per order."""
    if len(rows["order_id"]) == 0:
        return {
            "customer_id": _text([]),
            "t": np.zeros(0, np.int64),
            "value": np.zeros(0),
            "units": np.zeros(0),
        }
    keys = np.asarray(rows["order_id"])  # the batch passes integer order codes: hashing ints is cheaper
    codes, uniques = factorize(keys if keys.dtype.kind in "iuf" else keys.astype(object))
    first = np.unique(codes, return_index=True)[1]
    value = rows["quantity"].astype(float) * rows["unit_price"].astype(float) - rows["discount"].astype(float)
    return {
        "customer_id": _text(np.asarray(rows["customer_id"], dtype=object)[first]),
        "t": np.asarray(rows["t"], dtype=np.int64)[first],
        "value": np.bincount(codes, weights=value, minlength=len(uniques)),
        "units": np.bincount(codes, weights=rows["quantity"].astype(float), minlength=len(uniques)),
    }


def unit_paid(rows: Arrays) -> np.ndarray:
    """Price paid per unit: the order line's (price x quantity - discount) / quantity, list price if receiptless."""
    ordered = rows["ol_quantity"].astype(float)
    linked = ~np.isnan(ordered)
    with np.errstate(invalid="ignore", divide="ignore"):
        paid = (rows["ol_unit_price"].astype(float) * ordered - rows["ol_discount"].astype(float)) / ordered
    return np.where(linked, paid, rows["list_price"].astype(float))


def return_events(rows: Arrays) -> Arrays:
    """Return lines (return_id, customer_id, location_id, t, order_id, quantity, reason, order-line prices,
    list_price) -> one event per return."""
    if len(rows["return_id"]) == 0:
        empty = np.zeros(0)
        return {
            "customer_id": _text([]),
            "location_id": _text([]),
            "t": np.zeros(0, np.int64),
            "units": empty,
            "value": empty,
            "receiptless": empty,
            "changed_mind_lines": empty,
            "lines": empty,
        }
    codes, uniques = factorize(np.asarray(rows["return_id"], dtype=object))
    first = np.unique(codes, return_index=True)[1]
    quantity = rows["quantity"].astype(float)
    order_ids = np.asarray(rows["order_id"], dtype=object)[first]
    n = len(uniques)
    return {
        "customer_id": _text(np.asarray(rows["customer_id"], dtype=object)[first]),
        "location_id": _text(np.asarray(rows["location_id"], dtype=object)[first]),
        "t": np.asarray(rows["t"], dtype=np.int64)[first],
        "units": np.bincount(codes, weights=quantity, minlength=n),
        "value": np.bincount(codes, weights=quantity * unit_paid(rows), minlength=n),
        "receiptless": np.array([o is None for o in order_ids], dtype=float),
        "changed_mind_lines": np.bincount(
            codes, weights=(np.asarray(rows["reason"], dtype=object) == "changed_mind"), minlength=n
        ),
        "lines": np.bincount(codes, minlength=n).astype(float),
    }


def review_events(rows: Arrays) -> Arrays:
    outcome = np.asarray(rows["outcome"], dtype=object)
    return {
        "customer_id": _text(rows["customer_id"]),
        "t": np.asarray(rows["t"], dtype=np.int64),
        "bad": isin(outcome, ("fraud", "abuse")).astype(float),
    }


# --- offline: everything ----------------------------------------------------------------------------


# the columns each builder reads: converting others (a lifecycle timestamp, say) would turn every row
# into Python objects for nothing
REQUEST_LINE_COLUMNS = (
    "sku", "style_id", "category", "size", "quantity", "reason", "promotion_id", "return_window_days",
    "ol_quantity", "ol_unit_price", "ol_discount", "list_price",
)  # fmt: skip
REQUEST_HEADER_COLUMNS = (
    "requested_at", "customer_id", "order_id", "order_channel", "channel", "location_id", "employee_id",
    "refund_method",
)  # fmt: skip
RETURN_EVENT_COLUMNS = (
    "return_id", "customer_id", "location_id", "t", "order_id", "quantity", "reason",
    "ol_quantity", "ol_unit_price", "ol_discount", "list_price",
)  # fmt: skip


def _frame_arrays(frame: pd.DataFrame, times: tuple[str, ...] = ()) -> Arrays:
    out: Arrays = {}
    for column in frame.columns:
        values = frame[column]
        if column not in times and isinstance(values.dtype, pd.DatetimeTZDtype | np.dtypes.DateTime64DType):
            raise TypeError(f"{column}: a timestamp column must be named in times= (else one object per row)")
        if column in times:
            out[column] = (
                values.dt.as_unit("us").astype("int64").to_numpy() if len(values) else np.zeros(0, np.int64)
            )
        elif pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
            out[column] = values.astype("float64").to_numpy()
        else:
            out[column] = _text(values)
    return out


def load_offline(bind, *, as_of: pd.Timestamp | None = None) -> tuple[Requests, History, pd.DataFrame]:
    """Every return in the database as a request (as of its requested_at) and the full history.

    Returns the requests, the history and the returns' identity frame (return_id, requested_at, order_id).
    """
    returns = load_frame(
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
    )
    lines = load_frame(
        bind,
        "return_lines",
        ["return_id", "line_no", "order_id", "order_line_no", "sku", "quantity", "reason"],
    )
    orders = load_frame(
        bind,
        "orders",
        ["order_id", "customer_id", "channel", "location_id", "placed_at", "device_id", "ship_postcode"],
    )
    order_lines = load_frame(
        bind,
        "order_lines",
        ["order_id", "line_no", "sku", "quantity", "unit_price", "discount", "promotion_id"],
    )
    payments = load_frame(bind, "payments", ["order_id", "method", "amount", "card_fingerprint"])
    products = load_frame(
        bind, "products", ["sku", "style_id", "category", "size", "list_price", "return_window_days"]
    )
    customers = load_frame(bind, "customers", ["customer_id", "created_at"])
    reviews = load_frame(bind, "fraud_reviews", ["return_id", "reviewed_at", "outcome"])
    if as_of is not None:
        returns = returns[returns["requested_at"] < as_of]
    returns = returns.sort_values(["requested_at", "return_id"], kind="stable").reset_index(drop=True)
    requests = build_requests(returns, lines, orders, order_lines, payments, products, customers)
    history = build_history(returns, lines, orders, order_lines, payments, products, reviews)
    return requests, history, returns[["return_id", "requested_at", "order_id"]]


def build_requests(returns, lines, orders, order_lines, payments, products, customers) -> Requests:
    """Requests from stored returns (vectorised merges; the online path builds the same arrays)."""
    header = returns.merge(
        orders[["order_id", "placed_at", "channel"]].rename(
            columns={"placed_at": "order_placed", "channel": "order_channel"}
        ),
        on="order_id",
        how="left",
    )
    header = header.merge(
        customers.rename(columns={"created_at": "customer_created"}), on="customer_id", how="left"
    )
    index = pd.Series(np.arange(len(returns)), index=returns["return_id"].to_numpy())
    req_lines = lines[lines["return_id"].isin(index.index)].copy()
    req_lines["req"] = index.reindex(req_lines["return_id"].to_numpy()).to_numpy()
    req_lines = req_lines.sort_values(["req", "line_no"], kind="stable")
    req_lines = req_lines.merge(products, on="sku", how="left")
    priced = req_lines.merge(
        order_lines[["order_id", "line_no", "quantity", "unit_price", "discount", "promotion_id"]].rename(
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
    line_arrays = _frame_arrays(priced[list(REQUEST_LINE_COLUMNS)])
    request_lines = {
        "req": priced["req"].to_numpy(dtype=np.int64),
        "sku": line_arrays["sku"],
        "style_id": line_arrays["style_id"],
        "category": line_arrays["category"],
        "size": line_arrays["size"],
        "quantity": line_arrays["quantity"],
        "reason": line_arrays["reason"],
        "unit_paid": unit_paid(line_arrays),
        "promo": np.array([p is not None for p in line_arrays["promotion_id"]], dtype=float),
        "window_days": line_arrays["return_window_days"],
    }
    with_order = header[["order_id"]].assign(req=np.arange(len(header))).dropna(subset=["order_id"])
    order_rows = with_order.merge(
        order_lines[["order_id", "line_no", "sku", "quantity", "unit_price", "discount"]], on="order_id"
    ).merge(products[["sku", "style_id", "size"]], on="sku", how="left")
    order_rows = order_rows.sort_values(["req", "line_no"], kind="stable")
    order_arrays = _frame_arrays(order_rows[["style_id", "size", "quantity", "unit_price", "discount"]])
    request_order_lines = {
        "req": order_rows["req"].to_numpy(dtype=np.int64),
        "style_id": order_arrays["style_id"],
        "size": order_arrays["size"],
        "quantity": order_arrays["quantity"],
        "value": order_arrays["quantity"] * order_arrays["unit_price"] - order_arrays["discount"],
    }
    pay_rows = with_order.merge(payments[["order_id", "method", "amount"]], on="order_id").sort_values(
        "req", kind="stable"
    )
    request_payments = {
        "req": pay_rows["req"].to_numpy(dtype=np.int64),
        "method": _text(pay_rows["method"]),
        "amount": pay_rows["amount"].to_numpy(dtype=float),
    }
    h = _frame_arrays(header[list(REQUEST_HEADER_COLUMNS)], times=("requested_at",))
    request_header = {
        "t": h["requested_at"],
        "customer_id": h["customer_id"],
        "customer_created": _optional_micros(header["customer_created"]),
        "order_id": h["order_id"],
        "order_placed": _optional_micros(header["order_placed"]),
        "order_channel": h["order_channel"],
        "channel": h["channel"],
        "location_id": h["location_id"],
        "employee_id": h["employee_id"],
        "refund_method": h["refund_method"],
    }
    return Requests(request_header, request_lines, request_order_lines, request_payments)


def _optional_micros(values: pd.Series) -> np.ndarray:
    """Timestamps -> float microseconds since the epoch (NaN where missing)."""
    raw = values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]")
    return np.where(np.isnat(raw), np.nan, raw.astype(np.int64).astype(float))


def build_history(returns, lines, orders, order_lines, payments, products, reviews) -> History:
    # One join of the order lines with their orders serves both the customers' orders and the products'
    # sales. order_events gets only the columns it reads (converting skus or promotions to object arrays
    # for every order line would cost time and memory for nothing), with each order identified by its
    # position: it groups by it, and hashing 5M order-id strings costs more than carrying the integer.
    sold = order_lines[["order_id", "sku", "quantity", "unit_price", "discount"]].merge(
        orders[["order_id", "customer_id", "placed_at"]].assign(code=np.arange(len(orders))), on="order_id"
    )
    order_rows = sold[["code", "customer_id", "placed_at", "quantity", "unit_price", "discount"]].rename(
        columns={"code": "order_id", "placed_at": "t"}
    )
    order_arrays = _frame_arrays(order_rows, times=("t",))
    all_returns = load_frame_like_returns(returns, lines, order_lines, products)
    review_rows = reviews.merge(returns[["return_id", "customer_id"]], on="return_id").rename(
        columns={"reviewed_at": "t"}
    )
    review_rows = review_rows[review_rows["customer_id"].notna()]
    links = link_rows(orders, payments)
    store_events, store_orders = store_event_arrays(returns, orders)
    product_events = product_event_arrays(
        orders, order_lines, returns, lines, products, sold=sold[["sku", "quantity", "placed_at"]]
    )
    return History(
        orders=order_events(order_arrays),
        returns=return_events(all_returns),
        reviews=review_events(_frame_arrays(review_rows, times=("t",))),
        links=links,
        store_events=store_events,
        store_orders=store_orders,
        product_events=product_events,
    )


def store_event_arrays(returns: pd.DataFrame, orders: pd.DataFrame) -> tuple[Arrays, Arrays]:
    """Return headers (location_id, employee_id, t, receiptless, cash) and orders (location_id, t) for
    the store and employee windows."""
    store_events = _frame_arrays(
        returns.assign(
            receiptless=returns["order_id"].isna().astype(float),
            cash=(returns["refund_method"] == "cash").fillna(False).astype(float),
        )[["location_id", "employee_id", "requested_at", "receiptless", "cash"]].rename(
            columns={"requested_at": "t"}
        ),
        times=("t",),
    )
    store_orders = _frame_arrays(
        orders[["location_id", "placed_at"]].rename(columns={"placed_at": "t"}), times=("t",)
    )
    return store_events, store_orders


def load_frame_like_returns(returns, lines, order_lines, products) -> Arrays:
    rows = lines.merge(returns[["return_id", "customer_id", "location_id", "requested_at"]], on="return_id")
    rows = rows.merge(products[["sku", "list_price"]], on="sku", how="left")
    rows = rows.merge(
        order_lines[["order_id", "line_no", "quantity", "unit_price", "discount"]].rename(
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
    # the header's order (a return line carries it too): receiptless means the return has none
    rows = rows.rename(columns={"requested_at": "t"}).sort_values(
        ["t", "return_id", "line_no"], kind="stable"
    )
    return _frame_arrays(rows[list(RETURN_EVENT_COLUMNS)], times=("t",))


def link_rows(orders: pd.DataFrame, payments: pd.DataFrame) -> Arrays:
    known = orders[orders["customer_id"].notna()]
    parts = [
        known[["customer_id", "device_id", "placed_at"]]
        .dropna()
        .rename(columns={"device_id": "value"})
        .assign(kind="device"),
        known[["customer_id", "ship_postcode", "placed_at"]]
        .dropna()
        .rename(columns={"ship_postcode": "value"})
        .assign(kind="postcode"),
        payments[["order_id", "card_fingerprint"]]
        .dropna()
        .merge(known[["order_id", "customer_id", "placed_at"]], on="order_id")
        .drop(columns="order_id")
        .rename(columns={"card_fingerprint": "value"})
        .assign(kind="card"),
    ]
    frame = pd.concat(parts, ignore_index=True).rename(columns={"placed_at": "t"})
    return _frame_arrays(frame[["customer_id", "kind", "value", "t"]], times=("t",))


def product_event_arrays(
    orders, order_lines, returns, lines, products, sold: pd.DataFrame | None = None
) -> dict[str, Arrays]:
    """Units sold and returned per sku, style and category with their times. `sold`: the order lines
    (sku, quantity) already joined with their orders' placed_at, when the caller has that join."""
    if sold is None:
        sold = order_lines[["order_id", "sku", "quantity"]].merge(
            orders[["order_id", "placed_at"]], on="order_id"
        )
    sold = sold.merge(products[["sku", "style_id", "category"]], on="sku")
    back = (
        lines[["return_id", "sku", "quantity"]]
        .merge(returns[["return_id", "requested_at"]], on="return_id")
        .merge(products[["sku", "style_id", "category"]], on="sku")
    )
    out: dict[str, Arrays] = {}
    for name, frame, time in (("sold", sold, "placed_at"), ("returned", back, "requested_at")):
        t = frame[time].dt.as_unit("us").astype("int64").to_numpy()
        for level, column in (("sku", "sku"), ("style", "style_id"), ("category", "category")):
            out[f"{name}_{level}"] = {
                "key": _text(frame[column], repeated=True),
                "t": t,
                "quantity": frame["quantity"].to_numpy(dtype=float),
            }
    return out


def product_snapshot_rows(product_events: dict[str, Arrays]) -> pd.DataFrame:
    """Cumulative units sold and returned per (level, key) as of 00:00 UTC of each day after activity."""
    frames = []
    for level in ("sku", "style", "category"):
        parts = []
        for name in ("sold", "returned"):
            events = product_events[f"{name}_{level}"]
            day = (day_start(events["t"]) // 86_400_000_000).astype(np.int64)
            part = pd.DataFrame({"key": events["key"], "day": day + 1, name: events["quantity"]})
            parts.append(part.groupby(["key", "day"], as_index=False)[name].sum())
        merged = (
            parts[0].merge(parts[1], on=["key", "day"], how="outer").fillna({"sold": 0.0, "returned": 0.0})
        )
        merged = merged.sort_values(["key", "day"], kind="stable")
        merged["sold_units"] = merged.groupby("key")["sold"].cumsum().astype(np.int64)
        merged["returned_units"] = merged.groupby("key")["returned"].cumsum().astype(np.int64)
        frames.append(merged[["key", "day", "sold_units", "returned_units"]].assign(level=level))
    return pd.concat(frames, ignore_index=True)[["level", "key", "day", "sold_units", "returned_units"]]


def location_snapshot_rows(store_events: Arrays, store_orders: Arrays) -> pd.DataFrame:
    """Cumulative returns, receiptless returns and orders per location as of 00:00 UTC of each day after
    activity (events strictly before the day)."""
    returns = pd.DataFrame(
        {
            "location_id": store_events["location_id"],
            "day": store_events["t"] // DAY_US + 1,
            "returns": 1.0,
            "receiptless": store_events["receiptless"],
            "orders": 0.0,
        }
    )
    orders = pd.DataFrame(
        {
            "location_id": store_orders["location_id"],
            "day": store_orders["t"] // DAY_US + 1,
            "returns": 0.0,
            "receiptless": 0.0,
            "orders": 1.0,
        }
    )
    both = pd.concat([returns, orders], ignore_index=True)
    both = both[both["location_id"].notna()]
    daily = both.groupby(["location_id", "day"], as_index=False, sort=True)[
        ["returns", "receiptless", "orders"]
    ].sum()
    counts = daily.groupby("location_id")[["returns", "receiptless", "orders"]].cumsum().astype(np.int64)
    return pd.concat([daily[["location_id", "day"]].astype({"day": np.int64}), counts], axis=1)
