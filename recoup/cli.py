"""The `recoup` command line. Every command exits non-zero with one clear line on failure."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from oms.settings import get_settings

app = typer.Typer(help="Recoup: returns intelligence for omnichannel retailers.", no_args_is_help=True)
db_app = typer.Typer(help="The state database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
models_app = typer.Typer(
    help="The model registry (MLflow): versions, champion, rollback.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
apikey_app = typer.Typer(help="API keys for tills, web shops and tools.", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")

err = Console(stderr=True)
out = out_console = Console()


class Failure(Exception):
    """A command failed for a reason the user can act on."""


@contextmanager
def progress_bar(label: str) -> Iterator:
    """A progress callback `(task, done, total)` shown as one bar per task on stderr."""
    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        disable=not err.is_terminal,
    ) as bar:
        tasks: dict[str, int] = {}

        def update(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.update(tasks[task], completed=done, total=total)

        yield update


def _engine():
    from oms.db import make_engine

    return make_engine(get_settings().database_url)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations to RECOUP_DATABASE_URL."""
    from oms.migrate import upgrade

    url = get_settings().database_url
    upgrade(url)
    out.print(f"database is up to date: {_safe_url(url)}")


@db_app.command("revision")
def db_revision(message: Annotated[str, typer.Option("--message", "-m")]) -> None:
    """(developers) Autogenerate a migration from the difference between oms/tables.py and the database."""
    from oms.migrate import revision

    revision(get_settings().database_url, message)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A data-contract directory (or, with --format, a file).")],
    fmt: Annotated[
        str, typer.Option("--format", help="'contract' (a directory) or 'uci-online-retail' (the UCI file).")
    ] = "contract",
) -> None:
    """Load a data-contract directory, all or nothing."""
    from oms.importer import import_directory
    from oms.migrate import upgrade

    settings = get_settings()
    if fmt == "uci-online-retail":
        from simulator.uci import convert_uci

        if not path.is_file():
            raise Failure(f"{path}: not a file (expected the UCI Online Retail .parquet, .csv or .xlsx)")
        converted = settings.data_dir / "uci-online-retail"
        report = convert_uci(path, converted)
        out.print(str(report), markup=False, highlight=False)
        path = converted
    elif fmt != "contract":
        raise Failure(f"unknown --format {fmt!r}; expected 'contract' or 'uci-online-retail'")
    upgrade(settings.database_url)
    started = time.perf_counter()
    with progress_bar("import") as progress:
        report = import_directory(path, _engine(), chunk_rows=settings.import_chunk_rows, progress=progress)
    elapsed = time.perf_counter() - started
    for item in report.files:
        out.print(f"{item.table:<14} {item.rows:>10,} rows read  {item.new_rows:>10,} new")
    out.print(
        f"imported {report.rows:,} rows in {elapsed:.1f} s ({report.rows / max(elapsed, 1e-9):,.0f} rows/s)"
    )
    _refresh_snapshots()


def _refresh_snapshots() -> None:
    """Rebuild the product and store snapshots online scoring reads, so that the API computes the
    features the models were trained on (the daily Dagster schedule does the same)."""
    from features.offline import write_product_snapshots

    started = time.perf_counter()
    rows = write_product_snapshots(_engine())
    out.print(
        f"snapshots for online scoring (product_stats, location_stats): {rows:,} rows in "
        f"{time.perf_counter() - started:.1f} s"
    )


@app.command("simulate")
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the data-contract files to.")],
    customers: Annotated[int, typer.Option(min=100, help="Number of customers.")] = 5_000,
    months: Annotated[int, typer.Option(min=1, max=60, help="Months of history.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same retailer.")] = 42,
    start: Annotated[str, typer.Option(help="First day of the history (YYYY-MM-DD).")] = "2024-01-01",
) -> None:
    """Simulate a retailer with planted fraud; ground truth goes to OUT/_truth/."""
    import datetime as dt

    from simulator.retailer import SimulationConfig
    from simulator.retailer import simulate as run

    try:
        first_day = dt.date.fromisoformat(start)
    except ValueError as exc:
        raise Failure(f"--start {start!r} is not a date (YYYY-MM-DD)") from exc
    with err.status("simulating") if err.is_terminal else nullcontext():
        result = run(SimulationConfig(customers=customers, months=months, seed=seed, start=first_day), out)
    for table, rows in result.tables.items():
        out_console.print(f"{table:<14} {rows:>10,} rows")
    figures = result.figures
    out_console.print(
        f"return rate by value {figures['return_rate_by_value']:.1%} (online "
        f"{figures['online_return_rate_by_value']:.1%}, store {figures['store_return_rate_by_value']:.1%}); "
        f"fraud+abuse {figures['fraud_abuse_share_of_returns']:.1%} of returns; "
        f"reviewed {figures['reviewed_share_of_returns']:.1%}"
    )
    out_console.print(f"wrote {out} in {result.seconds:.1f} s (ground truth in {out / '_truth'})")


