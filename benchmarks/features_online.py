"""Online feature latency per request on PostgreSQL holding a 1M-order-line history.

    python benchmarks/features_online.py [--lines 1000000] [--requests 2000] [--url URL]

Samples stored returns across the history, turns each into an incoming request (as of its own time) and
times `features.online.online_features` alone (one connection, warm statement cache), twice: through the
scoring API's engine (`make_engine(driver_prepares=True)`: the driver's own pipeline on libpq) and through
psycopg's cursors (the state engine). Target: p99 <= 3 ms.

Then each of a request's reads alone (`features.online.reads`, in its order), on the scoring engine: the
PostgreSQL backend's CPU and the rows per read, so that the reads worth making cheaper stand out (a
read's fixed cost, a one-row primary-key read's, is what the cheapest ones cost).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_seconds, fresh_postgres, load, machine_jitter, simulated_history


def requests_from_history(engine, count: int):
    from features.online import stored_request
    from oms.frames import load_frame

    returns = load_frame(engine, "returns").sample(count, random_state=1, replace=False)
    lines = load_frame(engine, "return_lines")
    lines = lines[lines["return_id"].isin(returns["return_id"])].sort_values(["return_id", "line_no"])
    grouped = dict(tuple(lines.groupby("return_id", sort=False)))
    return [stored_request(r, grouped[r.return_id]) for r in returns.itertuples()]


def measure(paths: dict[str, object], requests) -> None:
    """Each request through every path in turn (the first path alternating), so that both see the same
    machine and the same warm database: wall times per request, CPU per request in this process and in
    each path's PostgreSQL backend."""
    from features import engine as feature_engine
    from features.online import gather

    with contextlib.ExitStack() as stack:
        connections = {label: stack.enter_context(engine.connect()) for label, engine in paths.items()}
        backends = {
            label: connection.connection.driver_connection.info.backend_pid
            for label, connection in connections.items()
        }
        for request in requests[:200]:  # warm up: psycopg prepares statements after a few uses
            for connection in connections.values():
                feature_engine.compute(*gather(connection, request))
        times = {label: ([], [], [], [0.0]) for label in paths}  # total, fetch, compute, client CPU
        database_before = {label: cpu_seconds([pid]) for label, pid in backends.items()}
        order = list(connections)
        for number, request in enumerate(requests):
            for label in order[number % 2 :] + order[: number % 2]:
                total, fetch, compute, cpu = times[label]
                c0, t0 = time.process_time(), time.perf_counter()
                batch, history = gather(connections[label], request)
                t1 = time.perf_counter()
                feature_engine.compute(batch, history)
                t2 = time.perf_counter()
                cpu[0] += time.process_time() - c0
                total.append(t2 - t0)
                fetch.append(t1 - t0)
                compute.append(t2 - t1)
        database = {label: cpu_seconds([pid]) - database_before[label] for label, pid in backends.items()}
    ms = lambda values, q: np.percentile(values, q) * 1000  # noqa: E731
    for label, (total, fetch, compute, cpu) in times.items():
        print(
            f"{label}: requests {len(total):,}; CPU per request: this process {cpu[0] * 1000 / len(total):.2f} ms,"
            f" its PostgreSQL backend {database[label] * 1000 / len(total):.2f} ms"
        )
        for name, values in (("total", total), ("database reads", fetch), ("feature math", compute)):
            print(
                f"  {name:<15} p50 {ms(values, 50):6.2f} ms   p95 {ms(values, 95):6.2f} ms   p99 {ms(values, 99):6.2f} ms"
            )


def per_read(engine, requests) -> None:
    """Each read of `features.online.reads` alone, for every request in turn: the PostgreSQL backend's
    CPU per read and the rows it returns."""
    from features import online
    from oms.driver import Driver

    names = {
        online.ORDER_LINES: "the order's lines",
        online.PAYMENTS: "the order's payments",
        online.CUSTOMER_ORDERS: "the customer's orders",
        online.CUSTOMER_RETURNS: "the customer's returns",
        online.LINKS_AND_REVIEWS: "linked accounts and reviews",
        online.CUSTOMER_STORE_EMPLOYEE: "store, employee, customer",
        online.PRODUCTS_PG: "products and their rates",
    }
    with engine.connect() as connection:
        db = Driver(connection)
        pid = connection.connection.driver_connection.info.backend_pid
        statements = [online.reads(db, request) for request in requests]
        kinds = len(statements[0])
        for kind in range(kinds):
            for reads in statements[:200]:  # warm: prepared, and the pages in memory
                db.run([reads[kind]])
            rows, before = 0, cpu_seconds([pid])
            for reads in statements:
                rows += len(db.run([reads[kind]])[0])
            used = (cpu_seconds([pid]) - before) * 1000 / len(statements)
            name = names.get(statements[0][kind][0], statements[0][kind][0].split()[0])
            print(f"  {name:<28} PostgreSQL CPU {used:5.3f} ms per read, {rows / len(statements):5.1f} rows")
        # the reads' transaction (the pipeline's BEGIN) is rolled back when the pool takes the connection back


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--url", help="an already loaded PostgreSQL database (skips simulate + import)")
    args = parser.parse_args()
    from features.offline import write_product_snapshots
    from oms.db import make_engine

    with tempfile.TemporaryDirectory(prefix="recoup-online-bench-") as scratch:
        url = args.url
        if url is None:
            data = simulated_history(args.lines, Path(scratch) / "retailer")
            url = fresh_postgres("recoup_online_bench")
            load(data, url)
        engine = make_engine(url)
        started = time.perf_counter()
        write_product_snapshots(engine)
        print(f"product snapshots in {time.perf_counter() - started:.1f} s")
        requests = requests_from_history(engine, args.requests)
        # as the API process does once it has started (api.main.create_app): what set-up built is
        # frozen, so the collector's full passes do not walk it on the request path
        gc.collect()
        gc.freeze()
        print(machine_jitter())
        scoring = make_engine(url, driver_prepares=True)
        measure({"the scoring engine's own pipeline": scoring, "psycopg's cursors": engine}, requests)
        print("each read alone, on the scoring engine:")
        per_read(scoring, requests)
        scoring.dispose()
        if args.url is None:
            engine.dispose()
            fresh_postgres("recoup_online_bench", create=False)


if __name__ == "__main__":
    main()
