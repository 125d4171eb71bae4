"""Merchandising and operations analytics for the dashboards, derived from the state tables.

Return rates by dimension (sale cohorts), abnormal items against their category (empirical Bayes),
size-curve and fit signals, limbo ageing, disposition mix and recovered value, cycle times and the
BORIS share. Plain functions on DataFrames: `load_inputs` reads what they need, `build_all` makes every
table (columns documented there) and `write_all` replaces them in the database. Imports `oms` only.

Statistical choices:

- Cohort view: a return is counted in the period of the SALE it returns, not of the return, so a
  period's rate is "of what we sold in March, how much came back" and is not distorted by seasonal
  sales swings (January returns of December sales). Receiptless returns (and return lines naming no
  order line) cannot be attributed to a sale and are left out of rates; the operations tables have them. Returns that were rejected, cancelled
  or expired are not returns; units returned are capped at the units sold on the order line.
- Maturity: a sale is `mature` once its return window (products.return_window_days) plus
  `grace_days` (delivery and posting time, default 14) has passed at `as_of`; immature cohorts only
  show returns "so far". Rates are split by the `mature` flag; compare items on mature rows only.
- Abnormal items: returned units out of sold units (mature sales) against the item's category under a
  beta-binomial model. The prior mean is the rate of the rest of the category (leave-one-out, so a big
  item does not set its own benchmark); the prior strength comes from the method of moments on the
  category's items (between-item variance beyond binomial noise). The posterior mean is the smoothed
  rate. An item is flagged only with at least `min_units` sold units, a raw rate above the benchmark,
  and the posterior one-sided lower bound at `confidence` above the benchmark - for all reasons
  together, or for one reason (defective, not_as_described, ...) at a Bonferroni-corrected level
  1 - (1 - confidence) / number of reasons. Flags name the test(s) that fired.
- Fit: for sized styles, doesnt_fit units out of sold units against the category with the same test
  gives `fit_issue`. The direction (runs small / large) is only claimed from directional evidence:
  exchanges to a bigger or smaller size of the same style, and bracketed orders (several sizes of one
  style, one size kept, others returned as doesnt_fit) where the kept size is bigger or smaller; a
  two-sided binomial test at `confidence` (at least `min_direction_events`) of the style's share of
  "up" events against the rest of its category's share, because customers at the ends of a size run
  can only move inwards. A fit issue without such evidence stays "fit_issue": a high doesnt_fit rate
  alone does not say which way the style is off.
- Operations are flows, counted in the period their event happened (return requested, disposed);
  cycle-time percentiles cover completed intervals, by the period of the interval's end.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Double,
    Engine,
    MetaData,
    Table,
    Text,
)

from oms.frames import load_frame, plain_rows
from oms.tables import metadata as state_metadata

DIMENSIONS = ("sku", "style_id", "category", "brand", "size", "channel", "location_id", "reason")
PERIODS = ("day", "week", "month", "quarter", "year")
NOT_RETURNED = ("rejected", "cancelled", "expired")  # statuses of requests that never became returns
OVERALL = "all"
MISSING = "(none)"
UNRECORDED = "(unrecorded)"
DEFAULT_WINDOW_DAYS = 30
AGE_BUCKETS = ("0-2", "3-7", "8-14", "15-30", ">30")
AGE_EDGES = (-np.inf, 2, 7, 14, 30, np.inf)  # on whole days: 0-2 | 3-7 | 8-14 | 15-30 | >30
PERCENTILES = (0.5, 0.75, 0.9, 0.95)
STAGES = (
    "request_to_receipt",
    "receipt_to_disposition",
    "request_to_disposition",
    "request_to_refund",
    "receipt_to_refund",
)
DAY = pd.Timedelta(days=1)

# Letter sizes in order; numeric sizes (shoes, waists) order by value. Ranks only compare within a style.
LETTER_SIZES = {
    "XXXS": -3,
    "3XS": -3,
    "XXS": -2,
    "2XS": -2,
    "XS": -1,
    "S": 0,
    "M": 1,
    "L": 2,
    "XL": 3,
    "XXL": 4,
    "2XL": 4,
    "XXXL": 5,
    "3XL": 5,
    "4XL": 6,
    "5XL": 7,
}

INPUT_COLUMNS: dict[str, tuple[str, ...]] = {
    "products": (
        "sku",
        "style_id",
        "category",
        "brand",
        "size",
        "list_price",
        "unit_cost",
        "return_window_days",
    ),
    "locations": ("location_id", "kind", "name"),
    "orders": ("order_id", "channel", "location_id", "placed_at"),
    "order_lines": ("order_id", "line_no", "sku", "quantity", "unit_price", "discount"),
    "returns": (
        "return_id",
        "order_id",
        "channel",
        "location_id",
        "requested_at",
        "received_at",
        "status",
        "refunded_at",
    ),
    "return_lines": (
        "return_id",
        "line_no",
        "order_line_no",
        "sku",
        "quantity",
        "reason",
        "condition",
        "disposition",
        "refund_amount",
        "recovery_value",
        "received_quantity",
        "disposed_at",
        "replacement_sku",
    ),
    "refunds": ("return_id", "created_at", "amount"),
}

_S, _B, _I, _F, _T = "string", "bool", "int64", "float64", "datetime64[us, UTC]"
_RATE_COLUMNS = {
    "units_sold": _I,
    "units_returned": _I,
    "value_sold": _F,
    "value_refunded": _F,
    "return_rate_units": _F,
    "return_rate_value": _F,
}
TABLES: dict[str, dict[str, str]] = {
    "analytics_return_rates": {
        "dimension": _S,
        "dimension_value": _S,
        "period": _S,
        "mature": _B,
        **_RATE_COLUMNS,
        "as_of": _T,
    },
    "analytics_abnormal_items": {
        "level": _S,
        "item_id": _S,
        "style_id": _S,
        "category": _S,
        **_RATE_COLUMNS,
        "smoothed_rate": _F,
        "rate_lower": _F,
        "rate_upper": _F,
        "category_rate": _F,
        "category_rate_value": _F,
        "prior_strength": _F,
        "p_above_category": _F,
        "excess_units_returned": _F,
        "excess_value_refunded": _F,
        "flagged_reason_excess_units": _F,
        "dominant_reason": _S,
        "dominant_reason_share": _F,
        "eligible": _B,
        "flagged": _B,
        "flag_reasons": _S,
        "as_of": _T,
    },
    "analytics_size_curve": {
        "style_id": _S,
        "category": _S,
        "size": _S,
        "size_rank": _F,
        "units_sold": _I,
        "units_returned": _I,
        "fit_returns": _I,
        "fit_rate": _F,
        "style_fit_rate": _F,
        "category_size_fit_rate": _F,
        "fit_index_vs_style": _F,
        "fit_index_vs_category_size": _F,
        "share_of_style_units": _F,
        "share_of_style_fit_returns": _F,
        "as_of": _T,
    },
    "analytics_fit_signals": {
        "style_id": _S,
        "category": _S,
        "sizes": _I,
        "units_sold": _I,
        "fit_returns": _I,
        "fit_rate": _F,
        "smoothed_fit_rate": _F,
        "fit_rate_lower": _F,
        "category_fit_rate": _F,
        "p_above_category": _F,
        "fit_issue": _B,
        "exchanges_up": _I,
        "exchanges_down": _I,
        "bracket_kept_larger": _I,
        "bracket_kept_smaller": _I,
        "size_up_events": _I,
        "size_down_events": _I,
        "category_up_share": _F,
        "direction_p_value": _F,
        "direction": _S,
        "fit_signal": _S,
        "as_of": _T,
    },
    "analytics_limbo": {
        "location_id": _S,
        "location_kind": _S,
        "location_name": _S,
        "age_bucket": _S,
        "lines": _I,
        "units": _I,
        "value": _F,
        "cost_value": _F,
        "oldest_age_days": _F,
        "as_of": _T,
    },
    "analytics_limbo_lines": {
        "return_id": _S,
        "line_no": _I,
        "location_id": _S,
        "sku": _S,
        "category": _S,
        "units": _I,
        "value": _F,
        "cost_value": _F,
        "received_at": _T,
        "age_days": _F,
        "age_bucket": _S,
        "as_of": _T,
    },
    "analytics_dispositions": {
        "period": _S,
        "location_id": _S,
        "category": _S,
        "disposition": _S,
        "lines": _I,
        "units": _I,
        "value_refunded": _F,
        "recovered_value": _F,
        "lines_with_recovery": _I,
        "recovery_rate": _F,
        "as_of": _T,
    },
    "analytics_cycle_time": {
        "stage": _S,
        "channel": _S,
        "period": _S,
        "observations": _I,
        "mean_days": _F,
        "p50_days": _F,
        "p75_days": _F,
        "p90_days": _F,
        "p95_days": _F,
        "as_of": _T,
    },
    "analytics_boris": {
        "period": _S,
        "location_id": _S,
        "returns": _I,
        "units": _I,
        "value": _F,
        "online_order_returns": _I,
        "online_order_value": _F,
        "boris_returns": _I,
        "boris_units": _I,
        "boris_value": _F,
        "boris_share_of_returns": _F,
        "boris_share_of_online_returns": _F,
        "boris_share_of_value": _F,
        "boris_share_of_online_value": _F,
        "as_of": _T,
    },
}


# --- inputs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalyticsInputs:
    """The state-table frames the analytics read (columns as in `INPUT_COLUMNS`, types as oms.frames)."""

    products: pd.DataFrame
    locations: pd.DataFrame
    orders: pd.DataFrame
    order_lines: pd.DataFrame
    returns: pd.DataFrame
    return_lines: pd.DataFrame
    refunds: pd.DataFrame


def load_inputs(bind: Engine | Connection) -> AnalyticsInputs:
    """Read the needed columns of the state tables (one connection, so one consistent read)."""
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return load_inputs(connection)
    return AnalyticsInputs(
        **{table: load_frame(bind, table, columns) for table, columns in INPUT_COLUMNS.items()}
    )


def resolve_as_of(inputs: AnalyticsInputs, as_of: object = None) -> pd.Timestamp:
    """`as_of` as a UTC timestamp; by default the latest event in the data (sale, return, disposal, refund)."""
    if as_of is not None:
        moment = pd.Timestamp(as_of)
        moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
        return moment.as_unit("us")
    latest = [
        inputs.orders["placed_at"].max(),
        inputs.returns["requested_at"].max(),
        inputs.returns["received_at"].max(),
        inputs.return_lines["disposed_at"].max(),
        inputs.refunds["created_at"].max(),
    ]
    known = [moment for moment in latest if pd.notna(moment)]
    return (max(known) if known else pd.Timestamp.now(tz="UTC")).as_unit("us")


# --- small helpers -------------------------------------------------------------------------------


def period_labels(moments: pd.Series, period: str) -> pd.Series:
    """Calendar period (UTC) of each moment: 2024-03-05, 2024-W10, 2024-03, 2024Q1, 2024 (NA for NaT)."""
    _check_choice("period", period, PERIODS)
    days = moments.dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D")
    codes, uniques = pd.factorize(days)
    starts = pd.DatetimeIndex(uniques)
    if period == "week":
        names = starts.strftime("%G-W%V")
    else:
        names = starts.to_period({"day": "D", "month": "M", "quarter": "Q", "year": "Y"}[period]).astype(str)
    labels = np.full(len(codes), None, dtype=object)
    present = codes >= 0
    labels[present] = np.asarray(names, dtype=object)[codes[present]]
    return pd.Series(labels, index=moments.index, dtype="string")


def size_rank(sizes: pd.Series) -> pd.Series:
    """An orderable rank per size label: letter sizes XXS < ... < XXL, numeric sizes by value; NaN otherwise."""
    text = sizes.astype("string").str.strip().str.upper()
    letters = text.map(LETTER_SIZES).astype("float64")
    numbers = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce").astype("float64")
    return letters.fillna(numbers)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _filled(values: pd.Series) -> pd.Series:
    return values.astype("string").fillna(MISSING)


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    numerator = numerator.astype("float64")
    denominator = denominator.astype("float64")
    return (numerator / denominator.where(denominator != 0)).astype("float64")


def _conform(frame: pd.DataFrame, table: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """Exactly the documented columns of `table`, in order, with their dtypes."""
    schema = TABLES[table]
    frame = frame.assign(as_of=as_of)
    missing = [name for name in schema if name not in frame]
    if missing:
        raise KeyError(f"{table} is missing {', '.join(missing)}")
    out = pd.DataFrame(index=range(len(frame)))
    for name, dtype in schema.items():
        values = frame[name].reset_index(drop=True)
        if dtype == _S:
            values = values.astype("string")
        elif dtype == _T:
            values = pd.to_datetime(values, utc=True).dt.as_unit("us")
        elif dtype == _B:
            values = values.fillna(False).astype(bool)
        elif dtype == _I:
            values = values.fillna(0).astype("int64")
        else:
            values = values.astype("float64")
        out[name] = values
    return out


def _eligible_returns(inputs: AnalyticsInputs, as_of: pd.Timestamp) -> pd.DataFrame:
    """Returns that happened by `as_of` and were not rejected, cancelled or expired."""
    returns = inputs.returns
    keep = ~returns["status"].isin(NOT_RETURNED).fillna(False) & (returns["requested_at"] <= as_of)
    return returns[keep.to_numpy()]


# --- sale cohorts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cohort:
    """Order lines sold by as_of with what came back of them, and the attributed return lines."""

    sales: pd.DataFrame
    returned: pd.DataFrame


_SALE_DIMENSIONS = ("sku", "style_id", "category", "brand", "size", "channel", "location_id")


def _cohort(inputs: AnalyticsInputs, as_of: pd.Timestamp, grace_days: float) -> _Cohort:
    orders = inputs.orders[(inputs.orders["placed_at"] <= as_of).to_numpy()]
    products = inputs.products[["sku", "style_id", "category", "brand", "size", "return_window_days"]]
    sales = inputs.order_lines.merge(orders, on="order_id", how="inner").merge(products, on="sku", how="left")
    sales["value_sold"] = sales["quantity"] * sales["unit_price"] - sales["discount"].fillna(0.0)
    window = sales["return_window_days"].astype("float64").fillna(DEFAULT_WINDOW_DAYS) + grace_days
    sales["mature"] = (sales["placed_at"] + pd.to_timedelta(window, unit="D")) <= as_of
    for name in _SALE_DIMENSIONS:
        sales[name] = _filled(sales[name])
    sales = sales.drop(columns=["return_window_days", "unit_price", "discount"])

    returns = _eligible_returns(inputs, as_of)
    returns = returns[returns["order_id"].notna().to_numpy()][["return_id", "order_id", "requested_at"]]
    lines = inputs.return_lines[
        ["return_id", "line_no", "order_line_no", "quantity", "reason", "refund_amount"]
    ]
    lines = lines[lines["order_line_no"].notna().to_numpy()].rename(columns={"line_no": "return_line_no"})
    lines = lines.merge(returns, on="return_id", how="inner")
    lines["line_no"] = lines["order_line_no"].astype("int64")
    sold = sales[["order_id", "line_no", "quantity", "value_sold", "placed_at", "mature", *_SALE_DIMENSIONS]]
    returned = lines.drop(columns=["order_line_no"]).merge(
        sold.rename(columns={"quantity": "units_sold_on_line"}), on=["order_id", "line_no"], how="inner"
    )
    # Cap what comes back at what was sold on the line (in request order): the rest of an over-return
    # belongs to a purchase outside the data.
    returned = returned.sort_values(["order_id", "line_no", "requested_at", "return_id", "return_line_no"])
    already = (
        returned.groupby(["order_id", "line_no"], sort=False)["quantity"].cumsum() - returned["quantity"]
    )
    units = (returned["units_sold_on_line"] - already).clip(lower=0).clip(upper=returned["quantity"])
    paid_per_unit = _ratio(returned["value_sold"], returned["units_sold_on_line"])
    refunded = returned["refund_amount"].fillna(paid_per_unit * returned["quantity"])
    returned["value_refunded"] = refunded * _ratio(units, returned["quantity"]).fillna(0.0)
    returned["units_returned"] = units.astype("int64")
    returned["reason"] = _filled(returned["reason"])
    returned = returned.drop(columns=["units_sold_on_line", "value_sold", "quantity", "refund_amount"])

    per_line = returned.groupby(["order_id", "line_no"], sort=False)[
        ["units_returned", "value_refunded"]
    ].sum()
    sales = sales.merge(per_line, left_on=["order_id", "line_no"], right_index=True, how="left")
    sales["units_returned"] = sales["units_returned"].fillna(0).astype("int64")
    sales["value_refunded"] = sales["value_refunded"].fillna(0.0)
    return _Cohort(sales=sales, returned=returned.reset_index(drop=True))


# --- return rates --------------------------------------------------------------------------------


def return_rates(
    inputs: AnalyticsInputs,
    by: str,
    period: str = "month",
    as_of: object = None,
    *,
    grace_days: float = 14,
) -> pd.DataFrame:
    """Units and value sold and returned, and return rates, per `by` value, per sale period and overall.

    Returns are attributed to the period of the sale (cohort view), rows are split by `mature` (the
    return window plus `grace_days` has closed at `as_of`). `location_id` is where the order was placed
    or shipped from (orders.location_id): the denominator is what that location sold; return locations
    are in the operations tables. For `by="reason"` the denominator is all sales, so the reasons' rates
    add up to the total. Missing values show as "(none)"; period "all" is the whole history.
    Columns: see `analytics_return_rates` in `build_all`.
    """
    _check_choice("by", by, DIMENSIONS)
    _check_choice("period", period, PERIODS)
    as_of = resolve_as_of(inputs, as_of)
    return _return_rates(_cohort(inputs, as_of, grace_days), by, period, as_of)


def _return_rates(cohort: _Cohort, by: str, period: str, as_of: pd.Timestamp) -> pd.DataFrame:
    sales = cohort.sales.assign(period=period_labels(cohort.sales["placed_at"], period))
    returned = cohort.returned.assign(period=period_labels(cohort.returned["placed_at"], period))
    sums = ["units_sold", "value_sold", "units_returned", "value_refunded"]
    sales = sales.rename(columns={"quantity": "units_sold"})
    frames = []
    for keys in (["period", "mature"], ["mature"]):
        if by == "reason":
            totals = sales.groupby(keys, observed=True)[["units_sold", "value_sold"]].sum().reset_index()
            by_reason = (
                returned.groupby(["reason", *keys], observed=True)[["units_returned", "value_refunded"]]
                .sum()
                .reset_index()
            )
            grid = totals.merge(pd.DataFrame({"reason": by_reason["reason"].unique()}), how="cross")
            table = grid.merge(by_reason, on=["reason", *keys], how="left").rename(
                columns={"reason": "dimension_value"}
            )
        else:
            table = (
                sales.groupby([by, *keys], observed=True)[sums]
                .sum()
                .reset_index()
                .rename(columns={by: "dimension_value"})
            )
        if "period" not in keys:
            table["period"] = OVERALL
        frames.append(table)
    table = pd.concat(frames, ignore_index=True)
    table["units_returned"] = table["units_returned"].fillna(0)
    table["value_refunded"] = table["value_refunded"].fillna(0.0)
    table["return_rate_units"] = _ratio(table["units_returned"], table["units_sold"])
    table["return_rate_value"] = _ratio(table["value_refunded"], table["value_sold"])
    table["dimension"] = by
    table = table.sort_values(["dimension_value", "period", "mature"], kind="stable")
    return _conform(table, "analytics_return_rates", as_of)


# --- abnormal items ------------------------------------------------------------------------------


def beta_binomial_test(
    returned: pd.Series,
    sold: pd.Series,
    group: pd.Series,
    confidence: float = 0.95,
    trials: pd.Series | None = None,
    bounds: bool = True,
    min_sold: float = 0,
) -> pd.DataFrame:
    """Empirical-Bayes comparison of each item's rate (returned of sold) with the rest of its group.

    `trials` is the number of independent purchases behind `sold` (default: `sold`); with order lines
    of several units, pass the number of lines: the evidence is scaled to returned x trials / sold out
    of trials, so a line of 1,000 units returned in one go counts as one purchase, not 1,000.

    Per group, the prior strength kappa comes from the method of moments: with pooled rate m, the
    n-weighted squared deviations S = sum n_i (p_i - m)^2 have expectation
    m(1-m) [(K-1) + rho (N - sum n_i^2 / N - (K-1))] for K items and N trials, rho = 1 / (kappa + 1)
    being the share of variance between items. Groups where that cannot be estimated (fewer than 3
    items, a rate of 0 or 1) borrow the median rho of the others (0.01 if none). The prior mean is the
    leave-one-out rate of the group. Returns, aligned with the inputs: benchmark (leave-one-out rate,
    NaN for an item alone in its group), prior_strength, smoothed (posterior mean), lower and upper
    (one-sided posterior bounds at `confidence`), p_above (posterior probability that the item's rate
    exceeds the benchmark) and above (raw rate and lower bound both above the benchmark).
    With `bounds=False` lower and upper are left NaN (the inverse beta is the slow part); items with
    fewer than `min_sold` units are not tested (p_above NaN, above False).
    """
    units_returned = returned.astype("float64").to_numpy()
    units_sold = sold.astype("float64").to_numpy()
    labels = group.to_numpy()
    total_returned = pd.Series(units_returned).groupby(labels).transform("sum").to_numpy()
    total_sold = pd.Series(units_sold).groupby(labels).transform("sum").to_numpy()
    rest = total_sold - units_sold
    with np.errstate(divide="ignore", invalid="ignore"):
        benchmark = np.where(rest > 0, (total_returned - units_returned) / rest, np.nan)
        pooled = total_returned / total_sold
        scale = np.ones_like(units_sold) if trials is None else trials.to_numpy(dtype="float64") / units_sold
    scale = np.where(np.isfinite(scale), scale, 0.0)
    k, n = units_returned * scale, units_sold * scale
    frame = pd.DataFrame({"k": k, "n": n, "g": labels})
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["deviation"] = np.where(n > 0, (k - n * pooled) ** 2 / n, 0.0)
    frame["n2"] = n**2
    frame["items"] = n > 0
    sums = frame.groupby("g", sort=False)[["k", "n", "deviation", "n2", "items"]].sum()
    m = sums["k"] / sums["n"]
    variance = m * (1 - m)
    count = sums["items"]
    denominator = sums["n"] - sums["n2"] / sums["n"] - (count - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (sums["deviation"] / variance - (count - 1)) / denominator
    valid = (count >= 3) & (variance > 0) & (denominator > 0) & np.isfinite(rho)
    fallback = float(rho[valid].clip(1e-6, 0.99).median()) if valid.any() else 0.01
    rho = rho.where(valid, fallback).clip(1e-6, 0.99)
    kappa = (1 / rho - 1).clip(lower=1e-3)
    strength = frame["g"].map(kappa).to_numpy(dtype="float64")
    mean = np.clip(np.where(np.isnan(benchmark), pooled, benchmark), 1e-9, 1 - 1e-9)
    mean = np.where(np.isnan(mean), 0.5, mean)
    a = mean * strength + k
    b = (1 - mean) * strength + np.maximum(n - k, 0)
    lower = stats.beta.ppf(1 - confidence, a, b) if bounds else np.full(len(a), np.nan)
    upper = stats.beta.ppf(confidence, a, b) if bounds else np.full(len(a), np.nan)
    tested = ~np.isnan(benchmark) & (units_sold >= min_sold)
    p_above = np.full(len(a), np.nan)
    p_above[tested] = stats.beta.sf(benchmark[tested], a[tested], b[tested])
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(n > 0, k / n, np.nan)
    # the lower bound exceeds the benchmark exactly when P(rate > benchmark) exceeds the confidence
    above = tested & (raw > benchmark) & (p_above > confidence)
    return pd.DataFrame(
        {
            "benchmark": benchmark,
            "prior_strength": strength,
            "smoothed": a / (a + b),
            "lower": lower,
            "upper": upper,
            "p_above": p_above,
            "above": above,
        },
        index=returned.index,
    )


def abnormal_items(
    inputs: AnalyticsInputs,
    level: str = "style_id",
    as_of: object = None,
    *,
    min_units: int = 30,
    confidence: float = 0.95,
    grace_days: float = 14,
) -> pd.DataFrame:
    """Items (`level` "style_id" or "sku") whose mature return rate is credibly above their category's.

    See the module docstring for the test; columns: see `analytics_abnormal_items` in `build_all`.
    """
    _check_choice("level", level, ("style_id", "sku"))
    as_of = resolve_as_of(inputs, as_of)
    return _abnormal_items(_cohort(inputs, as_of, grace_days), level, as_of, min_units, confidence)


def _abnormal_items(
    cohort: _Cohort, level: str, as_of: pd.Timestamp, min_units: int, confidence: float
) -> pd.DataFrame:
    _check_choice("level", level, ("style_id", "sku"))
    sales = cohort.sales[cohort.sales["mature"].to_numpy()]
    returned = cohort.returned[cohort.returned["mature"].to_numpy()]
    items = sales.groupby(level, sort=True).agg(
        style_id=("style_id", "first"),
        category=("category", "first"),
        units_sold=("quantity", "sum"),
        lines_sold=("line_no", "size"),
        value_sold=("value_sold", "sum"),
        units_returned=("units_returned", "sum"),
        value_refunded=("value_refunded", "sum"),
    )
    items = items[items["units_sold"] > 0]
    items.index.name = "item_id"
    items["return_rate_units"] = _ratio(items["units_returned"], items["units_sold"])
    items["return_rate_value"] = _ratio(items["value_refunded"], items["value_sold"])
    overall = beta_binomial_test(
        items["units_returned"], items["units_sold"], items["category"], confidence, items["lines_sold"]
    )
    value_test = _leave_one_out(items["value_refunded"], items["value_sold"], items["category"])
    items["eligible"] = items["units_sold"] >= min_units
    items["smoothed_rate"] = overall["smoothed"]
    items["rate_lower"] = overall["lower"]
    items["rate_upper"] = overall["upper"]
    items["category_rate"] = overall["benchmark"]
    items["category_rate_value"] = value_test
    items["prior_strength"] = overall["prior_strength"]
    items["p_above_category"] = overall["p_above"]
    items["excess_units_returned"] = (
        items["units_returned"] - items["category_rate"] * items["units_sold"]
    ).clip(lower=0)
    items["excess_value_refunded"] = (items["value_refunded"] - value_test * items["value_sold"]).clip(
        lower=0
    )

    # one test per reason, on the full item x reason grid (zeros included), Bonferroni over reasons
    by_reason = (
        returned.groupby([level, "reason"], observed=True)["units_returned"].sum().unstack(fill_value=0)
    )
    by_reason = by_reason.reindex(items.index, fill_value=0)
    reasons = list(by_reason.columns)
    long = by_reason.stack().rename("k").reset_index()
    long.columns = ["item_id", "reason", "k"]
    long["n"] = items["units_sold"].reindex(long["item_id"]).to_numpy()
    long["category"] = items["category"].reindex(long["item_id"]).to_numpy()
    long["lines"] = items["lines_sold"].reindex(long["item_id"]).to_numpy()
    per_reason_confidence = 1 - (1 - confidence) / max(len(reasons), 1)
    reason_test = beta_binomial_test(
        long["k"],
        long["n"],
        long["category"] + "\x1f" + long["reason"],
        per_reason_confidence,
        long["lines"],
        bounds=False,
        min_sold=min_units,
    )
    long["flag"] = reason_test["above"].to_numpy() & (long["n"] >= min_units).to_numpy()
    long["excess"] = np.where(
        long["flag"], (long["k"] - reason_test["benchmark"] * long["n"]).clip(lower=0), 0.0
    )
    items["flagged_reason_excess_units"] = (
        long.groupby("item_id", sort=False)["excess"].sum().reindex(items.index)
    )
    flags = long.pivot(index="item_id", columns="reason", values="flag").reindex(items.index)
    overall_flag = overall["above"] & items["eligible"]
    labels = pd.Series(np.where(overall_flag, "overall", ""), index=items.index, dtype=object)
    for reason in sorted(reasons):
        labels = labels + np.where(flags[reason].fillna(False).astype(bool), "," + reason, "")
    joined = labels.str.strip(",")
    items["flag_reasons"] = joined.where(joined != "")
    items["flagged"] = items["flag_reasons"].notna()

    totals = by_reason.sum(axis=1)
    items["dominant_reason"] = by_reason.idxmax(axis=1).where(totals > 0) if reasons else None
    items["dominant_reason_share"] = _ratio(by_reason.max(axis=1), totals) if reasons else np.nan
    items["level"] = level
    items = items.reset_index()
    return _conform(items, "analytics_abnormal_items", as_of)


def _leave_one_out(numerator: pd.Series, denominator: pd.Series, group: pd.Series) -> pd.Series:
    total_numerator = numerator.groupby(group).transform("sum")
    total_denominator = denominator.groupby(group).transform("sum")
    return _ratio(total_numerator - numerator, total_denominator - denominator)


# --- size curve and fit ---------------------------------------------------------------------------


def _sized(cohort: _Cohort) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mature sales and returns of styles sold in at least two sizes."""
    sales = cohort.sales[cohort.sales["mature"].to_numpy() & (cohort.sales["size"] != MISSING).to_numpy()]
    sizes = sales.groupby("style_id")["size"].nunique()
    sized = sizes.index[sizes >= 2]
    sales = sales[sales["style_id"].isin(sized).to_numpy()]
    returned = cohort.returned[
        cohort.returned["mature"].to_numpy() & cohort.returned["style_id"].isin(sized).to_numpy()
    ]
    returned = returned[(returned["size"] != MISSING).to_numpy()]
    return sales, returned


