"""The core state tables (SQLAlchemy 2, `Mapped[...]` style).

The first block mirrors the data contract of DESIGN.md section 3 column for column; the second holds
what the return lifecycle writes (events, refunds, ledgers, outbox, scores, API keys). Money is
`Numeric(12,2)` <-> `Decimal`; every timestamp is UTC. Migrations in `oms/migrations/` must match this
module exactly (a test runs Alembic's autogenerate against both backends).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from oms import enums
from oms.types import Money, UTCDateTime

# Identifiers are opaque: on PostgreSQL they compare bytewise (collation "C"), which also makes their
# indexes several times cheaper to build and search than under a linguistic collation.
ID = String(64).with_variant(String(64, collation="C"), "postgresql")
# Postcodes link accounts (same delivery address): compared like identifiers.
POSTCODE = String(16).with_variant(String(16, collation="C"), "postgresql")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        dt.datetime: UTCDateTime(),
        Decimal: Money(),
        str: ID,
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


def one_of(column: str, values: tuple[str, ...], name: str | None = None) -> CheckConstraint:
    """A CHECK that `column` is NULL or one of `values` (portable: no native enum types)."""
    quoted = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=name or column)


# --- the data contract ---------------------------------------------------------------------------


class Customer(Base):
    __tablename__ = "customers"

    customer_id: Mapped[str] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime]
    region: Mapped[str | None]
    loyalty_tier: Mapped[str | None]
    loyalty_points: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (CheckConstraint("loyalty_points >= 0", name="loyalty_points_nonnegative"),)


class Location(Base):
    __tablename__ = "locations"

    location_id: Mapped[str] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    region: Mapped[str | None]
    name: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (one_of("kind", enums.LOCATION_KINDS),)


class Product(Base):
    __tablename__ = "products"

    sku: Mapped[str] = mapped_column(primary_key=True)
    style_id: Mapped[str] = mapped_column(index=True)
    category: Mapped[str]
    department: Mapped[str | None]
    brand: Mapped[str | None]
    size: Mapped[str | None]
    color: Mapped[str | None]
    list_price: Mapped[Decimal]
    unit_cost: Mapped[Decimal | None]
    return_window_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    returnable: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    description: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        CheckConstraint("list_price >= 0", name="list_price_nonnegative"),
        CheckConstraint("unit_cost >= 0", name="unit_cost_nonnegative"),
        CheckConstraint("return_window_days >= 0", name="return_window_nonnegative"),
    )


class Order(Base):
    __tablename__ = "orders"

    order_id: Mapped[str] = mapped_column(primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.customer_id"))
    channel: Mapped[str] = mapped_column(String(16))
    location_id: Mapped[str | None] = mapped_column(ForeignKey("locations.location_id"))
    placed_at: Mapped[dt.datetime]
    employee_id: Mapped[str | None]
    ship_postcode: Mapped[str | None] = mapped_column(POSTCODE)
    bill_postcode: Mapped[str | None] = mapped_column(POSTCODE)
    device_id: Mapped[str | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    shipping_amount: Mapped[Decimal] = mapped_column(default=Decimal("0.00"), server_default="0")

    __table_args__ = (
        one_of("channel", enums.ORDER_CHANNELS),
        CheckConstraint("shipping_amount >= 0", name="shipping_amount_nonnegative"),
        # covering indexes: the online features read a customer's orders, and the accounts sharing a
        # device or postcode, as index-only scans (no heap visit per order: the heavy customers' tail)
        Index(
            "ix_orders_customer_placed", "customer_id", "placed_at", "order_id", "device_id", "ship_postcode"
        ),
        Index("ix_orders_location_placed", "location_id", "placed_at"),
        Index("ix_orders_device", "device_id", "customer_id", "placed_at"),
        Index("ix_orders_ship_postcode", "ship_postcode", "customer_id", "placed_at"),
        Index("ix_orders_placed", "placed_at"),
    )


class OrderLine(Base):
    __tablename__ = "order_lines"

    order_id: Mapped[str] = mapped_column(ForeignKey("orders.order_id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sku: Mapped[str] = mapped_column(ForeignKey("products.sku"), index=True)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[Decimal]
    discount: Mapped[Decimal] = mapped_column(default=Decimal("0.00"), server_default="0")
    promotion_id: Mapped[str | None]

    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price >= 0", name="unit_price_nonnegative"),
        CheckConstraint("discount >= 0", name="discount_nonnegative"),
        CheckConstraint("discount <= unit_price * quantity", name="discount_within_line"),
        # the lines of a customer's orders as index-only scans (online features)
        Index("ix_order_lines_covering", "order_id", "line_no", "quantity", "unit_price", "discount"),
    )


class Payment(Base):
    __tablename__ = "payments"

    payment_id: Mapped[str] = mapped_column(primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.order_id"))
    method: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal]
    card_fingerprint: Mapped[str | None]

    __table_args__ = (
        # covering: an order's tenders and cards, and a card's orders, as index-only scans
        Index("ix_payments_order_id", "order_id", "method", "amount", "card_fingerprint"),
        Index("ix_payments_card_fingerprint", "card_fingerprint", "order_id"),
        one_of("method", enums.PAYMENT_METHODS),
        CheckConstraint("amount >= 0", name="amount_nonnegative"),
    )


class Return(Base):
    __tablename__ = "returns"

    return_id: Mapped[str] = mapped_column(primary_key=True)
    order_id: Mapped[str | None] = mapped_column(ForeignKey("orders.order_id"), index=True)
    customer_id: Mapped[str | None] = mapped_column(ForeignKey("customers.customer_id"))
    channel: Mapped[str] = mapped_column(String(16))
    location_id: Mapped[str | None] = mapped_column(ForeignKey("locations.location_id"))
    requested_at: Mapped[dt.datetime]
    received_at: Mapped[dt.datetime | None]
    employee_id: Mapped[str | None]
    status: Mapped[str] = mapped_column(String(16))
    refund_method: Mapped[str | None] = mapped_column(String(16))
    refunded_at: Mapped[dt.datetime | None]  # when the refund was issued (the lifecycle's, or imported)
    # Lifecycle bookkeeping, not part of the import contract.
    rma_number: Mapped[str | None] = mapped_column(String(32), unique=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    updated_at: Mapped[dt.datetime | None]
    decision: Mapped[str | None] = mapped_column(String(16))
    decision_reasons: Mapped[list[Any] | None]
    policy_version: Mapped[str | None] = mapped_column(String(32))

    # Optimistic lock: every change to a return checks and bumps `version` (StaleDataError otherwise).
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    __table_args__ = (
        one_of("channel", enums.RETURN_CHANNELS),
        one_of("status", enums.RETURN_STATUSES),
        one_of("refund_method", enums.REFUND_METHODS),
        one_of("decision", enums.DECISIONS),
        Index("ix_returns_customer_requested", "customer_id", "requested_at", "return_id", "location_id"),
        # the trailing columns let the store/employee window counts run as index-only scans
        Index("ix_returns_location_requested", "location_id", "requested_at", "order_id"),
        Index("ix_returns_employee_requested", "employee_id", "requested_at", "order_id", "refund_method"),
        Index("ix_returns_requested", "requested_at"),
        Index("ix_returns_status", "status"),
    )


class ReturnLine(Base):
    __tablename__ = "return_lines"

    return_id: Mapped[str] = mapped_column(ForeignKey("returns.return_id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # order_id repeats the header's so the database itself can enforce that the returned line exists.
    order_id: Mapped[str | None]
    order_line_no: Mapped[int | None] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(ForeignKey("products.sku"), index=True)
    quantity: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(24))
    condition: Mapped[str | None] = mapped_column(String(16))
    disposition: Mapped[str | None] = mapped_column(String(24))
    refund_amount: Mapped[Decimal | None]
    recovery_value: Mapped[Decimal | None]
    # Lifecycle bookkeeping, not part of the import contract.
    received_quantity: Mapped[int | None] = mapped_column(Integer)
    disposed_at: Mapped[dt.datetime | None]
    replacement_sku: Mapped[str | None] = mapped_column(ForeignKey("products.sku"))

    __table_args__ = (
        ForeignKeyConstraint(
            ["order_id", "order_line_no"],
            ["order_lines.order_id", "order_lines.line_no"],
            name="fk_return_lines_order_line",
        ),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("refund_amount >= 0", name="refund_amount_nonnegative"),
        CheckConstraint("(order_line_no IS NULL) OR (order_id IS NOT NULL)", name="order_line_needs_order"),
        one_of("reason", enums.RETURN_REASONS),
        one_of("condition", enums.CONDITIONS),
        one_of("disposition", enums.DISPOSITIONS),
        Index("ix_return_lines_order_line", "order_id", "order_line_no"),
        # a customer's return lines as index-only scans (online features)
        Index(
            "ix_return_lines_covering",
            "return_id",
            "line_no",
            "order_id",
            "order_line_no",
            "sku",
            "quantity",
            "reason",
        ),
    )


class FraudReview(Base):
    __tablename__ = "fraud_reviews"

    review_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    return_id: Mapped[str] = mapped_column(ForeignKey("returns.return_id"))
    reviewed_at: Mapped[dt.datetime]
    outcome: Mapped[str] = mapped_column(String(16))
    fraud_type: Mapped[str | None]
    source: Mapped[str | None] = mapped_column(String(16))
    reviewer: Mapped[str | None]
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("return_id", "reviewed_at", name="uq_fraud_reviews_return_reviewed"),
        one_of("outcome", enums.REVIEW_OUTCOMES),
        one_of("source", enums.REVIEW_SOURCES),
        Index("ix_fraud_reviews_reviewed", "reviewed_at"),
    )


# --- what the lifecycle writes ------------------------------------------------------------------

SERIAL = BigInteger().with_variant(Integer, "sqlite")


class ReturnEvent(Base):
    """Append-only history of a return: every transition and side effect, in order."""

    __tablename__ = "return_events"

    event_id: Mapped[int] = mapped_column(SERIAL, primary_key=True)
    return_id: Mapped[str] = mapped_column(ForeignKey("returns.return_id"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (UniqueConstraint("return_id", "seq", name="uq_return_events_return_seq"),)


class Refund(Base):
    __tablename__ = "refunds"

    refund_id: Mapped[str] = mapped_column(primary_key=True)
    return_id: Mapped[str] = mapped_column(ForeignKey("returns.return_id"), index=True)
    created_at: Mapped[dt.datetime]
    method: Mapped[str] = mapped_column(String(16))
    merchandise_amount: Mapped[Decimal]
    shipping_amount: Mapped[Decimal] = mapped_column(default=Decimal("0.00"), server_default="0")
    restocking_fee: Mapped[Decimal] = mapped_column(default=Decimal("0.00"), server_default="0")
    amount: Mapped[Decimal]

    __table_args__ = (
        one_of("method", enums.REFUND_METHODS),
        CheckConstraint("merchandise_amount >= 0", name="merchandise_amount_nonnegative"),
        CheckConstraint("shipping_amount >= 0", name="shipping_amount_nonnegative"),
        CheckConstraint("restocking_fee >= 0", name="restocking_fee_nonnegative"),
        CheckConstraint("amount >= 0", name="amount_nonnegative"),
    )


class ExchangePayment(Base):
    """What the customer paid at the till for exchanges dearer than what they returned (one per return:
    it settles every line's difference at once)."""

    __tablename__ = "exchange_payments"

    return_id: Mapped[str] = mapped_column(ForeignKey("returns.return_id"), primary_key=True)
    paid_at: Mapped[dt.datetime]
    method: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal]
    reference: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        one_of("method", enums.PAYMENT_METHODS),
        CheckConstraint("amount > 0", name="amount_positive"),
    )


