"""The serving stack's parts against their alternatives, in one run, alternating.

    python benchmarks/serving_stack.py [--url URL] [--lines 1000000] [--rounds 2] [--rate 100]

Against PostgreSQL holding a simulated history (as `scoring_load.py`), each configuration serves
POST /v1/returns/score in turn, `--rounds` times in alternation:

- `uvicorn`: `uvicorn api.main:app --workers 2` (what `recoup serve --processes 2` runs), the
  processes sharing the listening socket, with `oms.driver`'s own libpq pipeline and prepared
  statements;
- `gunicorn`: `gunicorn -w 2 -k uvicorn_worker.UvicornWorker` (when gunicorn is installed);
- `psycopg`: uvicorn with psycopg 3's own pipeline mode and prepared statements
  (RECOUP_SCORING_PIPELINE=psycopg, prepare_threshold 5) instead of `oms.driver`'s.

(`api/serve.py`, a pre-fork server handing connections to processes over SCM_RIGHTS, was measured here
against uvicorn --workers and removed: uvicorn's p99 was 25 % lower and its maximum 5 % lower, within
the 10 % rule, with keep-alive connections spread 16/16 and 17/15 over the two processes.)

Per configuration and round: p50/p99 at `--rate` req/s (open loop, 8 keep-alive clients), the maximum
throughput (closed loop, 32 keep-alive clients), and how the keep-alive connections spread over the
processes. Then the median per configuration and its difference from `uvicorn`. The rule: a standard
part within 10 % on p99 and on the maximum replaces the home-made one.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, children, fresh_postgres, machine_jitter
from scoring_load import (
    api_key,
    closed_loop,
    history_now,
    open_loop,
    prepare_models,
    score_bodies,
    wait_ready,
)

CONFIGS = ("uvicorn", "gunicorn", "psycopg")


def command(config: str, port: int) -> list[str]:
    if config in ("uvicorn", "psycopg"):
        return [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "2", "--log-level", "warning", "--no-access-log"]  # fmt: skip
    return [sys.executable, "-m", "gunicorn", "api.main:app", "-w", "2", "-k", "uvicorn_worker.UvicornWorker",
            "-b", f"127.0.0.1:{port}", "--log-level", "warning"]  # fmt: skip


def spread(pid: int, port: int) -> str:
    """How many established connections to `port` each server process holds (from /proc)."""
    inodes: dict[str, int] = {}
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "01" and int(local.split(":")[1], 16) == port:
                inodes[inode] = 1
    counts = []
    for child in [pid, *children(pid)]:
        held = 0
        try:
            for fd in os.listdir(f"/proc/{child}/fd"):
                target = os.readlink(f"/proc/{child}/fd/{fd}")
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    held += 1
        except OSError:
            continue
        if held:
            counts.append(held)
    return "/".join(str(c) for c in sorted(counts, reverse=True)) or "-"


def measure(config: str, port: int, key: str, bodies: list[bytes], env: dict, rate: float) -> dict:
    server = subprocess.Popen(
        command(config, port),
        cwd=ROOT,
        env={**env, **({"RECOUP_SCORING_PIPELINE": "psycopg"} if config == "psycopg" else {})},
        start_new_session=True,
    )
    try:
        wait_ready(port, key)
        closed_loop(port, key, "POST", "/v1/returns/score", bodies, 8, 5)  # warm-up: caches, prepares
        paced = open_loop(port, key, bodies, rate, 20, 8)
        peak: dict = {}
        done = []

        def load() -> None:
            done.append(closed_loop(port, key, "POST", "/v1/returns/score", bodies, 32, 15))

        runner = threading.Thread(target=load)
        runner.start()
        time.sleep(5)
        held = spread(server.pid, port)
        runner.join()
        peak = done[0]
        return {
            "p50": paced["p50"],
            "p99": paced["p99"],
            "errors": paced["errors"] + peak["errors"],
            "max": peak["throughput"],
            "spread": held,
        }
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a PostgreSQL database already holding the history (else simulate one)")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    args = parser.parse_args()
    configs = [c for c in args.configs if c != "gunicorn" or importlib.util.find_spec("gunicorn")]
    if len(configs) < len(args.configs):
        print("gunicorn is not installed: skipped (pip install gunicorn uvicorn-worker)")
    import uvicorn

    print(f"uvicorn {uvicorn.__version__}; " + machine_jitter(), flush=True)
    with tempfile.TemporaryDirectory(prefix="recoup-stack-bench-") as scratch:
        var = Path(scratch) / "var"
        var.mkdir()
        url = args.url
        if url is None:
            url = fresh_postgres("recoup_stack_bench")
            history_now(args.lines, Path(scratch) / "retailer", url)
        prepare_models(url, var)
        key = api_key(url)
        bodies = score_bodies(url, 5_000)
        env = {
            **os.environ,
            "RECOUP_DATABASE_URL": url,
            "RECOUP_VAR_DIR": str(var),
            "RECOUP_ENV": "development",
        }
        results: dict[str, list[dict]] = {c: [] for c in configs}
        for round_ in range(1, args.rounds + 1):
            for config in configs:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    port = probe.getsockname()[1]
                figures = measure(config, port, key, bodies, env, args.rate)
                results[config].append(figures)
                print(
                    f"round {round_} {config:<9} p50 {figures['p50']:6.2f} ms  p99 {figures['p99']:6.2f} ms "
                    f"at {args.rate:.0f} req/s  max {figures['max']:7,.0f} req/s  "
                    f"connections per process {figures['spread']}  errors {figures['errors']}",
                    flush=True,
                )
        base = results.get("uvicorn")
        print(f"\nmedian over {args.rounds} rounds (difference from uvicorn with oms.driver)")
        for config, runs in results.items():
            p99 = statistics.median(r["p99"] for r in runs)
            peak = statistics.median(r["max"] for r in runs)
            versus = ""
            if base and config != "uvicorn":
                base_p99 = statistics.median(r["p99"] for r in base)
                base_max = statistics.median(r["max"] for r in base)
                versus = f"  p99 {p99 / base_p99 - 1:+.0%}, max {peak / base_max - 1:+.0%}"
            print(f"{config:<9} p99 {p99:6.2f} ms  max {peak:7,.0f} req/s{versus}", flush=True)
        if args.url is None:
            fresh_postgres("recoup_stack_bench", create=False)


if __name__ == "__main__":
    main()