def size_curve(inputs: AnalyticsInputs, as_of: object = None, *, grace_days: float = 14) -> pd.DataFrame:
    """Per sized style and size: doesnt_fit rate against the style's and the category-size's (mature sales).

    Columns: see `analytics_size_curve` in `build_all`.
    """
    as_of = resolve_as_of(inputs, as_of)
    return _size_curve(_cohort(inputs, as_of, grace_days), as_of)


def _size_curve(cohort: _Cohort, as_of: pd.Timestamp) -> pd.DataFrame:
    sales, returned = _sized(cohort)
    fit = returned[(returned["reason"] == "doesnt_fit").to_numpy()]
    keys = ["style_id", "size"]
    table = sales.groupby(keys).agg(
        category=("category", "first"),
        units_sold=("quantity", "sum"),
        units_returned=("units_returned", "sum"),
    )
    table["fit_returns"] = fit.groupby(keys)["units_returned"].sum().reindex(table.index, fill_value=0)
    table = table.reset_index()
    style = table.groupby("style_id")[["units_sold", "fit_returns"]].transform("sum")
    category_size = table.groupby(["category", "size"])[["units_sold", "fit_returns"]].transform("sum")
    table["size_rank"] = size_rank(table["size"])
    table["fit_rate"] = _ratio(table["fit_returns"], table["units_sold"])
    table["style_fit_rate"] = _ratio(style["fit_returns"], style["units_sold"])
    table["category_size_fit_rate"] = _ratio(category_size["fit_returns"], category_size["units_sold"])
    table["fit_index_vs_style"] = _ratio(table["fit_rate"], table["style_fit_rate"])
    table["fit_index_vs_category_size"] = _ratio(table["fit_rate"], table["category_size_fit_rate"])
    table["share_of_style_units"] = _ratio(table["units_sold"], style["units_sold"])
    table["share_of_style_fit_returns"] = _ratio(table["fit_returns"], style["fit_returns"])
    table = table.sort_values(["style_id", "size_rank", "size"], kind="stable")
    return _conform(table, "analytics_size_curve", as_of)