class RefundAllocation(Base):
    """The part of a refund paid back to one tender (or issued as new store credit)."""

    __tablename__ = "refund_allocations"

    allocation_id: Mapped[int] = mapped_column(SERIAL, primary_key=True)
    refund_id: Mapped[str] = mapped_column(ForeignKey("refunds.refund_id"), index=True)
    payment_id: Mapped[str | None] = mapped_column(ForeignKey("payments.payment_id"), index=True)
    method: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal]

    __table_args__ = (
        one_of("method", enums.PAYMENT_METHODS),
        CheckConstraint("amount > 0", name="amount_positive"),
    )


class LoyaltyLedger(Base):
    __tablename__ = "loyalty_ledger"

    entry_id: Mapped[int] = mapped_column(SERIAL, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.customer_id"))
    at: Mapped[dt.datetime]
    points: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    order_id: Mapped[str | None] = mapped_column(ForeignKey("orders.order_id"))
    return_id: Mapped[str | None] = mapped_column(ForeignKey("returns.return_id"))

    __table_args__ = (Index("ix_loyalty_ledger_customer_at", "customer_id", "at"),)


class InventoryMovement(Base):
    """One change of stock; the stock of (location, sku, bucket) is the sum of its movements."""

    __tablename__ = "inventory_movements"

    movement_id: Mapped[int] = mapped_column(SERIAL, primary_key=True)
    at: Mapped[dt.datetime]
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.location_id"))
    sku: Mapped[str] = mapped_column(ForeignKey("products.sku"))
    bucket: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(32))
    return_id: Mapped[str | None] = mapped_column(ForeignKey("returns.return_id"), index=True)
    return_line_no: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        one_of("bucket", enums.INVENTORY_BUCKETS),
        CheckConstraint("quantity <> 0", name="quantity_nonzero"),
        Index("ix_inventory_movements_location_sku", "location_id", "sku", "bucket"),
    )


