"""Online feature latency per request on PostgreSQL holding a 1M-order-line history.

    python benchmarks/features_online.py [--lines 1000000] [--requests 2000] [--url URL]

Samples stored returns across the history, turns each into an incoming request (as of its own time) and
times `features.online.online_features` alone (one connection, warm statement cache). Target: p99 <= 3 ms.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--url", help="an already loaded PostgreSQL database (skips simulate + import)")
    args = parser.parse_args()
    from features import engine as feature_engine
    from features.offline import write_product_snapshots
    from features.online import gather
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
        with engine.connect() as connection:
            backend = connection.connection.driver_connection.info.backend_pid
            for request in requests[:200]:  # warm up: psycopg prepares statements after a few uses
                feature_engine.compute(*gather(connection, request))
            cpu_before = (time.process_time(), cpu_seconds([backend]))
            total, fetch, compute = [], [], []
            for request in requests:
                t0 = time.perf_counter()
                batch, history = gather(connection, request)
                t1 = time.perf_counter()
                feature_engine.compute(batch, history)
                t2 = time.perf_counter()
                total.append(t2 - t0)
                fetch.append(t1 - t0)
                compute.append(t2 - t1)
            client_ms, database_ms = (
                (after - before) * 1000 / len(requests)
                for before, after in zip(
                    cpu_before, (time.process_time(), cpu_seconds([backend])), strict=True
                )
            )
        ms = lambda values, q: np.percentile(values, q) * 1000  # noqa: E731
        print(
            f"requests {len(total):,}; CPU per request: this process {client_ms:.2f} ms, its PostgreSQL backend {database_ms:.2f} ms"
        )
        for name, values in (("total", total), ("database reads", fetch), ("feature math", compute)):
            print(
                f"{name:<15} p50 {ms(values, 50):6.2f} ms   p95 {ms(values, 95):6.2f} ms   p99 {ms(values, 99):6.2f} ms"
            )
        if args.url is None:
            engine.dispose()
            fresh_postgres("recoup_online_bench", create=False)


if __name__ == "__main__":
    main()