@app.command("export")
def export(
    directory: Annotated[Path, typer.Argument(help="Where to write the data-contract files.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
) -> None:
    """Write the state tables back out as a data-contract directory."""
    from oms.exporter import export_directory

    if fmt not in ("csv", "parquet"):
        raise Failure(f"unknown --format {fmt!r}; expected csv or parquet")
    with progress_bar("export") as progress:
        written = export_directory(directory, _engine(), fmt=fmt, progress=progress)  # type: ignore[arg-type]
    for table, rows in written.items():
        out.print(f"{table:<14} {rows:>10,} rows")


@app.command("check")
def check() -> None:
    """Check the money and units invariants: no order line, tender or order returned or refunded beyond
    what was bought or paid. Exits 1 and lists each violation if there is any."""
    from oms.invariants import violations

    with _engine().connect() as connection:
        found = violations(connection)
    if found:
        for violation in found[:50]:
            err.print(f"  {violation}", markup=False, highlight=False, soft_wrap=True)
        more = " (the first 50 listed)" if len(found) > 50 else ""
        raise Failure(f"{len(found)} invariant violation{'s' * (len(found) > 1)}{more}")
    out.print("invariants hold: nothing returned or refunded beyond what was bought or paid")


@app.command("skew")
def skew() -> None:
    """Training/serving skew: the features the API served for returns, recomputed offline. Exits 1 and
    lists each feature that differs if any does."""
    from features.skew import serving_skew

    table = serving_skew(_engine())
    if table.empty:
        out.print("no served returns to compare yet (the serving log has none with a return id)")
        return
    compared = int(table["compared"].max())
    wrong = table[table["mismatched"] > 0]
    if len(wrong):
        for row in wrong.itertuples(index=False):
            err.print(
                f"  {row.feature}: {row.mismatched} of {row.compared} differ (largest difference "
                f"{row.max_abs_difference:.4g})",
                markup=False,
                highlight=False,
            )
        raise Failure(
            f"{len(wrong)} of {len(table)} features differ from training on {compared:,} served returns"
        )
    out.print(f"no skew: {len(table)} features agree with training on {compared:,} served returns")


def _mlflow():
    from models import registry

    settings = get_settings()
    registry.configure(settings.mlflow_tracking_uri, settings.mlflow_artifact_root)
    return settings


@app.command("train")
def train() -> None:
    """Train the fraud and recovery models (MLflow runs); each is promoted only if it beats the champion."""
    from models import registry
    from models.training import train_all
    from oms.policy import load_policy

    settings = _mlflow()
    policy = load_policy(settings.policy_path)
    _refresh_snapshots()
    with err.status("training") if err.is_terminal else nullcontext():
        outcomes = train_all(
            _engine(),
            capacity=policy.fraud.review_capacity,
            thresholds=(policy.fraud.review_threshold, policy.fraud.deny_threshold),
            artifact_root=settings.mlflow_artifact_root,
        )
    for outcome in outcomes:
        if outcome.version is None:
            out.print(f"{outcome.model}: no challenger: {outcome.reason}", markup=False, highlight=False)
            continue
        verdict = "promoted to champion" if outcome.promoted else "not promoted"
        out.print(
            f"{outcome.model} version {outcome.version}: {verdict}: {outcome.reason}",
            markup=False,
            highlight=False,
        )
    fraud = outcomes[0].metrics
    if "model_ipw_ap" in fraud:
        interval = lambda name: (  # noqa: E731
            f"{fraud.get(f'{name}_ipw_ap', float('nan')):.3f} "
            f"[{fraud.get(f'{name}_ipw_ap_lo', float('nan')):.3f}, {fraud.get(f'{name}_ipw_ap_hi', float('nan')):.3f}]"
        )
        out.print(
            f"fraud test window, AP re-weighted for how the reviews were chosen (80 % interval): "
            f"challenger {interval('model')}, rules {interval('rules')}"
            + (f", champion {interval('champion')}" if "champion_ipw_ap" in fraud else ""),
            markup=False,
        )
    serving = registry.load_serving()
    if serving.version == "rules":
        out.print(f"fraud scores: the rules scorer serves ({serving.why})", markup=False, highlight=False)
    else:
        out.print(f"fraud scores: {registry.FRAUD_MODEL} version {serving.version} serves", markup=False)
    _print_queue(serving, policy)


def _print_queue(serving, policy) -> None:
    """What the serving scorer's decisions ask of the team at the policy's thresholds."""
    from models.evaluation import expected_queue

    fraud = policy.fraud
    queue = expected_queue(
        serving.score_quantiles, fraud.review_capacity, fraud.review_threshold, fraud.deny_threshold
    )
    if "queue_share" not in queue:
        out.print(
            f"review queue: from score {queue['review_from']:.2f} (no scores of recent returns to size it)"
        )
        return
    out.print(
        f"review queue at the policy (review {fraud.review_threshold}, deny {fraud.deny_threshold}, capacity "
        f"{fraud.review_capacity:.1%}): {queue['queue_share']:.1%} of returns held for review, from score "
        f"{queue['review_from']:.2f} ({queue['queue_share'] / fraud.review_capacity:.1f}x the capacity; the "
        f"review threshold alone would hold {queue['threshold_queue_share']:.1%}); {queue['deny_share']:.1%} denied",
        markup=False,
        highlight=False,
    )


@app.command("score")
def score() -> None:
    """Score every return into return_scores: with the champion fraud model, or with the rules scorer
    (model version "rules") while there is no champion."""
    from features.offline import fraud_features
    from models import registry
    from models.scoring import score_frame, write_scores
    from oms.policy import load_policy

    settings = _mlflow()
    model = registry.load_serving()
    engine = _engine()
    scored = score_frame(model, fraud_features(engine), load_policy(settings.policy_path))
    written = write_scores(engine, model, scored)
    counts = scored["band"].value_counts().to_dict()
    if model.version == "rules":
        out.print(f"scored {written:,} returns with the rules scorer ({model.why}): {counts}", markup=False)
    else:
        out.print(f"scored {written:,} returns with {registry.FRAUD_MODEL} version {model.version}: {counts}")


@models_app.command("list")
def models_list(
    name: Annotated[str, typer.Option(help="recoup-fraud or recoup-recovery")] = "recoup-fraud",
) -> None:
    """Versions with their aliases and headline metrics."""
    from models import registry

    _mlflow()
    found = registry.versions(name)
    if not found:
        out.print(f"{name} has no versions yet")
        return
    for item in found:
        headline = item.metrics.get("model_reviews_average_precision", item.metrics.get("test_mae_per_unit"))
        aliases = ", ".join(item.aliases) or "-"
        shown = f"{headline:.4f}" if headline is not None else "-"
        out.print(
            f"{item.version:>4}  {item.created:%Y-%m-%d %H:%M}  {aliases:<28} headline {shown}", markup=False
        )


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    name: Annotated[str, typer.Option()] = "recoup-fraud",
    reason: Annotated[str, typer.Option(help="Why (kept on the version).")] = "manual promotion",
) -> None:
    """Make a version the champion by hand (the gate is bypassed; the reason is recorded)."""
    from models import registry

    _mlflow()
    registry.promote(version, name=name, reason=reason)
    out.print(f"{name} version {version} is the champion")


@models_app.command("rollback")
def models_rollback(name: Annotated[str, typer.Option()] = "recoup-fraud") -> None:
    """Point the champion back at the previous champion."""
    from models import registry

    _mlflow()
    try:
        version = registry.rollback(name)
    except LookupError as exc:
        raise Failure(str(exc)) from exc
    out.print(f"{name} champion rolled back to version {version}")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option(help="Who uses the key (e.g. 'till-leeds', 'webshop').")],
    scope: Annotated[
        list[str], typer.Option(help="returns:read, returns:write, review or admin; repeat for several.")
    ],
) -> None:
    """Create an API key; the key is printed once (only its hash is stored)."""
    from oms.apikeys import create_key
    from oms.migrate import upgrade
    from oms.uow import unit_of_work

    upgrade(get_settings().database_url)
    with unit_of_work(_engine()) as session:
        key = create_key(session, name, scope)
    out.print(key, markup=False, highlight=False)