class NotificationOutbox(Base):
    """Customer-visible events waiting for (or done with) delivery; written with their transition."""

    __tablename__ = "notifications_outbox"

    event_id: Mapped[str] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime]
    return_id: Mapped[str] = mapped_column(ForeignKey("returns.return_id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[dt.datetime]
    delivered_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        one_of("kind", enums.NOTIFICATION_KINDS),
        one_of("state", enums.NOTIFICATION_STATES),
        Index("ix_notifications_outbox_due", "state", "next_attempt_at"),
    )


class ReturnScore(Base):
    __tablename__ = "return_scores"

    score_id: Mapped[int] = mapped_column(SERIAL, primary_key=True)
    return_id: Mapped[str] = mapped_column(ForeignKey("returns.return_id"))
    model_name: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(32))
    scored_at: Mapped[dt.datetime]
    score: Mapped[float]
    band: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str | None] = mapped_column(String(16))
    reasons: Mapped[list[Any]] = mapped_column(default=list)

    __table_args__ = (
        UniqueConstraint("return_id", "model_name", "model_version", name="uq_return_scores_return_model"),
        Index("ix_return_scores_model_score", "model_name", "model_version", "score"),
    )


class Exchange(Base):
    """A replacement item for a returned line: reserved from stock, with the price difference settled."""

    __tablename__ = "exchanges"

    return_id: Mapped[str] = mapped_column(primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    replacement_sku: Mapped[str] = mapped_column(ForeignKey("products.sku"))
    location_id: Mapped[str] = mapped_column(ForeignKey("locations.location_id"))
    quantity: Mapped[int] = mapped_column(Integer)
    even: Mapped[bool] = mapped_column(Boolean)
    # positive: the customer pays the difference; negative: it is refunded
    price_difference: Mapped[Decimal]
    created_at: Mapped[dt.datetime]

    __table_args__ = (
        ForeignKeyConstraint(
            ["return_id", "line_no"],
            ["return_lines.return_id", "return_lines.line_no"],
            name="fk_exchanges_return_line",
        ),
        CheckConstraint("quantity > 0", name="quantity_positive"),
    )


class IdempotencyKey(Base):
    """The stored response of a POST made with an Idempotency-Key, per API key."""

    __tablename__ = "idempotency_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime]


class ProductStats(Base):
    """Daily snapshots of units sold and returned per sku, style and category (cumulative, as of 00:00
    UTC of `day`), written by the feature pipeline so that serving reads one row per product."""

    __tablename__ = "product_stats"

    level: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # days since 1970-01-01
    sold_units: Mapped[int] = mapped_column(BigInteger)
    returned_units: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (one_of("level", ("sku", "style", "category")),)


class LocationStats(Base):
    """Daily snapshots of returns (all and receiptless) and orders per location (cumulative, as of
    `as_of` = 00:00 UTC of `day`). Serving adds the rows after `as_of` to the latest snapshot, so a
    30-day window at a busy returns centre reads two snapshot rows and two partial days instead of
    thousands of rows, and stays exact however old the snapshot is."""

    __tablename__ = "location_stats"

    location_id: Mapped[str] = mapped_column(primary_key=True)
    day: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # days since 1970-01-01
    as_of: Mapped[dt.datetime]
    returns: Mapped[int] = mapped_column(BigInteger)
    receiptless: Mapped[int] = mapped_column(BigInteger)
    orders: Mapped[int] = mapped_column(BigInteger)


class ServingLog(Base):
    """Every score the API served: its feature vector, model version, score and latency (for skew checks)."""

    __tablename__ = "serving_log"

    serving_id: Mapped[int] = mapped_column(SERIAL, primary_key=True)
    served_at: Mapped[dt.datetime]
    requested_at: Mapped[dt.datetime]
    return_id: Mapped[str | None] = mapped_column(index=True)
    model_version: Mapped[str | None] = mapped_column(String(32))
    score: Mapped[float | None]
    decision: Mapped[str | None] = mapped_column(String(16))
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)
    latency_ms: Mapped[float]
    features: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (Index("ix_serving_log_served", "served_at"),)


class ApiKey(Base):
    """An API key: only a hash of the secret is kept; the key id is the public prefix."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


metadata = Base.metadata
