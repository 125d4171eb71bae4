"""The data contract (DESIGN.md section 3): one declaration of every file, column, key and reference.

The importer validates against it, the exporter and the simulator write it; nothing else spells out
the column lists. Two columns extend the published contract: `products.description` (free text, e.g.
the UCI item description) and `orders.shipping_amount` (what the customer paid for delivery, needed to
refund shipping when the retailer is at fault).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from oms import enums

# CSV injection: a text cell a spreadsheet would evaluate (=, +, -, @, tab, carriage return first) is
# written with one more leading apostrophe, and read back without it. Texts already beginning with
# apostrophes before such a character get one more too, so the escape is undone exactly.
FORMULA_START = r"^(?='*[=+\-@\t\r])"
ESCAPED_FORMULA = r"^'(?='*[=+\-@\t\r])"

Kind = Literal["id", "text", "timestamp", "money", "signed_money", "count", "int", "bool", "enum"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    required: bool = False
    values: tuple[str, ...] = ()  # for kind "enum"
    default: str | None = None  # as it would be written in the file
    max_length: int = 64
    positive: bool = False  # for "count": > 0 (else >= 0)


@dataclass(frozen=True)
class Reference:
    """Columns of this file that must name a row of `table` (in this load or already in the database)."""

    columns: tuple[str, ...]
    table: str
    target: tuple[str, ...]


@dataclass(frozen=True)
class FileSpec:
    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    references: tuple[Reference, ...] = field(default=())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _id(name: str, required: bool = False) -> Column:
    return Column(name, "id", required=required)


def _enum(name: str, values: tuple[str, ...], required: bool = False) -> Column:
    return Column(name, "enum", required=required, values=values, max_length=24)


CUSTOMERS = FileSpec(
    "customers",
    (
        _id("customer_id", True),
        Column("created_at", "timestamp", required=True),
        Column("region", "text"),
        Column("loyalty_tier", "text"),
        Column("loyalty_points", "count", default="0"),
    ),
    key=("customer_id",),
)

LOCATIONS = FileSpec(
    "locations",
    (
        _id("location_id", True),
        _enum("kind", enums.LOCATION_KINDS, True),
        Column("region", "text"),
        Column("name", "text", max_length=200),
    ),
    key=("location_id",),
)

PRODUCTS = FileSpec(
    "products",
    (
        _id("sku", True),
        _id("style_id", True),
        Column("category", "text", required=True),
        Column("department", "text"),
        Column("brand", "text"),
        Column("size", "text"),
        Column("color", "text"),
        Column("list_price", "money", required=True),
        Column("unit_cost", "money"),
        Column("return_window_days", "count", default="30"),
        Column("returnable", "bool", default="true"),
        Column("description", "text", max_length=500),
    ),
    key=("sku",),
)

ORDERS = FileSpec(
    "orders",
    (
        _id("order_id", True),
        _id("customer_id"),
        _enum("channel", enums.ORDER_CHANNELS, True),
        _id("location_id"),
        Column("placed_at", "timestamp", required=True),
        _id("employee_id"),
        Column("ship_postcode", "text", max_length=16),
        Column("bill_postcode", "text", max_length=16),
        _id("device_id"),
        Column("currency", "text", max_length=3),
        Column("shipping_amount", "money", default="0"),
    ),
    key=("order_id",),
    references=(
        Reference(("customer_id",), "customers", ("customer_id",)),
        Reference(("location_id",), "locations", ("location_id",)),
    ),
)

ORDER_LINES = FileSpec(
    "order_lines",
    (
        _id("order_id", True),
        Column("line_no", "count", required=True, positive=True),
        _id("sku", True),
        Column("quantity", "count", required=True, positive=True),
        Column("unit_price", "money", required=True),
        Column("discount", "money", default="0"),
        _id("promotion_id"),
    ),
    key=("order_id", "line_no"),
    references=(
        Reference(("order_id",), "orders", ("order_id",)),
        Reference(("sku",), "products", ("sku",)),
    ),
)

PAYMENTS = FileSpec(
    "payments",
    (
        _id("order_id", True),
        _id("payment_id", True),
        _enum("method", enums.PAYMENT_METHODS, True),
        Column("amount", "money", required=True),
        _id("card_fingerprint"),
    ),
    key=("payment_id",),
    references=(Reference(("order_id",), "orders", ("order_id",)),),
)

RETURNS = FileSpec(
    "returns",
    (
        _id("return_id", True),
        _id("order_id"),
        _id("customer_id"),
        _enum("channel", enums.RETURN_CHANNELS, True),
        _id("location_id"),
        Column("requested_at", "timestamp", required=True),
        Column("received_at", "timestamp"),
        _id("employee_id"),
        _enum("status", enums.RETURN_STATUSES),
        _enum("refund_method", enums.REFUND_METHODS),
        Column("refunded_at", "timestamp"),
    ),
    key=("return_id",),
    references=(
        Reference(("order_id",), "orders", ("order_id",)),
        Reference(("customer_id",), "customers", ("customer_id",)),
        Reference(("location_id",), "locations", ("location_id",)),
    ),
)

RETURN_LINES = FileSpec(
    "return_lines",
    (
        _id("return_id", True),
        Column("line_no", "count", required=True, positive=True),
        Column("order_line_no", "count", positive=True),
        _id("sku", True),
        Column("quantity", "count", required=True, positive=True),
        _enum("reason", enums.RETURN_REASONS, True),
        _enum("condition", enums.CONDITIONS),
        _enum("disposition", enums.DISPOSITIONS),
        Column("refund_amount", "money"),
        Column("recovery_value", "signed_money"),
        Column("disposed_at", "timestamp"),
    ),
    key=("return_id", "line_no"),
    references=(
        Reference(("return_id",), "returns", ("return_id",)),
        Reference(("sku",), "products", ("sku",)),
        # (order_id of the return, order_line_no) -> order_lines is checked by the importer itself.
    ),
)

FRAUD_REVIEWS = FileSpec(
    "fraud_reviews",
    (
        _id("return_id", True),
        Column("reviewed_at", "timestamp", required=True),
        _enum("outcome", enums.REVIEW_OUTCOMES, True),
        Column("fraud_type", "text"),
        _enum("source", enums.REVIEW_SOURCES),
        Column("reviewer", "text", max_length=64),
        Column("note", "text", max_length=2000),
    ),
    key=("return_id", "reviewed_at"),
    references=(Reference(("return_id",), "returns", ("return_id",)),),
)

# In load order: every file comes after the files it references.
FILES: tuple[FileSpec, ...] = (
    CUSTOMERS,
    LOCATIONS,
    PRODUCTS,
    ORDERS,
    ORDER_LINES,
    PAYMENTS,
    RETURNS,
    RETURN_LINES,
    FRAUD_REVIEWS,
)
BY_TABLE = {spec.table: spec for spec in FILES}
SUFFIXES = (".csv", ".parquet")
