"""`recoup demo`: the whole job end to end on the embedded defaults (what `make demo` runs).

Simulate a retailer whose history ends today (or convert the UCI Online Retail file), import it into the
SQLite database under var/, materialise every Dagster asset (features per month, models through their
gates, batch scores, analytics) on a persistent Dagster instance under var/dagster, then serve the API
(:8000), the dashboards (:8501), the Dagster UI (:3000) and the MLflow UI (:5000) until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection, func, select

from oms.db import make_engine
from oms.importer import import_directory
from oms.migrate import upgrade
from oms.settings import get_settings
from oms.tables import OrderLine, Return, ReturnLine, metadata

DEFAULT_CUSTOMERS = 8_000
MONTHS = 12
PORTS = {"api": 8000, "dashboards": 8501, "dagster": 3000, "mlflow": 5000}


def run_demo(
    console: Console, serve: bool = True, data: str = "simulated", customers: int = DEFAULT_CUSTOMERS
) -> None:
    settings = get_settings()
    var = Path(settings.var_dir).resolve()
    var.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    directory, first_month = _data(console, data, customers)
    # the pipelines' monthly partitions start where the history starts
    os.environ["RECOUP_PIPELINE_START"] = first_month
    os.environ["DAGSTER_HOME"] = str(_dagster_home(var))
    get_settings.cache_clear()
    settings = get_settings()

    console.print(f"[bold]2/4[/] migrating and importing into {settings.database_url}")
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    report = import_directory(directory, engine)
    console.print(f"      {report.rows:,} rows in {report.seconds:.1f} s")

    console.print(
        "[bold]3/4[/] materialising every Dagster asset (features by month, models, scores, analytics)"
    )
    _materialise(console, reviews=_count(engine, "fraud_reviews"))
    with engine.connect() as connection:
        console.print(summary_table(connection))
    key, user, password = _credentials(console, engine, var)
    console.print(f"[bold]demo ready in {time.perf_counter() - started:.0f} s[/]")
    if serve:
        _serve(console, settings, var, key, user, password, engine)
    engine.dispose()


def _data(console: Console, data: str, customers: int) -> tuple[Path, str]:
    settings = get_settings()
    if data == "uci":
        from simulator.uci import convert_uci

        directory = settings.data_dir / "uci-online-retail"
        console.print(f"[bold]1/4[/] converting the UCI Online Retail file into {directory}")
        report = convert_uci(settings.uci_path, directory)
        console.print(str(report), markup=False, highlight=False)
        return directory, "2010-12-01"
    from simulator.retailer import SimulationConfig, simulate

    today = dt.datetime.now(dt.UTC).date()
    # the history ends today (00:00 UTC), as the README and every page say, not at the start of the month
    start = (pd.Timestamp(today) - pd.DateOffset(months=MONTHS)).date()
    directory = settings.data_dir / "simulated"
    console.print(
        f"[bold]1/4[/] simulating a retailer: {customers:,} customers, {start} .. {today}, into {directory}"
    )
    result = simulate(SimulationConfig(customers=customers, months=MONTHS, start=start), directory)
    figures = result.figures
    console.print(
        f"      {result.tables['order_lines']:,} order lines, {result.tables['returns']:,} returns; return rate by value "
        f"{figures['return_rate_by_value']:.1%}, fraud+abuse {figures['fraud_abuse_share_of_returns']:.1%} of returns "
        f"({result.seconds:.1f} s)"
    )
    return directory, start.replace(day=1).isoformat()  # the first monthly partition holds its start


def _dagster_home(var: Path) -> Path:
    """A Dagster instance whose run, event and schedule storage live under var/dagster."""
    home = var / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        "# written by `recoup demo`: SQLite storage under var/ (see the repository's dagster.yaml for PostgreSQL)\n"
        f"storage:\n  sqlite:\n    base_dir: {home / 'storage'}\n"
        f"local_artifact_storage:\n  module: dagster._core.storage.root\n  class: LocalArtifactStorage\n  config:\n    base_dir: {home}\n"
        "telemetry:\n  enabled: false\n"
    )
    return home


def _count(engine, table: str) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(metadata.tables[table])).scalar_one()


def _materialise(console: Console, reviews: int) -> None:
    import dagster as dg

    from pipelines import checks
    from pipelines.assets import features, models
    from pipelines.definitions import defs
    from pipelines.partitions import monthly

    assets = [*dg.load_assets_from_modules([features, models])]
    asset_checks = [
        *dg.load_asset_checks_from_modules([checks]),
        *dg.load_asset_checks_from_modules([models]),
    ]
    resources = defs.resources
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        result = dg.materialize(
            [*assets, *asset_checks],
            instance=instance,
            resources=resources,
            selection=["source_tables", "product_stats"],
            run_config=quiet,
        )
        if not result.success:
            raise RuntimeError("source tables or product snapshots failed")
        console.print(f"      product snapshots in {time.perf_counter() - started:.1f} s")
        months = monthly.get_partition_keys()
        for number, month in enumerate(months, start=1):
            started = time.perf_counter()
            result = dg.materialize(
                [*assets, *asset_checks],
                partition_key=month,
                instance=instance,
                resources=resources,
                selection=["return_features", "return_line_features"],
                run_config=quiet,
            )
            if not result.success:
                raise RuntimeError(f"feature assets failed for {month}")
            console.print(
                f"      features {month} ({number}/{len(months)}) in {time.perf_counter() - started:.1f} s"
            )
        groups = ["analytics"] + (["models"] if reviews else [])
        if not reviews:
            console.print(
                "      no fraud reviews in this data: the models are skipped (scoring runs on the policy rules)"
            )
        started = time.perf_counter()
        result = dg.materialize(
            [*assets, *asset_checks],
            instance=instance,
            resources=resources,
            selection=dg.AssetSelection.groups(*groups),
            raise_on_error=False,
            run_config=quiet,
        )
        for check in result.get_asset_check_evaluations():
            verdict = "passed" if check.passed else "failed"
            reason = check.metadata.get("reason")
            console.print(
                f"      check {check.check_name}: {verdict}"
                + (f" ({reason.value})" if reason is not None else "")
            )
        gates = {
            f"{check.asset_key.to_user_string()}_{check.check_name}"
            for check in result.get_asset_check_evaluations()
            if not check.passed
        }
        failed = [
            e.step_key
            for e in result.all_events
            if e.event_type_value == "STEP_FAILURE" and e.step_key not in gates
        ]
        if failed:
            raise RuntimeError(f"assets failed: {', '.join(failed)}")
        if gates:
            console.print(
                "      a gate refused its challenger: no new champion (the API scores with the previous one, or degrades to the policy rules)"
            )
        console.print(f"      {' and '.join(groups)} in {time.perf_counter() - started:.1f} s")


def _credentials(console: Console, engine, var: Path) -> tuple[str, str, str]:
    from oms.apikeys import create_key
    from oms.uow import unit_of_work

    with unit_of_work(engine) as session:
        key = create_key(session, "demo", ["admin"])
    password = secrets.token_urlsafe(9)
    users = var / "dashboard-users.toml"
    try:
        from dashboards.auth import hash_password

        users.write_text(
            f'[users.demo]\nname = "Demo analyst"\nroles = ["admin"]\npassword_hash = "{hash_password(password)}"\n'
        )
        os.environ["RECOUP_DASHBOARD_USERS"] = str(users)
    except ImportError:  # dashboards not installed in this build
        password = ""
    return key, "demo", password


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _serve(console: Console, settings, var: Path, key: str, user: str, password: str, engine) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    python = sys.executable
    bin_dir = Path(python).parent
    commands = {
        "api": [
            python,
            "-m",
            "uvicorn",
            "api.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORTS["api"]),
            "--log-level",
            "warning",
        ],
        "dashboards": [
            str(bin_dir / "streamlit"),
            "run",
            "dashboards/app.py",
            "--server.port",
            str(PORTS["dashboards"]),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        "dagster": [
            str(bin_dir / "dagster-webserver"),
            "-m",
            "pipelines.definitions",
            "-h",
            "127.0.0.1",
            "-p",
            str(PORTS["dagster"]),
        ],
        "mlflow": [
            str(bin_dir / "mlflow"),
            "ui",
            "--backend-store-uri",
            settings.mlflow_tracking_uri,
            "--default-artifact-root",
            settings.mlflow_artifact_root,
            "--host",
            "127.0.0.1",
            "--port",
            str(PORTS["mlflow"]),
        ],
    }
    busy = [name for name, port in PORTS.items() if not _free(port)]
    if busy:
        raise RuntimeError(
            f"ports in use for {', '.join(busy)}: stop what listens there (or run `make demo ARGS=--no-serve`)"
        )
    logs = var / "logs"
    logs.mkdir(exist_ok=True)
    log_files = {name: open(logs / f"{name}.log", "w") for name in commands}  # noqa: SIM115 - live for the processes
    processes = {
        name: subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=log_files[name],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for name, command in commands.items()
    }
    order = _sample_order(engine)
    console.print()
    console.print(f"API          http://127.0.0.1:{PORTS['api']}/docs")
    # never wrapped: a key broken over two lines does not copy
    console.print(f"API key      {key}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"Dashboards   http://127.0.0.1:{PORTS['dashboards']}   (sign in: {user} / {password})")
    console.print(f"Dagster      http://127.0.0.1:{PORTS['dagster']}")
    console.print(f"MLflow       http://127.0.0.1:{PORTS['mlflow']}")
    console.print(f"logs in {logs}; Ctrl-C stops everything. Score a return:")
    console.print(
        f"curl -s -X POST http://127.0.0.1:{PORTS['api']}/v1/returns/score -H 'Authorization: Bearer {key}' "
        f'-H \'Content-Type: application/json\' -d \'{{"channel": "mail", "order_id": "{order}", '
        f'"lines": [{{"order_line_no": 1, "quantity": 1, "reason": "changed_mind"}}]}}\'',
        markup=False,
        highlight=False,
        soft_wrap=True,
    )

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    # `kill` stops the demo as cleanly as Ctrl-C; and Ctrl-C works even when the demo was started in the
    # background (a shell starts background jobs with SIGINT ignored, and Python keeps it so)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(p.poll() is None for p in processes.values()):
            time.sleep(1)
        dead = [name for name, p in processes.items() if p.poll() is not None]
        raise RuntimeError(f"{', '.join(dead)} stopped: see {logs}")
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        for process in processes.values():
            _signal_group(process, signal.SIGTERM)
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            _signal_group(process, signal.SIGKILL)
        for handle in log_files.values():
            handle.close()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _sample_order(engine) -> str:
    """A recent order with nothing returned yet: the ready-made curl scores it."""
    with engine.connect() as connection:
        row = connection.exec_driver_sql(
            "SELECT order_id FROM orders WHERE order_id NOT IN (SELECT order_id FROM returns WHERE order_id IS NOT NULL) "
            "ORDER BY placed_at DESC LIMIT 1"
        ).first()
    return row[0] if row else "ORDER-ID"


def summary_table(connection: Connection) -> Table:
    table = Table(title="Recoup state database")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name in (
        "customers",
        "locations",
        "products",
        "orders",
        "order_lines",
        "payments",
        "returns",
        "return_lines",
        "fraud_reviews",
        "return_scores",
        "product_stats",
    ):
        count = connection.execute(select(func.count()).select_from(metadata.tables[name])).scalar_one()
        table.add_row(name, f"{count:,}")
    sold = (
        connection.execute(
            select(func.sum(OrderLine.unit_price * OrderLine.quantity - OrderLine.discount))
        ).scalar_one()
        or 0
    )
    refunded = connection.execute(select(func.sum(ReturnLine.refund_amount))).scalar_one() or 0
    by_channel = connection.execute(select(Return.channel, func.count()).group_by(Return.channel)).all()
    table.add_section()
    table.add_row("sales value", f"{float(sold):,.2f}")
    table.add_row("refunded value", f"{float(refunded):,.2f}")
    table.add_row("return rate by value", f"{float(refunded) / float(sold or 1):.1%}")
    for channel, count in sorted(by_channel):
        table.add_row(f"returns via {channel}", f"{count:,}")
    return table
