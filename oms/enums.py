"""Closed vocabularies of the data contract (DESIGN.md section 3) and the return lifecycle."""

from __future__ import annotations

LOCATION_KINDS = ("store", "warehouse", "returns_center", "dc")
ORDER_CHANNELS = ("web", "app", "store", "marketplace", "phone")
PAYMENT_METHODS = ("card", "gift_card", "store_credit", "cash", "loyalty_points", "paypal", "other")
RETURN_CHANNELS = ("store", "web", "app", "mail")
RETURN_STATUSES = (
    "requested",
    "authorized",
    "pending_review",
    "rejected",
    "received",
    "awaiting_payment",
    "inspected",
    "completed",
    "cancelled",
    "expired",
)
# statuses of a return that no longer holds its units (they can be returned again)
CLOSED_STATUSES = ("rejected", "cancelled", "expired")
# statuses of a return whose refund is still to come: a fraud or abuse decision holds it
REFUND_TO_COME = ("requested", "authorized", "received", "awaiting_payment", "inspected")
REFUND_METHODS = ("original_tender", "store_credit", "exchange", "cash")
RETURN_REASONS = (
    "changed_mind",
    "doesnt_fit",
    "defective",
    "damaged_in_transit",
    "not_as_described",
    "wrong_item",
    "arrived_late",
    "other",
)
CONDITIONS = ("new", "open_box", "used", "damaged", "defective", "wrong_item", "empty_box")
DISPOSITIONS = ("restock", "open_box", "refurbish", "liquidate", "return_to_vendor", "donate", "recycle")
REVIEW_OUTCOMES = ("fraud", "abuse", "legitimate")
FRAUD_OUTCOMES = ("fraud", "abuse")  # the outcomes that are losses: labels 1, refunds held
# what a fraud or abuse decision says happened (the data contract's `fraud_reviews.fraud_type`)
FRAUD_TYPES = (
    "wardrobing",
    "serial_abuse",
    "receiptless_stolen",
    "empty_box",
    "item_switching",
    "sweethearting",
    "ring",
    "other",
)
REVIEW_SOURCES = ("rule_flag", "model_flag", "random_audit", "chargeback", "other")
# the sources of an analyst's decision (one per return); a chargeback or another later label is not one
ANALYST_SOURCES = ("rule_flag", "model_flag", "random_audit")

# Inventory buckets of the movements ledger: stock in a bucket is the sum of its movements.
INVENTORY_BUCKETS = ("sellable", "returns_pending", "refurbishment", "reserved", "disposed")
NOTIFICATION_KINDS = (
    "return_authorized",
    "return_received",
    "refund_issued",
    "return_rejected",
    "return_pending_review",
    "exchange_created",
    "return_completed",
)
NOTIFICATION_STATES = ("pending", "delivered", "failed")
DECISIONS = ("approve", "review", "deny")