@apikey_app.command("revoke")
def apikey_revoke(key_id: Annotated[str, typer.Argument(help="The id part of rk_<id>.<secret>.")]) -> None:
    """Revoke an API key (it stops working within a minute)."""
    from oms.apikeys import revoke
    from oms.uow import unit_of_work

    with unit_of_work(_engine()) as session:
        if not revoke(session, key_id):
            raise Failure(f"no active API key {key_id!r}")
    out.print(f"revoked {key_id}")


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Interface (default RECOUP_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RECOUP_API_PORT).")] = None,
    processes: Annotated[
        int,
        typer.Option(help="API processes sharing the port (uvicorn workers); about one per core."),
    ] = 1,
) -> None:
    """Serve the HTTP API (uvicorn; several processes on one port; more machines behind a load balancer)."""
    import uvicorn

    from oms.migrate import upgrade

    if processes < 1:
        raise Failure(f"--processes must be at least 1, not {processes}")
    settings = get_settings()
    upgrade(settings.database_url)
    if _snapshots_stale():
        _refresh_snapshots()
    # uvicorn's supervisor: the processes share the listening socket, and one that dies is replaced
    uvicorn.run(
        "api.main:app",
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=processes if processes > 1 else None,
    )


def _snapshots_stale() -> bool:
    """Whether orders or returns came in on a day after the newest snapshot's (a snapshot of day D holds
    what happened before 00:00 UTC of D): then the API would read older product rates than training."""
    import datetime as dt

    from sqlalchemy import func, select

    from oms.tables import Order, ProductStats, Return

    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    with _engine().connect() as connection:
        day = connection.execute(select(func.max(ProductStats.day))).scalar_one()
        latest = [
            connection.execute(select(func.max(column))).scalar_one()
            for column in (Order.placed_at, Return.requested_at)
        ]
    latest = [moment for moment in latest if moment is not None]
    if not latest:
        return False
    newest = max(m if m.tzinfo else m.replace(tzinfo=dt.UTC) for m in latest)
    return day is None or newest >= epoch + dt.timedelta(days=int(day) + 1)


