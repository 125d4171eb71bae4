"""Scoring under load: the API on loopback against PostgreSQL holding a 1M-order-line history.

    python benchmarks/scoring_load.py [--url URL] [--rate 300] [--seconds 30] [--soak 600 --soak-rate 200]

Starts the API (`uvicorn api.main:app --workers N`, as `recoup serve --processes N`; default 2 on 2
cores) with a
champion model trained on the history, then:
1. the floor: the authenticated no-op GET /v1/ping, maximum throughput with keep-alive clients (closed
   loops with each of --max-clients, default 8, 32 and 64: the more clients wait, the more scores a
   batch holds);
2. POST /v1/returns/score at a fixed rate (open loop, default 300 req/s): p50/p95/p99 latency, errors,
   after the floor's latency at the same rate (the no-op, paced the same way);
3. POST /v1/returns/score maximum throughput (closed loops with the same client counts), the best as a
   share of the best floor; the API serves scores that arrive together in one batch (`api.batching`),
   and each phase prints how many scores a batch held on average (from GET /v1/status);
4. the latency curve: open loops at 25, 50 and 75 % of that maximum (--curve), up to which rate the p99
   target holds on this machine.
With --soak S: S seconds at --soak-rate, printing errors and the server's memory growth.
Targets on 2 cores: p99 <= 10 ms at 300 req/s, 0 errors, max scoring throughput >= 50 % of the floor.
Each phase also prints the CPU a request cost the API processes, PostgreSQL and the load generator, and
the run starts with the machine's own jitter (a fixed CPU task's p50 and p99), the context of any p99.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, children, cpu_seconds, fresh_postgres, load, machine_jitter, postgres_pids


def history_now(order_lines: int, out: Path, url: str) -> None:
    """A simulated 18-month history ending today (so that return windows are open at 'now')."""
    from simulator.retailer import SimulationConfig, simulate

    today = dt.date.today()
    start = (pd.Timestamp(today) - pd.DateOffset(months=18)).date().replace(day=1)
    result = simulate(
        SimulationConfig(customers=int(order_lines / 10.5), months=18, seed=42, start=start), out
    )
    print(f"simulated {result.tables['order_lines']:,} order lines ({start} .. {today})", flush=True)
    load(out, url)


def prepare_models(url: str, var: Path) -> None:
    from features.offline import fraud_features, line_features, write_product_snapshots
    from models import registry
    from models.training import fraud_challenger, gate_fraud, gate_recovery, recovery_challenger
    from oms.db import make_engine
    from oms.frames import load_frame
    from oms.migrate import upgrade

    upgrade(url)
    engine = make_engine(url)
    started = time.perf_counter()
    write_product_snapshots(engine)
    registry.configure(f"sqlite:///{var / 'mlflow.db'}", str(var / "mlartifacts"))
    features = fraud_features(engine)
    reviews = load_frame(engine, "fraud_reviews", ["return_id", "reviewed_at", "outcome", "source"])
    result, version = fraud_challenger(
        features, reviews, capacity=0.02, artifact_root=str(var / "mlartifacts")
    )
    gate_fraud(result, version)
    recovery, recovery_version, _ = recovery_challenger(
        line_features(engine), artifact_root=str(var / "mlartifacts")
    )
    gate_recovery(recovery, recovery_version)
    print(f"snapshots and champion models ready in {time.perf_counter() - started:.0f} s", flush=True)


def api_key(url: str) -> str:
    from oms.apikeys import create_key
    from oms.db import make_engine
    from oms.uow import unit_of_work

    with unit_of_work(make_engine(url)) as session:
        return create_key(session, "load-test", ["returns:read"])


def score_bodies(url: str, count: int) -> list[bytes]:
    from oms.db import make_engine
    from oms.frames import load_frame

    engine = make_engine(url)
    orders = load_frame(engine, "orders", ["order_id", "channel", "location_id", "placed_at"])
    returned = set(load_frame(engine, "returns", ["order_id"])["order_id"].dropna())
    orders = orders[~orders["order_id"].isin(returned)]
    recent = orders[orders["placed_at"] > orders["placed_at"].max() - pd.Timedelta(days=12)].sample(
        min(count, 20_000), random_state=1, replace=True
    )
    bodies = []
    for order in recent.itertuples():
        store = order.channel == "store"
        body = {
            "channel": "store" if store else "mail",
            "order_id": order.order_id,
            "location_id": order.location_id if store else "RC1",
            "lines": [{"order_line_no": 1, "quantity": 1, "reason": "changed_mind"}],
        }
        bodies.append(json.dumps(body).encode())
    return bodies


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int, key: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.connection.connect()
        self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: bytes | None) -> int:
        self.connection.request(method, path, body=body, headers=self.headers)
        response = self.connection.getresponse()
        response.read()
        return response.status


def wait_ready(port: int, key: str, seconds: float = 30) -> None:
    """Until the API answers GET /v1/ping (its processes have started)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if Client(port, key).call("GET", "/v1/ping", None) == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the API on port {port} did not answer in {seconds:.0f} s")


