"""Import throughput and peak memory for a data-contract directory with >= 1M order lines.

    python benchmarks/import_speed.py                      # generate 1M order lines, both backends
    python benchmarks/import_speed.py --dir DIR            # take an existing directory (e.g. from the simulator)
    python benchmarks/import_speed.py --backends postgresql --postgres-url postgresql://...

Each import runs in a fresh process into a fresh database, so the peak RSS printed is the import's own.
Targets on a 2-core machine: >= 200,000 rows/s into PostgreSQL, >= 50,000 rows/s into SQLite,
peak memory < 2 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fresh_postgres, peak_mib  # noqa: E402


def generate(directory: Path, order_lines: int, seed: int = 1) -> None:
    """A plain but realistic-shaped contract directory, written vectorised (a few seconds for 1M lines)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    n_orders = -(-order_lines // 3)
    n_customers, n_skus = max(n_orders // 6, 10), 5_000
    customer_ids = np.char.add("C", np.arange(n_customers).astype(str))
    pd.DataFrame(
        {
            "customer_id": customer_ids,
            "created_at": "2022-01-01T00:00:00Z",
            "region": rng.choice(["north", "south", "east", "west"], n_customers),
            "loyalty_tier": rng.choice(["", "silver", "gold"], n_customers),
            "loyalty_points": rng.integers(0, 5000, n_customers),
        }
    ).to_csv(directory / "customers.csv", index=False)
    stores = [f"S{i}" for i in range(40)]
    pd.DataFrame(
        {"location_id": [*stores, "W1", "RC"], "kind": ["store"] * 40 + ["warehouse", "returns_center"]}
    ).to_csv(directory / "locations.csv", index=False)
    skus = np.char.add("K", np.arange(n_skus).astype(str))
    prices = rng.integers(200, 20000, n_skus) / 100
    pd.DataFrame(
        {
            "sku": skus,
            "style_id": np.char.add("ST", (np.arange(n_skus) // 5).astype(str)),
            "category": rng.choice(["apparel", "shoes", "home", "electronics", "beauty"], n_skus),
            "brand": "Acme",
            "size": rng.choice(["S", "M", "L", ""], n_skus),
            "list_price": [f"{p:.2f}" for p in prices],
            "unit_cost": [f"{p * 0.4:.2f}" for p in prices],
        }
    ).to_csv(directory / "products.csv", index=False)
    placed = pd.Timestamp("2023-01-01", tz="UTC") + pd.to_timedelta(
        rng.integers(0, 365 * 86400, n_orders), "s"
    )
    order_ids = np.char.add("O", np.arange(n_orders).astype(str))
    channel = rng.choice(["web", "app", "store"], n_orders, p=[0.5, 0.2, 0.3])
    orders = pd.DataFrame(
        {
            "order_id": order_ids,
            "customer_id": customer_ids[rng.integers(0, n_customers, n_orders)],
            "channel": channel,
            "location_id": np.where(
                channel == "store", np.array(stores)[rng.integers(0, 40, n_orders)], "W1"
            ),
            "placed_at": placed.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "employee_id": np.where(
                channel == "store", np.char.add("E", rng.integers(0, 400, n_orders).astype(str)), ""
            ),
            "ship_postcode": np.char.add("LS", rng.integers(1, 99, n_orders).astype(str)),
            "device_id": np.char.add("D", rng.integers(0, n_customers, n_orders).astype(str)),
            "currency": "GBP",
        }
    )
    orders.to_csv(directory / "orders.csv", index=False)
    line_order = np.repeat(np.arange(n_orders), 3)[:order_lines]
    line_sku = rng.integers(0, n_skus, order_lines)
    quantity = rng.integers(1, 3, order_lines)
    lines = pd.DataFrame(
        {
            "order_id": order_ids[line_order],
            "line_no": np.tile([1, 2, 3], n_orders)[:order_lines],
            "sku": skus[line_sku],
            "quantity": quantity,
            "unit_price": [f"{p:.2f}" for p in prices[line_sku]],
            "discount": "0.00",
        }
    )
    lines.to_csv(directory / "order_lines.csv", index=False)
    totals = pd.Series(prices[line_sku] * quantity).groupby(line_order).sum().round(2)
    pd.DataFrame(
        {
            "order_id": order_ids,
            "payment_id": np.char.add("P", order_ids),
            "method": "card",
            "amount": [f"{t:.2f}" for t in totals],
            "card_fingerprint": np.char.add("fp", rng.integers(0, n_customers, n_orders).astype(str)),
        }
    ).to_csv(directory / "payments.csv", index=False)
    returned = np.sort(rng.choice(n_orders, n_orders // 5, replace=False))
    return_ids = np.char.add("R", np.arange(len(returned)).astype(str))
    pd.DataFrame(
        {
            "return_id": return_ids,
            "order_id": order_ids[returned],
            "customer_id": orders["customer_id"].to_numpy()[returned],
            "channel": "mail",
            "location_id": "RC",
            "requested_at": (placed[returned] + pd.Timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "received_at": (placed[returned] + pd.Timedelta(days=9)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": "completed",
            "refund_method": "original_tender",
        }
    ).to_csv(directory / "returns.csv", index=False)
    pd.DataFrame(
        {
            "return_id": return_ids,
            "line_no": 1,
            "order_line_no": 1,
            "sku": skus[line_sku[returned * 3]],
            "quantity": 1,
            "reason": rng.choice(["doesnt_fit", "changed_mind", "defective"], len(returned)),
            "condition": "new",
            "disposition": "restock",
            "refund_amount": [f"{p:.2f}" for p in prices[line_sku[returned * 3]]],
        }
    ).to_csv(directory / "return_lines.csv", index=False)


def worker(directory: str, url: str) -> None:
    """Runs in its own process: migrate, import, print one JSON line."""
    sys.path.insert(0, str(ROOT))
    from oms.db import make_engine
    from oms.importer import import_directory
    from oms.migrate import upgrade

    upgrade(url)
    engine = make_engine(url)
    started = time.perf_counter()
    report = import_directory(Path(directory), engine)
    seconds = time.perf_counter() - started
    peak = peak_mib()
    files = {f.table: f.rows for f in report.files}
    print(json.dumps({"rows": report.rows, "seconds": seconds, "peak_mib": peak, "files": files}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, help="an existing data-contract directory")
    parser.add_argument(
        "--lines", type=int, default=1_000_000, help="order lines to generate (without --dir)"
    )
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "RECOUP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return

    with tempfile.TemporaryDirectory(prefix="recoup-import-bench-") as scratch:
        directory = args.dir
        if directory is None:
            directory = Path(scratch) / "data"
            started = time.perf_counter()
            generate(directory, args.lines)
            print(
                f"generated {args.lines:,} order lines in {time.perf_counter() - started:.1f} s -> {directory}"
            )
        size_mib = sum(p.stat().st_size for p in Path(directory).iterdir() if p.is_file()) / 2**20
        print(f"input: {directory} ({size_mib:,.0f} MiB)")
        print(f"{'backend':<11} {'rows':>11} {'seconds':>8} {'rows/s':>10} {'peak MiB':>9}")
        for backend in args.backends:
            if backend == "sqlite":
                url = f"sqlite:///{Path(scratch) / 'bench.db'}"
            else:
                url = fresh_postgres("recoup_import_bench", args.postgres_url)
            result = subprocess.run(
                [sys.executable, __file__, "--worker", str(directory), url],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                print(f"{backend}: failed\n{result.stderr[-2000:]}")
                continue
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            rate = figures["rows"] / figures["seconds"]
            print(
                f"{backend:<11} {figures['rows']:>11,} {figures['seconds']:>8.1f} {rate:>10,.0f} "
                f"{figures['peak_mib']:>9,.0f}"
            )
            if backend == "postgresql":
                fresh_postgres("recoup_import_bench", args.postgres_url, create=False)  # leave nothing behind


if __name__ == "__main__":
    main()
