"""The feature catalogue: every feature declared once (name, dtype, entity, window, description).

Feature sets are versioned: a model records the set it was trained on (`FRAUD_FEATURES_V1`,
`LINE_FEATURES_V1`) and serving computes exactly that list. Changing what a feature means requires a new
set version. The computation lives in `features.engine` and is shared by the offline batch and the
online request path; the declaration here is what both are checked against.

Point in time: a return at time t sees only events strictly before t (orders placed, earlier returns
requested, reviews decided); product, style and category rates are daily snapshots as of 00:00 UTC of
t's day (so serving reads one indexed row instead of scanning a popular style's history).
"""

from __future__ import annotations

from dataclasses import dataclass

DAY_US = 86_400_000_000


@dataclass(frozen=True)
class Feature:
    name: str
    dtype: str  # "float" | "int" | "category"
    entity: str  # what it describes: request, customer, store, employee, product, line
    description: str
    window_days: int | None = None

    @property
    def is_count(self) -> bool:
        return self.dtype == "int"


def _f(name: str, dtype: str, entity: str, description: str, window: int | None = None) -> Feature:
    return Feature(name, dtype, entity, description, window)


REQUEST = [
    _f("receiptless", "int", "request", "1 if the return has no order (no proof of purchase)"),
    _f("return_channel_store", "int", "request", "1 if returned at a store counter"),
    _f("return_channel_mail", "int", "request", "1 if returned by mail"),
    _f("return_channel_online", "int", "request", "1 if requested on the web or app"),
    _f("cross_channel", "int", "request", "1 if bought online and returned in a store (BORIS)"),
    _f("refund_cash", "int", "request", "1 if the refund is asked in cash"),
    _f("refund_store_credit", "int", "request", "1 if the refund is asked as store credit"),
    _f("refund_exchange", "int", "request", "1 if an exchange is asked"),
    _f("has_employee", "int", "request", "1 if an employee processes the return"),
    _f("days_since_purchase", "float", "request", "days from the order to the return (empty if receiptless)"),
    _f("days_left_in_window", "float", "request", "return window left at the request, least over the lines"),
    _f("return_units", "int", "request", "units asked back"),
    _f("return_lines", "int", "request", "lines asked back"),
    _f("return_value", "float", "request", "price paid for the units asked back (list price if receiptless)"),
    _f("return_share_of_order", "float", "request", "returned value / the order's merchandise value"),
    _f("order_value", "float", "request", "merchandise value of the order"),
    _f("order_units", "int", "request", "units in the order"),
    _f("order_lines", "int", "request", "lines in the order"),
    _f("order_online", "int", "request", "1 if the order was placed on web, app or marketplace"),
    _f("promo_share", "float", "request", "share of the returned value bought with a promotion"),
    _f("gift_card_share", "float", "request", "share of the order paid by gift card"),
    _f("cash_share", "float", "request", "share of the order paid in cash"),
    _f("tender_count", "int", "request", "number of tenders that paid the order"),
    _f("reason_changed_mind_share", "float", "request", "share of returned lines: changed mind"),
    _f("reason_doesnt_fit_share", "float", "request", "share of returned lines: doesn't fit"),
    _f("reason_defective_share", "float", "request", "share of returned lines: defective"),
    _f("reason_not_as_described_share", "float", "request", "share of returned lines: not as described"),
    _f("reason_damaged_share", "float", "request", "share of returned lines: damaged in transit"),
    _f("reason_wrong_item_share", "float", "request", "share of returned lines: wrong item"),
    _f(
        "bracketing_lines",
        "int",
        "request",
        "returned lines whose style was bought in several sizes in the order",
    ),
    _f("max_unit_price", "float", "request", "highest unit price among the returned items"),
    _f("electronics_share", "float", "request", "share of the returned value that is electronics"),
    _f("apparel_share", "float", "request", "share of the returned value that is apparel or shoes"),
    _f("customer_known", "int", "request", "1 if the return is tied to a customer account"),
    _f("customer_tenure_days", "float", "request", "days since the customer's account was created"),
]