@app.command("notify")
def notify(
    once: Annotated[bool, typer.Option("--once", help="Deliver what is due and exit.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between rounds when looping.")] = 2.0,
) -> None:
    """Deliver customer notifications from the outbox to the configured webhooks."""
    from oms.notify import run, targets_from_config

    settings = get_settings()
    targets = targets_from_config(settings.webhook_urls, settings.webhook_secret)
    report = run(_engine(), targets, interval=interval, once=once)
    out.print(str(report), markup=False, highlight=False)


@app.command("demo")
def demo(
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Serve the API, dashboards, Dagster and MLflow after.")
    ] = True,
    data: Annotated[
        str, typer.Option(help="'simulated' (default) or 'uci' (the UCI Online Retail file).")
    ] = "simulated",
    customers: Annotated[int, typer.Option(min=500, help="Size of the simulated retailer.")] = 8_000,
) -> None:
    """Run the main job end to end on the embedded defaults."""
    from recoup.demo import run_demo

    if data not in ("simulated", "uci"):
        raise Failure(f"unknown --data {data!r}; expected 'simulated' or 'uci'")
    run_demo(out, serve=serve, data=data, customers=customers)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _fail(message: str) -> None:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    from pydantic import ValidationError
    from sqlalchemy.exc import SQLAlchemyError

    from oms.errors import ContractError, RecoupError

    try:
        app(standalone_mode=False)
    except ContractError as exc:
        _fail(str(exc))
        for line in exc.details().splitlines()[1:]:
            err.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except (RecoupError, Failure) as exc:
        _fail(str(exc))
        sys.exit(1)
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"configuration: {first['msg']}")
        sys.exit(1)
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        _fail(f"database: {detail}")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and the unexpected: one line, not a traceback
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if os.environ.get("RECOUP_DEBUG"):
            raise
        _fail(f"{type(exc).__name__}: {exc}")
        sys.exit(1)


if __name__ == "__main__":
    main()
