"""Test data: contract directories built from the hand-readable sample, and database fingerprints."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import Connection, select

from oms.tables import metadata
from simulator.sample import sample_tables, write_csv_tables


def sample_rows(**kwargs: int) -> dict[str, list[dict[str, str]]]:
    return sample_tables(**kwargs)


def write_tables(directory: Path, tables: dict[str, list[dict[str, str]]]) -> Path:
    return write_csv_tables(directory, tables)


def fingerprint(connection: Connection) -> dict[str, tuple[int, str]]:
    """Row count and a checksum of every table's content, in primary-key order."""
    result: dict[str, tuple[int, str]] = {}
    for table in metadata.sorted_tables:
        digest = hashlib.sha256()
        rows = connection.execute(select(table).order_by(*table.primary_key.columns)).all()
        for row in rows:
            digest.update(repr(tuple(row)).encode())
        result[table.name] = (len(rows), digest.hexdigest()[:16])
    return result


# --- a small, fully controlled retailer for lifecycle tests ---------------------------------------

NOW = "2025-03-15T12:00:00Z"


def lifecycle_tables() -> dict[str, list[dict[str, str]]]:
    """A store, a warehouse, a few products and orders placed days before NOW (2025-03-15 12:00 UTC).

    W-1001 is the worked example of docs/lifecycle.md: three lines bought online with a 20 % promotion, shipping
    4.95, paid 50.00 by gift card and 128.15 by card.
    """
    product = {
        "department": "general",
        "brand": "Acme",
        "color": "black",
        "return_window_days": "30",
        "returnable": "true",
    }
    return {
        "locations": [
            {"location_id": "S1", "kind": "store", "region": "north", "name": "Leeds"},
            {"location_id": "S2", "kind": "store", "region": "south", "name": "Brighton"},
            {"location_id": "W1", "kind": "warehouse", "region": "central", "name": "Warehouse"},
        ],
        "products": [
            {
                **product,
                "sku": "EARBUDS",
                "style_id": "EARBUDS",
                "category": "electronics",
                "size": "",
                "list_price": "129.00",
                "unit_cost": "70.00",
                "return_window_days": "14",
            },
            {
                **product,
                "sku": "TEE-M",
                "style_id": "TEE",
                "category": "apparel",
                "size": "M",
                "list_price": "25.00",
                "unit_cost": "8.00",
            },
            {
                **product,
                "sku": "TEE-L",
                "style_id": "TEE",
                "category": "apparel",
                "size": "L",
                "list_price": "25.00",
                "unit_cost": "8.00",
            },
            {
                **product,
                "sku": "HOODIE-M",
                "style_id": "HOODIE",
                "category": "apparel",
                "size": "M",
                "list_price": "45.00",
                "unit_cost": "15.00",
            },
            {
                **product,
                "sku": "MUG",
                "style_id": "MUG",
                "category": "home",
                "size": "",
                "list_price": "12.50",
                "unit_cost": "3.00",
            },
            {
                **product,
                "sku": "GIFT25",
                "style_id": "GIFT",
                "category": "gift_cards",
                "size": "",
                "list_price": "25.00",
                "unit_cost": "25.00",
                "returnable": "false",
            },
        ],
        "customers": [
            {
                "customer_id": "ALICE",
                "created_at": "2023-05-01T10:00:00Z",
                "region": "north",
                "loyalty_tier": "gold",
                "loyalty_points": "800",
            },
            {
                "customer_id": "BOB",
                "created_at": "2024-01-01T10:00:00Z",
                "region": "south",
                "loyalty_tier": "",
                "loyalty_points": "0",
            },
        ],
        "orders": [
            {
                "order_id": "W-1001",
                "customer_id": "ALICE",
                "channel": "web",
                "location_id": "W1",
                "placed_at": "2025-03-10T09:00:00Z",
                "device_id": "D1",
                "ship_postcode": "LS1 1AA",
                "currency": "GBP",
                "shipping_amount": "4.95",
            },
            {
                "order_id": "S-2001",
                "customer_id": "BOB",
                "channel": "store",
                "location_id": "S1",
                "placed_at": "2025-03-12T15:00:00Z",
                "employee_id": "E1",
                "currency": "GBP",
                "shipping_amount": "0",
            },
            {
                "order_id": "W-0900",
                "customer_id": "BOB",
                "channel": "web",
                "location_id": "W1",
                "placed_at": "2025-01-02T09:00:00Z",
                "currency": "GBP",
                "shipping_amount": "0",
            },
            {
                "order_id": "S-2002",
                "customer_id": "BOB",
                "channel": "store",
                "location_id": "S1",
                "placed_at": "2025-02-28T10:00:00Z",
                "currency": "GBP",
                "shipping_amount": "0",
            },
        ],
        "order_lines": [
            {
                "order_id": "W-1001",
                "line_no": "1",
                "sku": "EARBUDS",
                "quantity": "1",
                "unit_price": "129.00",
                "discount": "25.80",
                "promotion_id": "SPRING20",
            },
            {
                "order_id": "W-1001",
                "line_no": "2",
                "sku": "TEE-M",
                "quantity": "2",
                "unit_price": "25.00",
                "discount": "10.00",
                "promotion_id": "SPRING20",
            },
            {
                "order_id": "W-1001",
                "line_no": "3",
                "sku": "MUG",
                "quantity": "3",
                "unit_price": "12.50",
                "discount": "7.50",
                "promotion_id": "SPRING20",
            },
            {
                "order_id": "S-2001",
                "line_no": "1",
                "sku": "TEE-M",
                "quantity": "3",
                "unit_price": "25.00",
                "discount": "0.00",
                "promotion_id": "",
            },
            {
                "order_id": "S-2001",
                "line_no": "2",
                "sku": "GIFT25",
                "quantity": "1",
                "unit_price": "25.00",
                "discount": "0.00",
                "promotion_id": "",
            },
            {
                "order_id": "W-0900",
                "line_no": "1",
                "sku": "MUG",
                "quantity": "1",
                "unit_price": "12.50",
                "discount": "0.00",
                "promotion_id": "",
            },
            {
                "order_id": "S-2002",
                "line_no": "1",
                "sku": "EARBUDS",
                "quantity": "1",
                "unit_price": "129.00",
                "discount": "0.00",
                "promotion_id": "",
            },
        ],
        "payments": [
            {
                "order_id": "W-1001",
                "payment_id": "W-1001-GC",
                "method": "gift_card",
                "amount": "50.00",
                "card_fingerprint": "",
            },
            {
                "order_id": "W-1001",
                "payment_id": "W-1001-CARD",
                "method": "card",
                "amount": "128.15",
                "card_fingerprint": "fpA",
            },
            {
                "order_id": "S-2001",
                "payment_id": "S-2001-CASH",
                "method": "cash",
                "amount": "100.00",
                "card_fingerprint": "",
            },
            {
                "order_id": "W-0900",
                "payment_id": "W-0900-CARD",
                "method": "card",
                "amount": "12.50",
                "card_fingerprint": "fpB",
            },
            {
                "order_id": "S-2002",
                "payment_id": "S-2002-CARD",
                "method": "card",
                "amount": "129.00",
                "card_fingerprint": "fpB",
            },
        ],
    }


def load_lifecycle_world(connection_or_engine, directory: Path) -> None:
    from oms.importer import import_directory

    import_directory(write_tables(directory, lifecycle_tables()), connection_or_engine)
