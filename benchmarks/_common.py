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


def machine_jitter(repeats: int = 2_000) -> str:
    """How steady this machine is: a fixed pure-Python task of about 1 ms, timed `repeats` times. On a
    shared virtual machine its p99 is often 2-3 times its p50 with nothing else running, which bounds
    what any p99 measured here can be (a request of p50 1 ms cannot have a p99 below this task's)."""
    import numpy as np

    def task() -> int:
        total = 0
        for i in range(20_000):
            total += i
        return total

    for _ in range(50):
        task()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        task()
        times.append(time.perf_counter() - started)
    p50, p99 = np.percentile(times, [50, 99]) * 1000
    # the same task after 3 ms of idleness each time (a server at moderate load sleeps between requests):
    # on a virtual machine an idle CPU can come back slower (seen here: up to +20 % for a task like this, +80 % for a
    # score, whose working set is larger: 1.8 ms of CPU back to back, 3.4 ms with 3 ms gaps)
    rested = []
    for _ in range(repeats // 4):
        time.sleep(0.003)
        started = time.perf_counter()
        task()
        rested.append(time.perf_counter() - started)
    after_idle = float(np.percentile(rested, 50)) * 1000
    return (
        f"machine: a fixed ~1 ms CPU task takes p50 {p50:.2f} ms, p99 {p99:.2f} ms (p99/p50 {p99 / p50:.1f});"
        f" after 3 ms idle, p50 {after_idle:.2f} ms ({after_idle / p50 - 1:+.0%})"
    )


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes `pids` (those gone count 0)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def children(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            kids = [int(child) for child in handle.read().split()]
    except OSError:
        kids = []
    for kid in kids:
        out += children(kid)
    return out


def postgres_pids() -> list[int]:
    """The local PostgreSQL server's processes (for CPU accounting), by their command name."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().strip() in ("postgres", "postmaster"):
                        found.append(int(entry))
            except OSError:
                continue
    return found
