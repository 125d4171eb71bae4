"""Time and peak memory to simulate a retailer with >= 1M order lines.

    python benchmarks/simulate_speed.py [--customers 100000 --months 18] [--out DIR]

Target on a 2-core machine: <= 30 s and < 2 GiB for 1M order lines (files written included).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.retailer import SimulationConfig, simulate


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=18)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, help="keep the output here (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recoup-sim-bench-") as scratch:
        out = args.out or Path(scratch) / "retailer"
        started = time.perf_counter()
        result = simulate(SimulationConfig(customers=args.customers, months=args.months, seed=args.seed), out)
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    for table, rows in result.tables.items():
        print(f"{table:<14} {rows:>10,}")
    print(f"order lines     {result.tables['order_lines']:>10,}")
    print(f"seconds         {seconds:>10.1f}   ({result.tables['order_lines'] / seconds:,.0f} order lines/s)")
    print(f"peak memory MiB {peak:>10,.0f}")
    print(f"output MiB      {size:>10,.0f}")
    for name, value in result.figures.items():
        print(f"{name:<36} {value:.3f}")


if __name__ == "__main__":
    main()