def closed_loop(
    port: int, key: str, method: str, path: str, bodies: list[bytes] | None, clients: int, seconds: float
) -> dict:
    latencies: list[float] = []
    errors = [0]
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()

    def run(offset: int) -> None:
        client, mine, index = Client(port, key), [], offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status = client.call(method, path, bodies[index % len(bodies)] if bodies else None)
            mine.append(time.perf_counter() - started)
            if status != 200:
                errors[0] += 1
            index += clients
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _figures(latencies, errors[0], time.perf_counter() - started)


def open_loop(
    port: int,
    key: str,
    bodies: list[bytes] | None,
    rate: float,
    seconds: float,
    clients: int = 8,
    method: str = "POST",
    path: str = "/v1/returns/score",
) -> dict:
    """Requests sent on a fixed schedule (latency measured from the scheduled time: no coordinated omission)."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    total = int(rate * seconds)
    begin = time.perf_counter() + 0.2

    def run(offset: int) -> None:
        client, mine = Client(port, key), []
        for n in range(offset, total, clients):
            scheduled = begin + n / rate
            wait = scheduled - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            status = client.call(method, path, bodies[n % len(bodies)] if bodies else None)
            mine.append(time.perf_counter() - scheduled)
            if status != 200:
                errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _figures(latencies, errors[0], time.perf_counter() - begin)


def _figures(latencies: list[float], errors: int, seconds: float) -> dict:
    values = np.array(latencies) * 1000
    return {
        "requests": len(values),
        "errors": errors,
        "throughput": len(values) / seconds,
        "p50": float(np.percentile(values, 50)) if len(values) else float("nan"),
        "p95": float(np.percentile(values, 95)) if len(values) else float("nan"),
        "p99": float(np.percentile(values, 99)) if len(values) else float("nan"),
    }


def show(name: str, f: dict) -> None:
    print(
        f"{name:<34} {f['requests']:>8,} req {f['throughput']:>8,.0f} req/s  p50 {f['p50']:6.2f}  p95 {f['p95']:6.2f}  p99 {f['p99']:6.2f} ms  errors {f['errors']}",
        flush=True,
    )


def with_cpu(server_pid: int, run) -> tuple[dict, str]:
    """`run()`'s figures, and the CPU each request cost the API processes, PostgreSQL and this load
    generator (from /proc): what the machine has to give per request, whatever the latency."""
    api, database = children(server_pid), postgres_pids()
    before = (cpu_seconds(api), cpu_seconds(database), time.process_time())
    figures = run()
    after = (cpu_seconds(api), cpu_seconds(database), time.process_time())
    n = max(figures["requests"], 1)
    api_ms, db_ms, client_ms = ((b - a) * 1000 / n for a, b in zip(before, after, strict=True))
    total = api_ms + db_ms + client_ms
    cores = os.cpu_count() or 1
    line = (
        f"  CPU per request: API {api_ms:.2f} ms + PostgreSQL {db_ms:.2f} ms + load generator {client_ms:.2f} ms"
        f" = {total:.2f} ms; {cores} cores give at most {cores * 1000 / total:,.0f} req/s"
    )
    return figures, line


def batching(port: int, key: str, processes: int) -> dict[int, tuple[int, int]]:
    """(scores, batches) served so far by each API process, from GET /v1/status on fresh connections
    (the serve parent hands each new connection to the next process)."""
    found: dict[int, tuple[int, int]] = {}
    for _ in range(4 * processes):
        client = Client(port, key)
        client.connection.request("GET", "/v1/status", headers=client.headers)
        status = json.loads(client.connection.getresponse().read())
        client.connection.close()
        found[status["pid"]] = (status["scoring"]["scores"], status["scoring"]["batches"])
        if len(found) == processes:
            break
    return found


def batch_line(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> str:
    scores = sum(after[pid][0] - before.get(pid, (0, 0))[0] for pid in after)
    batches = sum(after[pid][1] - before.get(pid, (0, 0))[1] for pid in after)
    if not batches:
        return "  batches: none served"
    return f"  batches: {scores:,} scores in {batches:,} batches, {scores / batches:.2f} per batch"


def rss_mib(pid: int) -> float:
    """Resident memory of the server: the process and its children (the API processes)."""
    total = 0.0
    for member in children(pid):
        try:
            with open(f"/proc/{member}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a PostgreSQL database already holding the history (else simulate one)")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--processes", type=int, default=2, help="API processes sharing the port")
    parser.add_argument(
        "--max-clients",
        type=int,
        nargs="+",
        default=[8, 32, 64],
        help="the closed loops (floor and maximum) run with each of these client counts; the best counts",
    )
    parser.add_argument(
        "--curve",
        type=float,
        nargs="*",
        default=[0.25, 0.5, 0.75],
        help="after the maximum, open loops at these shares of it (none: skip)",
    )
    parser.add_argument("--curve-seconds", type=float, default=15)
    parser.add_argument("--soak", type=float, default=0, help="soak duration in seconds (0: no soak)")
    parser.add_argument("--soak-rate", type=float, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recoup-scoring-bench-") as scratch:
        var = Path(scratch) / "var"
        var.mkdir()
        url = args.url
        if url is None:
            url = fresh_postgres("recoup_scoring_bench")
            history_now(args.lines, Path(scratch) / "retailer", url)
        prepare_models(url, var)
        print(machine_jitter(), flush=True)
        key = api_key(url)
        bodies = score_bodies(url, 5_000)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {
            **os.environ,
            "RECOUP_DATABASE_URL": url,
            "RECOUP_VAR_DIR": str(var),
            "RECOUP_ENV": "development",
        }
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.processes),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            wait_ready(port, key)
            closed_loop(
                port, key, "POST", "/v1/returns/score", bodies, 4, 5
            )  # warm-up: statement caches, JIT-free paths
            floors = []
            for clients in args.max_clients:
                floor, floor_cpu = with_cpu(
                    server.pid, lambda c=clients: closed_loop(port, key, "GET", "/v1/ping", None, c, 10)
                )
                show(f"floor: GET /v1/ping (max, {clients} clients)", floor)
                print(floor_cpu)
                floors.append(floor)
            # the latency floor at the same rate: what this machine and this load generator add to any
            # request's latency, the context of the score's p99
            paced = open_loop(
                port, key, None, args.rate, min(args.seconds, 15), args.clients, "GET", "/v1/ping"
            )
            show(f"floor at {args.rate:.0f} req/s (GET /v1/ping)", paced)
            before = batching(port, key, args.processes)
            fixed, fixed_cpu = with_cpu(
                server.pid, lambda: open_loop(port, key, bodies, args.rate, args.seconds, args.clients)
            )
            show(f"score at {args.rate:.0f} req/s (open loop)", fixed)
            print(fixed_cpu)
            print(batch_line(before, batching(port, key, args.processes)))
            peaks = []
            for clients in args.max_clients:
                before = batching(port, key, args.processes)
                peak, peak_cpu = with_cpu(
                    server.pid,
                    lambda c=clients: closed_loop(port, key, "POST", "/v1/returns/score", bodies, c, 15),
                )
                show(f"score (max, {clients} clients)", peak)
                print(peak_cpu)
                print(batch_line(before, batching(port, key, args.processes)))
                peaks.append(peak)
            floor = max(floors, key=lambda f: f["throughput"])
            peak = max(peaks, key=lambda f: f["throughput"])
            print(
                f"max scoring throughput = {peak['throughput'] / floor['throughput']:.0%} of the floor"
                f" ({peak['throughput']:,.0f} against {floor['throughput']:,.0f} req/s, the best of each)"
            )
            # the latency curve: the same open loop at shares of the measured maximum, showing the rate
            # up to which the p99 target holds on this machine
            for share in args.curve:
                rate = peak["throughput"] * share
                point = open_loop(port, key, bodies, rate, args.curve_seconds, args.clients)
                show(f"score at {rate:.0f} req/s ({share:.0%} of max)", point)
            if args.soak:
                before = rss_mib(server.pid)
                soak = open_loop(port, key, bodies, args.soak_rate, args.soak, args.clients)
                after = rss_mib(server.pid)
                show(f"soak {args.soak:.0f} s at {args.soak_rate:.0f} req/s", soak)
                print(
                    f"server memory {before:,.0f} MiB -> {after:,.0f} MiB ({(after - before) / before:+.1%})"
                )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=40)
        if args.url is None:
            fresh_postgres("recoup_scoring_bench", create=False)


if __name__ == "__main__":
    main()
