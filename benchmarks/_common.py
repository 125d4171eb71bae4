"""Helpers shared by the benchmarks: simulated histories in fresh databases, child-process timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_ADMIN = os.environ.get(
    "RECOUP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
LINES_PER_CUSTOMER_18M = 10.5  # order lines a simulated customer places in 18 months


def fresh_postgres(name: str, admin_url: str = DEFAULT_ADMIN, create: bool = True) -> str:
    """An empty database `name` (dropped first if it exists); with create=False only the drop."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from oms.db import normalise_url

    admin = create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if create:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(normalise_url(admin_url)).set(database=name).render_as_string(hide_password=False)


def simulated_history(order_lines: int, out: Path, seed: int = 42) -> Path:
    """A simulated retailer of about `order_lines` order lines over 18 months (reused if present)."""
    from simulator.retailer import SimulationConfig, simulate

    if not (out / "order_lines.csv").exists():
        customers = max(int(order_lines / LINES_PER_CUSTOMER_18M), 1_000)
        started = time.perf_counter()
        result = simulate(SimulationConfig(customers=customers, months=18, seed=seed), out)
        print(
            f"simulated {result.tables['order_lines']:,} order lines in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    return out


def load(directory: Path, url: str) -> None:
    from oms.db import make_engine
    from oms.importer import import_directory
    from oms.migrate import upgrade

    upgrade(url)
    engine = make_engine(url)
    started = time.perf_counter()
    report = import_directory(directory, engine)
    print(f"imported {report.rows:,} rows in {time.perf_counter() - started:.0f} s", flush=True)
    if url.startswith("postgresql"):
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


def peak_mib() -> float:
    """This process's peak resident memory. VmHWM belongs to the process's own address space; ru_maxrss
    is carried across exec from the parent, so a child started by a parent holding a loaded 5M history
    would report the parent's size."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(script: str, *args: str) -> dict:
    """Run `script` with args in a fresh Python process; it prints one JSON line last."""
    result = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])