def fit_signals(
    inputs: AnalyticsInputs,
    as_of: object = None,
    *,
    min_units: int = 30,
    confidence: float = 0.95,
    min_direction_events: int = 5,
    grace_days: float = 14,
) -> pd.DataFrame:
    """Per sized style: is doesnt_fit abnormally frequent, and which way the style is off if we can tell.

    fit_signal is "low_volume" (< min_units mature units), "ok", "fit_issue" (doesnt_fit credibly above
    the category, direction unknown), "runs_small" or "runs_large" (fit issue plus size-up vs size-down
    events significantly off the category's balance). Columns: see `analytics_fit_signals` in `build_all`.
    """
    as_of = resolve_as_of(inputs, as_of)
    cohort = _cohort(inputs, as_of, grace_days)
    return _fit_signals(inputs, cohort, as_of, min_units, confidence, min_direction_events)


def _fit_signals(
    inputs: AnalyticsInputs,
    cohort: _Cohort,
    as_of: pd.Timestamp,
    min_units: int,
    confidence: float,
    min_direction_events: int,
) -> pd.DataFrame:
    sales, returned = _sized(cohort)
    fit = returned[(returned["reason"] == "doesnt_fit").to_numpy()]
    styles = sales.groupby("style_id").agg(
        category=("category", "first"),
        sizes=("size", "nunique"),
        units_sold=("quantity", "sum"),
        lines_sold=("line_no", "size"),
    )
    styles["fit_returns"] = (
        fit.groupby("style_id")["units_returned"].sum().reindex(styles.index, fill_value=0)
    )
    test = beta_binomial_test(
        styles["fit_returns"], styles["units_sold"], styles["category"], confidence, styles["lines_sold"]
    )
    styles["fit_rate"] = _ratio(styles["fit_returns"], styles["units_sold"])
    styles["smoothed_fit_rate"] = test["smoothed"]
    styles["fit_rate_lower"] = test["lower"]
    styles["category_fit_rate"] = test["benchmark"]
    styles["p_above_category"] = test["p_above"]
    eligible = styles["units_sold"] >= min_units
    styles["fit_issue"] = test["above"] & eligible

    exchanges = _exchange_directions(inputs, as_of)
    brackets = _bracket_directions(sales, fit)
    styles["exchanges_up"] = exchanges["up"].reindex(styles.index, fill_value=0)
    styles["exchanges_down"] = exchanges["down"].reindex(styles.index, fill_value=0)
    styles["bracket_kept_larger"] = brackets["up"].reindex(styles.index, fill_value=0)
    styles["bracket_kept_smaller"] = brackets["down"].reindex(styles.index, fill_value=0)
    styles["size_up_events"] = styles["exchanges_up"] + styles["bracket_kept_larger"]
    styles["size_down_events"] = styles["exchanges_down"] + styles["bracket_kept_smaller"]
    up, events = styles["size_up_events"], styles["size_up_events"] + styles["size_down_events"]
    # Against the rest of the category's balance, not 1/2: at the ends of a size run customers can
    # only bracket or exchange inwards, which tilts every style of the category the same way.
    expected = _leave_one_out(up, events, styles["category"]).fillna(0.5).clip(0.01, 0.99)
    tail = np.minimum(stats.binom.cdf(up, events, expected), stats.binom.sf(up - 1, events, expected))
    styles["category_up_share"] = expected
    styles["direction_p_value"] = np.where(events > 0, np.minimum(1.0, 2 * tail), np.nan)
    decided = (events >= min_direction_events) & (styles["direction_p_value"] < 1 - confidence)
    direction = np.where(up > expected * events, "up", "down")
    styles["direction"] = pd.Series(np.where(decided, direction, None), index=styles.index, dtype="string")
    signal = np.select(
        [
            ~eligible,
            styles["fit_issue"] & (styles["direction"] == "up").fillna(False),
            styles["fit_issue"] & (styles["direction"] == "down").fillna(False),
            styles["fit_issue"],
        ],
        ["low_volume", "runs_small", "runs_large", "fit_issue"],
        "ok",
    )
    styles["fit_signal"] = signal
    return _conform(styles.reset_index(), "analytics_fit_signals", as_of)


