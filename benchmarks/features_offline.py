"""Offline feature computation time and peak memory for histories of 1M and 5M order lines.

    python benchmarks/features_offline.py [--sizes 1000000 5000000] [--keep DIR] [--repeat 3]

Each size: simulate a retailer (18 months), import it into a fresh PostgreSQL database, then compute the
fraud features of every return and the line features of every returned line in a fresh process, --repeat
times. Targets on 2 cores: 1M in <= 30 s and <= 3 GiB; 5M in <= 5.5 x the 1M time.

On a shared 2-core machine the same run varies by 10-20 % from one repetition to the next, so each size
is timed several times, the sizes taking turns: the fastest repetition (as `timeit` reports) estimates the
work itself, the median what a run typically takes; the ratio is given for both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fresh_postgres, in_child, load, peak_mib, simulated_history


def worker(url: str) -> None:
    from features.offline import fraud_features, line_features
    from oms.db import make_engine

    engine = make_engine(url)
    started = time.perf_counter()
    fraud = fraud_features(engine)
    fraud_seconds = time.perf_counter() - started
    lines = line_features(engine)
    total = time.perf_counter() - started
    peak = peak_mib()
    print(
        json.dumps(
            {
                "returns": len(fraud),
                "lines": len(lines),
                "fraud_s": fraud_seconds,
                "total_s": total,
                "peak_mib": peak,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--keep", type=Path, help="keep simulated data here (reused by later runs)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per size (fresh process each)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    with tempfile.TemporaryDirectory(prefix="recoup-features-bench-") as scratch:
        base = args.keep or Path(scratch)
        urls = {}
        for size in args.sizes:
            data = simulated_history(size, base / f"retailer-{size}")
            urls[size] = fresh_postgres(f"recoup_features_bench_{size}")
            load(data, urls[size])
        # the sizes take turns (1M, 5M, 1M, 5M, ...): a machine that slows down for a while slows both
        runs: dict[int, list[dict]] = {size: [] for size in args.sizes}
        try:
            for _ in range(max(args.repeat, 1)):
                for size in args.sizes:
                    figures = in_child(__file__, "--worker", urls[size])
                    runs[size].append(figures)
                    print(
                        f"{size:>10,} lines: {figures['returns']:,} returns, fraud features "
                        f"{figures['fraud_s']:.1f} s, with line features {figures['total_s']:.1f} s, "
                        f"peak {figures['peak_mib']:,.0f} MiB",
                        flush=True,
                    )
        finally:
            for size in args.sizes:
                fresh_postgres(f"recoup_features_bench_{size}", create=False)
        results = []
        for size in args.sizes:
            totals = [run["total_s"] for run in runs[size]]
            results.append((size, min(totals), statistics.median(totals)))
            print(
                f"{size:>10,} lines: fastest {min(totals):.1f} s, median {statistics.median(totals):.1f} s "
                f"over {len(totals)} runs, peak {max(run['peak_mib'] for run in runs[size]):,.0f} MiB"
            )
        if len(results) > 1:
            (big, big_min, big_median), (small, small_min, small_median) = results[-1], results[0]
            print(
                f"time ratio {big:,} / {small:,} lines: {big_min / small_min:.2f} fastest to fastest, "
                f"{big_median / small_median:.2f} median to median (target <= 5.5)"
            )


if __name__ == "__main__":
    main()