CUSTOMER = [
    *[
        _f(f"cust_orders_{w}d", "int", "customer", f"orders placed in the previous {w} days", w)
        for w in (30, 90, 365)
    ],
    *[
        _f(f"cust_spend_{w}d", "float", "customer", f"merchandise bought in the previous {w} days", w)
        for w in (30, 90, 365)
    ],
    *[
        _f(f"cust_returns_{w}d", "int", "customer", f"returns requested in the previous {w} days", w)
        for w in (30, 90, 365)
    ],
    *[
        _f(f"cust_return_value_{w}d", "float", "customer", f"value asked back in the previous {w} days", w)
        for w in (30, 90, 365)
    ],
    _f(
        "cust_return_rate_units_365d",
        "float",
        "customer",
        "units returned / units bought, previous 365 days",
        365,
    ),
    _f(
        "cust_return_rate_value_365d",
        "float",
        "customer",
        "value returned / value bought, previous 365 days",
        365,
    ),
    _f(
        "cust_receiptless_returns_365d",
        "int",
        "customer",
        "receiptless returns in the previous 365 days",
        365,
    ),
    _f(
        "cust_return_locations_30d",
        "int",
        "customer",
        "distinct locations returned to in the previous 30 days",
        30,
    ),
    _f(
        "cust_days_since_last_return",
        "float",
        "customer",
        "days since the customer's previous return (empty if none)",
    ),
    _f(
        "cust_changed_mind_share_365d",
        "float",
        "customer",
        "share of returned lines with reason changed mind, 365 days",
        365,
    ),
    _f(
        "cust_prior_reviews",
        "int",
        "customer",
        "loss-prevention reviews of the customer's returns decided before t",
    ),
    _f("cust_prior_fraud", "int", "customer", "of those, decided fraud or abuse"),
    _f(
        "cust_linked_accounts",
        "int",
        "customer",
        "other accounts sharing a card, device or delivery postcode (used before t)",
    ),
    _f("cust_linked_fraud", "int", "customer", "linked accounts with a fraud or abuse decision before t"),
]

STORE = [
    _f("store_returns_30d", "int", "store", "returns requested at this location in the previous 30 days", 30),
    _f("store_receiptless_share_30d", "float", "store", "share of them without receipt", 30),
    _f("store_return_rate_30d", "float", "store", "returns / orders at this location, previous 30 days", 30),
]

EMPLOYEE = [
    _f(
        "emp_returns_30d", "int", "employee", "returns processed by this employee in the previous 30 days", 30
    ),
    _f("emp_receiptless_share_30d", "float", "employee", "share of them without receipt", 30),
    _f("emp_cash_share_30d", "float", "employee", "share of them refunded in cash", 30),
]

PRODUCT = [
    _f(
        "sku_return_rate",
        "float",
        "product",
        "returned / sold units of the sku, smoothed toward its category (max over lines)",
    ),
    _f("style_return_rate", "float", "product", "same for the style (max over lines)"),
    _f("category_return_rate", "float", "product", "returned / sold units of the category (max over lines)"),
    _f("style_rate_lift", "float", "product", "style rate / category rate (max over lines)"),
]

FRAUD_FEATURES_V1: tuple[Feature, ...] = (*REQUEST, *CUSTOMER, *STORE, *EMPLOYEE, *PRODUCT)
# request features computed from the return's order: missing (NaN) on a receiptless return
ORDER_FEATURES = frozenset(
    {
        "days_since_purchase",
        "days_left_in_window",
        "return_share_of_order",
        "order_value",
        "order_units",
        "order_lines",
        "gift_card_share",
        "cash_share",
        "tender_count",
    }
)

FRAUD_FEATURE_SET = "FRAUD_FEATURES_V1"

LINE_FEATURES_V1: tuple[Feature, ...] = (
    _f("category", "category", "line", "product category"),
    _f("brand", "category", "line", "brand"),
    _f("condition", "category", "line", "condition found at inspection"),
    _f("reason", "category", "line", "return reason"),
    _f("location_kind", "category", "line", "store, warehouse, returns centre or DC receiving it"),
    _f("quantity", "int", "line", "units"),
    _f("unit_price", "float", "line", "price paid per unit (list price if receiptless)"),
    _f("list_price", "float", "line", "list price"),
    _f("unit_cost", "float", "line", "unit cost"),
    _f("days_since_purchase", "float", "line", "days from the order to the return request"),
    _f("receiptless", "int", "line", "1 if returned without receipt"),
    _f("style_return_rate", "float", "line", "the style's return rate as of the request day, smoothed"),
)
LINE_FEATURE_SET = "LINE_FEATURES_V1"

SMOOTHING_UNITS = 20.0  # pseudo-units of the category rate added to each sku/style rate

FEATURE_SETS = {FRAUD_FEATURE_SET: FRAUD_FEATURES_V1, LINE_FEATURE_SET: LINE_FEATURES_V1}


def names(features: tuple[Feature, ...]) -> list[str]:
    return [f.name for f in features]
