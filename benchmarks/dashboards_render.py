"""Render time of every dashboard page (Streamlit's AppTest, in process) against a given database.

    python benchmarks/dashboards_render.py --url postgresql://postgres@127.0.0.1:5432/recoup \
        [--var-dir DIR] [--repeat 3]

Signs in with the test-only bypass (RECOUP_DASHBOARD_AUTOLOGIN=admin). The process is warmed first (every
page rendered once: imports, engine, MLflow client), then each page is timed with an empty data cache
("cold": every loader queries the database) and again with the cache filled ("warm", median of
--repeat), followed by the interactions that query again (another return, another dimension...). Feature drift,
which recomputes every return's features, is on request on big histories: timed last, separately.
MLflow is read from the settings (RECOUP_VAR_DIR / RECOUP_MLFLOW_TRACKING_URI). Target: < 2 s per page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
APP = ROOT / "dashboards" / "app.py"
PAGES = {
    "Review queue": "app_pages/review_queue.py",
    "Return rates": "app_pages/return_rates.py",
    "Operations": "app_pages/operations.py",
    "Models": "app_pages/models.py",
}
TIMEOUT = 300


def _another_return(at):
    queue = at.dataframe[0].value  # the queue table, by expected loss
    return at.selectbox(key="queue_return").set_value(queue["return_id"].iloc[min(1, len(queue) - 1)])


def _busiest_location(at):
    return at.selectbox(key="ops_location").set_value(BUSIEST_LOCATION[0])


BUSIEST_LOCATION: list[str] = []


# Interactions per page that make the loaders query again (cache empty for their new arguments).
INTERACTIONS: dict[str, list[tuple[str, Callable]]] = {
    "Review queue": [
        ("select another return", _another_return),
        ("filter: band critical", lambda at: at.multiselect(key="queue_bands").set_value(["critical"])),
    ],
    "Return rates": [
        ("dimension: SKU", lambda at: at.selectbox(key="rr_dimension").set_value("sku")),
        (
            "abnormal items: SKU level, all",
            lambda at: (
                at.radio(key="ab_level").set_value("sku"),
                at.toggle(key="ab_flagged_only").set_value(False),
            ),
        ),
    ],
    "Operations": [
        ("one location", _busiest_location),
    ],
    "Models": [
        (
            "backtest by capacity, all history",
            lambda at: (
                at.radio(key="bt_mode").set_value("capacity"),
                at.radio(key="bt_history").set_value("all"),
            ),
        ),
    ],
}


def _run(at) -> float:
    started = time.perf_counter()
    at.run(timeout=TIMEOUT)
    elapsed = time.perf_counter() - started
    if at.exception:
        raise RuntimeError(f"the page raised: {at.exception[0].message}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="database URL (RECOUP_DATABASE_URL)")
    parser.add_argument("--var-dir", default=None, help="RECOUP_VAR_DIR (where the MLflow store is)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ["RECOUP_DATABASE_URL"] = args.url
    os.environ["RECOUP_DASHBOARD_AUTOLOGIN"] = "admin"
    os.environ.setdefault("RECOUP_ENV", "development")
    if args.var_dir:
        os.environ["RECOUP_VAR_DIR"] = args.var_dir

    import streamlit as st
    from sqlalchemy import text
    from streamlit.testing.v1 import AppTest

    from oms.db import make_engine
    from oms.settings import get_settings

    get_settings.cache_clear()
    engine = make_engine(args.url)
    with engine.connect() as connection:
        lines = connection.execute(text("SELECT COUNT(*) FROM order_lines")).scalar_one()
        returns = connection.execute(text("SELECT COUNT(*) FROM returns")).scalar_one()
        BUSIEST_LOCATION.append(
            connection.execute(
                text(
                    "SELECT location_id FROM returns WHERE location_id IS NOT NULL "
                    "GROUP BY location_id ORDER BY COUNT(*) DESC LIMIT 1"
                )
            ).scalar_one()
        )
    engine.dispose()
    print(f"database: {engine.url.render_as_string()} ({lines:,} order lines, {returns:,} returns)")

    started = time.perf_counter()
    warm_up = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    _run(warm_up)
    for path in PAGES.values():
        warm_up.switch_page(path)
        _run(warm_up)
    print(
        f"process warm-up (imports, first queries, all pages once): {time.perf_counter() - started:.1f} s\n"
    )

    print(f"{'page':<14} {'cold':>7} {'warm':>7}   interactions (cold)")
    worst = 0.0
    models = None
    for title, path in PAGES.items():
        st.cache_data.clear()
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
        _run(at)  # the home page, so that switch_page resolves st.navigation's pages
        st.cache_data.clear()
        at.switch_page(path)
        cold = _run(at)
        warm = statistics.median(_run(at) for _ in range(args.repeat))
        steps = []
        for label, act in INTERACTIONS[title]:
            act(at)
            elapsed = _run(at)
            worst = max(worst, elapsed)
            steps.append(f"{label} {elapsed:.2f} s")
        worst = max(worst, cold)
        print(f"{title:<14} {cold:>6.2f}s {warm:>6.2f}s   {'; '.join(steps)}")
        models = at if title == "Models" else models
    print(f"\nslowest cold render or interaction: {worst:.2f} s (target < 2 s)")
    drift = [b for b in models.button if b.key == "models_drift_run"] if models is not None else []
    if drift:
        drift[0].click()
        print(
            f"feature drift on request (recomputes every return's features, then cached 1 h): {_run(models):.1f} s"
        )
        print(f"the same, cached: {_run(models):.2f} s")


if __name__ == "__main__":
    main()
