"""A small, hand-readable retailer in the data contract: a few stores, products, orders and returns.

Used by the import tests (which break it in many ways) and as a quick smoke dataset. The realistic
synthetic retailer with planted fraud lives in `simulator.retailer`.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from pathlib import Path

from oms import contract

START = dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.UTC)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sample_tables(
    customers: int = 20, orders: int = 60, seed: int = 7, id_prefix: str = ""
) -> dict[str, list[dict[str, str]]]:
    """Rows per contract table (all values as the text a CSV would hold).

    `id_prefix` namespaces customer, order, payment and return ids so that two samples can coexist.
    """
    rng = random.Random(seed)
    tables: dict[str, list[dict[str, str]]] = {spec.table: [] for spec in contract.FILES}
    tables["locations"] = [
        {"location_id": "S1", "kind": "store", "region": "north", "name": "Leeds Briggate"},
        {"location_id": "S2", "kind": "store", "region": "south", "name": "Brighton North Laine"},
        {"location_id": "W1", "kind": "warehouse", "region": "central", "name": "Daventry DC"},
        {"location_id": "RC", "kind": "returns_center", "region": "central", "name": "Returns centre"},
    ]
    catalogue = [
        ("TSHIRT", "apparel", "19.99", "6.00", ["S", "M", "L"], 30),
        ("JEANS", "apparel", "59.00", "18.50", ["30", "32", "34"], 30),
        ("RUNNER", "shoes", "89.95", "31.00", ["8", "9", "10"], 30),
        ("KETTLE", "home", "34.50", "12.10", [""], 30),
        ("EARBUDS", "electronics", "129.00", "70.00", [""], 14),
        ("GIFTCARD", "gift_cards", "25.00", "25.00", [""], 0),
    ]
    for style, category, price, cost, sizes, window in catalogue:
        for size in sizes:
            tables["products"].append(
                {
                    "sku": f"{style}-{size}" if size else style,
                    "style_id": style,
                    "category": category,
                    "department": "fashion" if category in ("apparel", "shoes") else "general",
                    "brand": "Acme",
                    "size": size,
                    "color": "black",
                    "list_price": price,
                    "unit_cost": cost,
                    "return_window_days": str(window),
                    "returnable": "false" if category == "gift_cards" else "true",
                    "description": f"{style.title()} {size}".strip(),
                }
            )
    for number in range(1, customers + 1):
        tables["customers"].append(
            {
                "customer_id": f"{id_prefix}C{number:04d}",
                "created_at": _iso(START - dt.timedelta(days=rng.randint(30, 900))),
                "region": rng.choice(["north", "south", "central"]),
                "loyalty_tier": rng.choice(["", "silver", "gold"]),
                "loyalty_points": str(rng.randint(0, 5000)),
            }
        )
    skus = [p for p in tables["products"] if p["returnable"] == "true"]
    return_no = 0
    for number in range(1, orders + 1):
        order_id = f"{id_prefix}O{number:05d}"
        channel = rng.choice(["web", "web", "app", "store"])
        placed = START + dt.timedelta(days=rng.randint(0, 150), minutes=rng.randint(0, 600))
        customer = rng.choice(tables["customers"])["customer_id"] if rng.random() > 0.1 else ""
        tables["orders"].append(
            {
                "order_id": order_id,
                "customer_id": customer,
                "channel": channel,
                "location_id": rng.choice(["S1", "S2"]) if channel == "store" else "W1",
                "placed_at": _iso(placed),
                "employee_id": f"E{rng.randint(1, 4)}" if channel == "store" else "",
                "ship_postcode": "" if channel == "store" else f"LS{rng.randint(1, 9)} 1AA",
                "bill_postcode": f"LS{rng.randint(1, 9)} 1AA",
                "device_id": "" if channel == "store" else f"D{rng.randint(1, 30):03d}",
                "currency": "GBP",
                "shipping_amount": "" if channel == "store" else "3.95",
            }
        )
        total = 0
        lines = rng.sample(skus, rng.randint(1, 3))
        for line_no, product in enumerate(lines, start=1):
            quantity = rng.randint(1, 2)
            price_cents = int(product["list_price"].replace(".", ""))
            discount_cents = (price_cents * quantity) // 10 if rng.random() < 0.3 else 0
            total += price_cents * quantity - discount_cents
            tables["order_lines"].append(
                {
                    "order_id": order_id,
                    "line_no": str(line_no),
                    "sku": product["sku"],
                    "quantity": str(quantity),
                    "unit_price": product["list_price"],
                    "discount": f"{discount_cents / 100:.2f}",
                    "promotion_id": "SPRING10" if discount_cents else "",
                }
            )
        if channel != "store":
            total += 395
        gift = min(total, 2500) if rng.random() < 0.2 else 0
        if gift:
            tables["payments"].append(
                {
                    "order_id": order_id,
                    "payment_id": f"{id_prefix}P{number:05d}-G",
                    "method": "gift_card",
                    "amount": f"{gift / 100:.2f}",
                    "card_fingerprint": "",
                }
            )
        if total - gift:
            tables["payments"].append(
                {
                    "order_id": order_id,
                    "payment_id": f"{id_prefix}P{number:05d}-C",
                    "method": "card",
                    "amount": f"{(total - gift) / 100:.2f}",
                    "card_fingerprint": f"fp{rng.randint(1, 25):03d}",
                }
            )
        if rng.random() < 0.35:
            return_no += 1
            return_id = f"{id_prefix}R{return_no:05d}"
            requested = placed + dt.timedelta(days=rng.randint(1, 20), hours=rng.randint(0, 8))
            in_store = rng.random() < 0.5
            received = requested if in_store else requested + dt.timedelta(days=rng.randint(2, 6))
            tables["returns"].append(
                {
                    "return_id": return_id,
                    "order_id": order_id,
                    "customer_id": customer,
                    "channel": "store" if in_store else "mail",
                    "location_id": rng.choice(["S1", "S2"]) if in_store else "RC",
                    "requested_at": _iso(requested),
                    "received_at": _iso(received),
                    "employee_id": f"E{rng.randint(1, 4)}" if in_store else "",
                    "status": "completed",
                    "refund_method": "original_tender",
                }
            )
            returned = tables["order_lines"][-len(lines) :][0]
            # one unit at the price paid for it (the line's discount shared over its units)
            paid_cents = int(returned["unit_price"].replace(".", "")) * int(returned["quantity"])
            paid_cents -= int(returned["discount"].replace(".", ""))
            unit_paid = f"{paid_cents // int(returned['quantity']) / 100:.2f}"
            tables["return_lines"].append(
                {
                    "return_id": return_id,
                    "line_no": "1",
                    "order_line_no": returned["line_no"],
                    "sku": returned["sku"],
                    "quantity": "1",
                    "reason": rng.choice(["doesnt_fit", "changed_mind", "defective"]),
                    "condition": rng.choice(["new", "open_box", "used"]),
                    "disposition": "restock",
                    "refund_amount": unit_paid,
                    "recovery_value": f"{float(unit_paid) * 0.8:.2f}",
                }
            )
            if rng.random() < 0.3:
                tables["fraud_reviews"].append(
                    {
                        "return_id": return_id,
                        "reviewed_at": _iso(requested + dt.timedelta(days=3)),
                        "outcome": rng.choice(["legitimate", "legitimate", "abuse"]),
                        "fraud_type": "",
                        "source": "random_audit",
                        "reviewer": "analyst1",
                        "note": "",
                    }
                )
    return tables


def write_csv_tables(directory: Path, tables: dict[str, list[dict[str, str]]]) -> Path:
    """Write rows as contract CSV files (tables without rows are left out)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for spec in contract.FILES:
        rows = tables.get(spec.table) or []
        if not rows:
            continue
        with open(directory / f"{spec.table}.csv", "w", newline="", encoding="utf-8") as handle:
            names = list(dict.fromkeys(name for row in rows for name in row))
            writer = csv.DictWriter(handle, fieldnames=names, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return directory


def write_sample(directory: Path, **kwargs: int) -> Path:
    return write_csv_tables(directory, sample_tables(**kwargs))