def _exchange_directions(inputs: AnalyticsInputs, as_of: pd.Timestamp) -> pd.DataFrame:
    """Per style, exchange lines to a bigger (up) or smaller (down) size of the same style."""
    returns = _eligible_returns(inputs, as_of)[["return_id"]]
    lines = inputs.return_lines[inputs.return_lines["replacement_sku"].notna().to_numpy()]
    lines = lines.merge(returns, on="return_id", how="inner")[["sku", "replacement_sku"]]
    products = inputs.products[["sku", "style_id", "size"]].assign(rank=size_rank(inputs.products["size"]))
    lines = lines.merge(products, on="sku").merge(
        products.rename(columns=lambda c: f"new_{c}"), left_on="replacement_sku", right_on="new_sku"
    )
    same_style = (lines["style_id"] == lines["new_style_id"]).fillna(False).to_numpy()
    lines = lines[same_style]
    return pd.DataFrame(
        {
            "up": (lines["new_rank"] > lines["rank"]).groupby(lines["style_id"]).sum(),
            "down": (lines["new_rank"] < lines["rank"]).groupby(lines["style_id"]).sum(),
        }
    )


def _bracket_directions(sales: pd.DataFrame, fit: pd.DataFrame) -> pd.DataFrame:
    """Per style, bracketed orders where one size was kept and another returned as doesnt_fit.

    up: the kept size is bigger than the returned one (the customer needed a bigger size); down: smaller.
    """
    keys = ["order_id", "style_id"]
    lines = sales[sales.duplicated(keys, keep=False).to_numpy()][
        [*keys, "line_no", "size", "quantity", "units_returned"]
    ]
    if lines.empty:
        return pd.DataFrame({"up": pd.Series(dtype="int64"), "down": pd.Series(dtype="int64")})
    lines = lines.assign(rank=size_rank(lines["size"]))
    fit_units = fit.groupby(["order_id", "line_no"])["units_returned"].sum().rename("fit_units")
    lines = lines.merge(fit_units, left_on=["order_id", "line_no"], right_index=True, how="left")
    lines["fit_units"] = lines["fit_units"].fillna(0)
    lines["kept"] = lines["quantity"] - lines["units_returned"]
    kept = lines[(lines["kept"] > 0).to_numpy()].groupby(keys)["rank"].agg(["nunique", "max"])
    kept = kept[kept["nunique"] == 1]["max"].rename("kept_rank")
    misfits = lines[(lines["fit_units"] > 0).to_numpy()].merge(
        kept, left_on=keys, right_index=True, how="inner"
    )
    return pd.DataFrame(
        {
            "up": (misfits["kept_rank"] > misfits["rank"]).groupby(misfits["style_id"]).sum(),
            "down": (misfits["kept_rank"] < misfits["rank"]).groupby(misfits["style_id"]).sum(),
        }
    )


# --- operations ----------------------------------------------------------------------------------


def _received_lines(inputs: AnalyticsInputs, as_of: pd.Timestamp) -> pd.DataFrame:
    """Return lines received by `as_of` with units, value, and whether they were disposed by then.

    Units are received_quantity when recorded (lifecycle), else the line quantity (imported history).
    A line is disposed at disposed_at when recorded; without it (imported history), a line with a
    disposition or in a completed return counts as disposed at an unknown time before `as_of`.
    """
    returns = _eligible_returns(inputs, as_of)
    returns = returns[(returns["received_at"] <= as_of).fillna(False).to_numpy()]
    returns = returns[["return_id", "location_id", "received_at", "requested_at", "status", "channel"]]
    lines = inputs.return_lines.merge(returns, on="return_id", how="inner")
    lines = lines.merge(inputs.products[["sku", "category", "list_price", "unit_cost"]], on="sku", how="left")
    lines["units"] = lines["received_quantity"].fillna(lines["quantity"]).astype("int64")
    lines = lines[(lines["units"] > 0).to_numpy()].copy()
    lines["value"] = (lines["refund_amount"] * lines["units"] / lines["quantity"]).fillna(
        lines["list_price"] * lines["units"]
    )
    lines["cost_value"] = lines["unit_cost"] * lines["units"]
    recorded = lines["disposed_at"].notna()
    unknown_time = lines["disposition"].notna() | (lines["status"] == "completed").fillna(False)
    lines["disposed"] = np.where(recorded, (lines["disposed_at"] <= as_of).fillna(False), unknown_time)
    lines["location_id"] = _filled(lines["location_id"])
    lines["category"] = _filled(lines["category"])
    return lines


def limbo_lines(inputs: AnalyticsInputs, as_of: object = None) -> pd.DataFrame:
    """Return lines received at a location and not disposed of at `as_of`, with their age.

    Columns: see `analytics_limbo_lines` in `build_all`.
    """
    as_of = resolve_as_of(inputs, as_of)
    return _limbo_lines(_received_lines(inputs, as_of), as_of)


def _limbo_lines(received: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    lines = received[~received["disposed"].to_numpy()].copy()
    lines["age_days"] = (as_of - lines["received_at"]) / DAY
    buckets = pd.cut(np.floor(lines["age_days"]), AGE_EDGES, labels=AGE_BUCKETS, right=True)
    lines["age_bucket"] = buckets.astype("string")
    lines = lines.sort_values(["location_id", "received_at", "return_id", "line_no"], kind="stable")
    return _conform(lines, "analytics_limbo_lines", as_of)


def limbo_ageing(inputs: AnalyticsInputs, as_of: object = None) -> pd.DataFrame:
    """Units and value in limbo per return location and age bucket (0-2, 3-7, 8-14, 15-30, >30 days).

    Every bucket is listed for each location holding anything in limbo. Columns: see `analytics_limbo`.
    """
    as_of = resolve_as_of(inputs, as_of)
    return _limbo_ageing(limbo_lines(inputs, as_of), inputs.locations, as_of)


def _limbo_ageing(lines: pd.DataFrame, locations: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    table = lines.groupby(["location_id", "age_bucket"]).agg(
        lines=("line_no", "size"),
        units=("units", "sum"),
        value=("value", "sum"),
        cost_value=("cost_value", "sum"),
        oldest_age_days=("age_days", "max"),
    )
    grid = pd.MultiIndex.from_product(
        [sorted(lines["location_id"].unique()), AGE_BUCKETS], names=["location_id", "age_bucket"]
    )
    table = table.reindex(grid).reset_index()
    for name in ("lines", "units", "value", "cost_value"):
        table[name] = table[name].fillna(0)
    names = locations.rename(columns={"kind": "location_kind", "name": "location_name"})
    table = table.merge(names, on="location_id", how="left")
    return _conform(table, "analytics_limbo", as_of)


def disposition_mix(inputs: AnalyticsInputs, as_of: object = None, period: str = "month") -> pd.DataFrame:
    """Disposed units, refunded and recovered value by period of disposal, return location, category, disposition.

    The period is that of disposed_at, or of received_at where the disposal time was not recorded;
    period "all" is the whole history. Lines that left limbo without a recorded disposition (imported
    history of completed returns) appear as "(unrecorded)". recovery_rate = recovered / refunded value.
    Columns: see `analytics_dispositions` in `build_all`.
    """
    as_of = resolve_as_of(inputs, as_of)
    return _disposition_mix(_received_lines(inputs, as_of), as_of, period)


def _disposition_mix(received: pd.DataFrame, as_of: pd.Timestamp, period: str) -> pd.DataFrame:
    lines = received[received["disposed"].to_numpy()].copy()
    lines["disposition"] = lines["disposition"].astype("string").fillna(UNRECORDED)
    lines["period"] = period_labels(lines["disposed_at"].fillna(lines["received_at"]), period)
    lines["has_recovery"] = lines["recovery_value"].notna()
    frames = []
    for keys in (
        ["period", "location_id", "category", "disposition"],
        ["location_id", "category", "disposition"],
    ):
        table = (
            lines.groupby(keys)
            .agg(
                lines=("line_no", "size"),
                units=("units", "sum"),
                value_refunded=("value", "sum"),
                recovered_value=("recovery_value", "sum"),
                lines_with_recovery=("has_recovery", "sum"),
            )
            .reset_index()
        )
        if "period" not in keys:
            table["period"] = OVERALL
        frames.append(table)
    table = pd.concat(frames, ignore_index=True)
    table["recovered_value"] = table["recovered_value"].where(table["lines_with_recovery"] > 0)
    table["recovery_rate"] = _ratio(table["recovered_value"], table["value_refunded"])
    return _conform(table, "analytics_dispositions", as_of)


def cycle_times(inputs: AnalyticsInputs, as_of: object = None, period: str = "month") -> pd.DataFrame:
    """Days between lifecycle events, as percentiles per stage, return channel and period of the end event.

    Stages: request_to_receipt (returns.requested_at -> received_at), receipt_to_disposition and
    request_to_disposition (-> return_lines.disposed_at, per line), request_to_refund and
    receipt_to_refund (-> the return's first refunds.created_at, else returns.refunded_at): the lifecycle
    records each end event, and imported files may carry them (optional contract columns). Only completed
    intervals (end event by `as_of`) count; work still open is in limbo. Channel and period "all" are
    the totals; a stage without data (e.g. no disposal times in imported history) has one row with
    observations 0. Columns: see `analytics_cycle_time` in `build_all`.
    """
    as_of = resolve_as_of(inputs, as_of)
    eligible = _eligible_returns(inputs, as_of)
    returns = eligible[["return_id", "channel", "requested_at", "received_at"]]
    lines = inputs.return_lines[["return_id", "disposed_at"]].merge(returns, on="return_id", how="inner")
    # the refund's time: the lifecycle's first refund, else what an imported file carried
    refunds = inputs.refunds[(inputs.refunds["created_at"] <= as_of).to_numpy()]
    first_refund = refunds.groupby("return_id")["created_at"].min()
    refunded_at = (
        eligible.set_index("return_id")["refunded_at"]
        if "refunded_at" in eligible
        else pd.Series(pd.NaT, index=pd.Index(eligible["return_id"]), dtype="datetime64[us, UTC]")
    )
    refunded_at = first_refund.reindex(refunded_at.index).fillna(refunded_at).rename("refunded_at")
    refunded = returns.merge(refunded_at.dropna(), left_on="return_id", right_index=True, how="inner")
    spans = [
        ("request_to_receipt", returns, "requested_at", "received_at"),
        ("receipt_to_disposition", lines, "received_at", "disposed_at"),
        ("request_to_disposition", lines, "requested_at", "disposed_at"),
        ("request_to_refund", refunded, "requested_at", "refunded_at"),
        ("receipt_to_refund", refunded, "received_at", "refunded_at"),
    ]
    intervals = []
    for stage, frame, start, end in spans:
        done = (frame[end] <= as_of).fillna(False) & frame[start].notna()
        frame = frame[done.to_numpy()]
        intervals.append(
            pd.DataFrame(
                {
                    "stage": stage,
                    "channel": _filled(frame["channel"]).to_numpy(),
                    "period": period_labels(frame[end], period).to_numpy(),
                    "days": ((frame[end] - frame[start]) / DAY).to_numpy(dtype="float64"),
                }
            )
        )
    data = pd.concat(intervals, ignore_index=True)
    data["period"] = data["period"].astype("string")
    frames = []
    for channel_total in (False, True):
        for period_total in (False, True):
            view = data.assign(
                channel=OVERALL if channel_total else data["channel"],
                period=OVERALL if period_total else data["period"],
            )
            grouped = view.groupby(["stage", "channel", "period"])["days"]
            table = grouped.agg(observations="size", mean_days="mean")
            quantiles = grouped.quantile(list(PERCENTILES)).unstack()
            quantiles.columns = [f"p{round(q * 100)}_days" for q in quantiles.columns]
            frames.append(table.join(quantiles).reset_index())
    table = pd.concat(frames, ignore_index=True)
    present = set(table["stage"][(table["channel"] == OVERALL) & (table["period"] == OVERALL)])
    empty = pd.DataFrame(
        {
            "stage": [s for s in STAGES if s not in present],
            "channel": OVERALL,
            "period": OVERALL,
            "observations": 0,
        }
    )
    table = pd.concat([table, empty], ignore_index=True)
    table["stage_order"] = table["stage"].map({s: i for i, s in enumerate(STAGES)})
    table = table.sort_values(["stage_order", "channel", "period"], kind="stable")
    return _conform(table, "analytics_cycle_time", as_of)


def boris_share(inputs: AnalyticsInputs, as_of: object = None, period: str = "month") -> pd.DataFrame:
    """Buy online, return in store: share of returns and of returned value, per period and return location.

    A return is BORIS when its order's channel is not "store" and the return's channel is "store".
    Shares are of all returns (receiptless included) and of returns of online orders, by the period of
    the request; period and location "all" are totals. Value is the refund amount, or list price x
    units where it is not recorded. Columns: see `analytics_boris` in `build_all`.
    """
    as_of = resolve_as_of(inputs, as_of)
    returns = _eligible_returns(inputs, as_of)[
        ["return_id", "order_id", "channel", "location_id", "requested_at"]
    ]
    lines = inputs.return_lines[["return_id", "sku", "quantity", "refund_amount"]].merge(
        inputs.products[["sku", "list_price"]], on="sku", how="left"
    )
    lines["value"] = lines["refund_amount"].fillna(lines["list_price"] * lines["quantity"])
    per_return = lines.groupby("return_id")[["quantity", "value"]].sum()
    returns = returns.merge(per_return, left_on="return_id", right_index=True, how="left")
    returns = returns.merge(
        inputs.orders[["order_id", "channel"]].rename(columns={"channel": "order_channel"}),
        on="order_id",
        how="left",
    )
    online = (returns["order_channel"].notna() & (returns["order_channel"] != "store")).fillna(False)
    boris = online & (returns["channel"] == "store").fillna(False)
    data = pd.DataFrame(
        {
            "period": period_labels(returns["requested_at"], period),
            "location_id": _filled(returns["location_id"]),
            "returns": 1,
            "units": returns["quantity"].fillna(0).astype("int64"),
            "value": returns["value"].fillna(0.0),
            "online_order_returns": online.astype("int64"),
            "online_order_value": returns["value"].fillna(0.0).where(online, 0.0),
            "boris_returns": boris.astype("int64"),
            "boris_units": returns["quantity"].fillna(0).astype("int64").where(boris, 0),
            "boris_value": returns["value"].fillna(0.0).where(boris, 0.0),
        }
    )
    sums = [c for c in data.columns if c not in ("period", "location_id")]
    frames = []
    for period_total in (False, True):
        for location_total in (False, True):
            view = data.assign(
                period=OVERALL if period_total else data["period"],
                location_id=OVERALL if location_total else data["location_id"],
            )
            frames.append(view.groupby(["period", "location_id"])[sums].sum().reset_index())
    table = pd.concat(frames, ignore_index=True)
    table["boris_share_of_returns"] = _ratio(table["boris_returns"], table["returns"])
    table["boris_share_of_online_returns"] = _ratio(table["boris_returns"], table["online_order_returns"])
    table["boris_share_of_value"] = _ratio(table["boris_value"], table["value"])
    table["boris_share_of_online_value"] = _ratio(table["boris_value"], table["online_order_value"])
    table = table.sort_values(["period", "location_id"], kind="stable")
    return _conform(table, "analytics_boris", as_of)


# --- all tables, and the database -----------------------------------------------------------------


def build_all(
    inputs: AnalyticsInputs,
    as_of: object = None,
    *,
    period: str = "month",
    min_units: int = 30,
    confidence: float = 0.95,
    grace_days: float = 14,
    min_direction_events: int = 5,
) -> dict[str, pd.DataFrame]:
    """Every analytics table, by its database name. Every table ends with `as_of` (UTC timestamp).

    analytics_return_rates - one row per dimension value, sale period and maturity:
        dimension (sku, style_id, category, brand, size, channel = order channel, location_id = order
        location, reason), dimension_value ("(none)" when missing), period (sale period, or "all"),
        mature (return window + grace closed), units_sold, units_returned, value_sold, value_refunded,
        return_rate_units, return_rate_value.
    analytics_abnormal_items - one row per sold item (mature sales), level "style_id" and "sku":
        level, item_id, style_id, category, units_sold, units_returned, value_sold, value_refunded,
        return_rate_units, return_rate_value, smoothed_rate (posterior mean), rate_lower, rate_upper
        (one-sided bounds at `confidence`), category_rate and category_rate_value (rest of the category),
        prior_strength (kappa), p_above_category, excess_units_returned and excess_value_refunded
        (above the category rate, >= 0), flagged_reason_excess_units (over the flagged reasons' rates),
        dominant_reason, dominant_reason_share, eligible (units_sold >= min_units), flagged,
        flag_reasons ("overall" and/or reason names, comma separated).
    analytics_size_curve - one row per sized style and size (mature sales): style_id, category, size,
        size_rank, units_sold, units_returned, fit_returns (doesnt_fit units), fit_rate, style_fit_rate,
        category_size_fit_rate, fit_index_vs_style, fit_index_vs_category_size, share_of_style_units,
        share_of_style_fit_returns.
    analytics_fit_signals - one row per sized style: style_id, category, sizes, units_sold,
        fit_returns, fit_rate, smoothed_fit_rate, fit_rate_lower, category_fit_rate, p_above_category,
        fit_issue, exchanges_up, exchanges_down, bracket_kept_larger, bracket_kept_smaller,
        size_up_events, size_down_events, category_up_share (the rest of the category's share of up
        events, the sign test's null), direction_p_value, direction ("up" = customers need a bigger
        size, "down"), fit_signal (low_volume, ok, fit_issue, runs_small, runs_large).
    analytics_limbo - per return location x age bucket: location_id, location_kind, location_name,
        age_bucket (0-2, 3-7, 8-14, 15-30, >30 whole days since receipt), lines, units, value (refund
        amount, else list price), cost_value (unit cost), oldest_age_days.
    analytics_limbo_lines - the lines in limbo: return_id, line_no, location_id, sku, category, units,
        value, cost_value, received_at, age_days, age_bucket.
    analytics_dispositions - period (of disposal, or "all"), location_id (return location), category,
        disposition, lines, units, value_refunded, recovered_value (sum of recovery_value),
        lines_with_recovery, recovery_rate.
    analytics_cycle_time - stage, channel (return channel or "all"), period (of the end event, or
        "all"), observations, mean_days, p50_days, p75_days, p90_days, p95_days.
    analytics_boris - period (of the request, or "all"), location_id (return location, or "all"),
        returns, units, value, online_order_returns, online_order_value, boris_returns, boris_units,
        boris_value, boris_share_of_returns, boris_share_of_online_returns, boris_share_of_value,
        boris_share_of_online_value.
    """
    as_of = resolve_as_of(inputs, as_of)
    cohort = _cohort(inputs, as_of, grace_days)
    received = _received_lines(inputs, as_of)
    limbo = _limbo_lines(received, as_of)
    return {
        "analytics_return_rates": pd.concat(
            [_return_rates(cohort, by, period, as_of) for by in DIMENSIONS], ignore_index=True
        ),
        "analytics_abnormal_items": pd.concat(
            [_abnormal_items(cohort, level, as_of, min_units, confidence) for level in ("style_id", "sku")],
            ignore_index=True,
        ),
        "analytics_size_curve": _size_curve(cohort, as_of),
        "analytics_fit_signals": _fit_signals(
            inputs, cohort, as_of, min_units, confidence, min_direction_events
        ),
        "analytics_limbo": _limbo_ageing(limbo, inputs.locations, as_of),
        "analytics_limbo_lines": limbo,
        "analytics_dispositions": _disposition_mix(received, as_of, period),
        "analytics_cycle_time": cycle_times(inputs, as_of, period),
        "analytics_boris": boris_share(inputs, as_of, period),
    }


_SQL_TYPES = {_S: Text, _B: Boolean, _I: BigInteger, _F: Double, _T: lambda: DateTime(timezone=True)}


def _table(name: str) -> Table:
    columns = [Column(column, _SQL_TYPES[dtype]()) for column, dtype in TABLES[name].items()]
    return Table(name, MetaData(), *columns)


def write_all(bind: Engine | Connection, tables: Mapping[str, pd.DataFrame]) -> None:
    """Replace the given analytics tables in the database, all in one transaction.

    Each table is dropped and re-created from `TABLES` (they are derived, not part of the migrations),
    then filled: PostgreSQL by COPY, SQLite by pandas. With a Connection already in a transaction the
    writes go into a savepoint of it (the caller commits).
    """
    unknown = [name for name in tables if name not in TABLES]
    if unknown:
        raise ValueError(f"not analytics tables: {', '.join(unknown)}")
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            _write_tables(connection, tables)
        return
    with bind.begin_nested() if bind.in_transaction() else bind.begin():
        _write_tables(bind, tables)


def _write_tables(connection: Connection, tables: Mapping[str, pd.DataFrame]) -> None:
    for name, frame in tables.items():
        assert name not in state_metadata.tables
        table = _table(name)
        table.drop(connection, checkfirst=True)
        table.create(connection)
        frame = frame[list(TABLES[name])]
        if frame.empty:
            continue
        if connection.dialect.name == "postgresql":
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S.%f%z")
            columns = ", ".join(TABLES[name])
            cursor = connection.connection.driver_connection.cursor()
            with cursor, cursor.copy(f"COPY {name} ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
                copy.write(buffer.getvalue())
        else:
            frame.to_sql(name, connection, if_exists="append", index=False, chunksize=50_000)


def read_table(bind: Engine | Connection, name: str) -> pd.DataFrame:
    """An analytics table as written by `write_all`, with its documented dtypes (for the dashboards)."""
    if name not in TABLES:
        raise ValueError(f"not an analytics table: {name}")
    if isinstance(bind, Engine):
        with bind.connect() as connection:
            return read_table(connection, name)
    columns = list(TABLES[name])
    result = bind.exec_driver_sql(f"SELECT {', '.join(columns)} FROM {name}")
    frame = pd.DataFrame(plain_rows(result), columns=columns)
    for column, dtype in TABLES[name].items():
        values = frame[column]
        if dtype == _T:
            frame[column] = pd.to_datetime(values, utc=True, format="ISO8601").dt.as_unit("us")
        elif dtype == _B:
            frame[column] = values.astype(bool)
        elif dtype == _S:
            frame[column] = values.astype("string")
        elif dtype == _I:
            frame[column] = values.astype("int64")
        else:
            frame[column] = pd.to_numeric(values).astype("float64")
    return frame
