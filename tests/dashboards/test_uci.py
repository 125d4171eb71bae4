"""The merchandising and operations pages on real data without sizes, stores or reasons: the first months
of UCI Online Retail (one warehouse, reason "other", no scores, no fraud reviews)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboards.access import SESSION_KEY
from features import analytics
from oms.db import make_engine
from oms.importer import import_directory
from oms.settings import get_settings
from simulator.uci import convert_uci
from tests.conftest import IN_CI
from tests.dashboards.conftest import APP

UCI_FILE = Path(
    os.environ.get("RECOUP_UCI_FILE", "/work/shared/data/uci_online_retail/online_retail.parquet")
)
ROWS = 100_000  # about the first three months of invoices

if not UCI_FILE.is_file():
    message = f"the UCI Online Retail file is not at {UCI_FILE} (set RECOUP_UCI_FILE)"
    if IN_CI:
        raise RuntimeError(message)
    pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="module")
def uci_url(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> str:
    base = tmp_path_factory.mktemp("uci-dashboards")
    pd.read_parquet(UCI_FILE).head(ROWS).to_parquet(base / "subset.parquet")
    convert_uci(base / "subset.parquet", base / "contract")
    shutil.copyfile(sqlite_template, base / "recoup.db")
    url = f"sqlite:///{base / 'recoup.db'}"
    engine = make_engine(url)
    import_directory(base / "contract", engine)
    analytics.write_all(engine, analytics.build_all(analytics.load_inputs(engine)))
    engine.dispose()
    return url


@pytest.fixture
def app(uci_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("RECOUP_DATABASE_URL", uci_url)
    monkeypatch.setenv("RECOUP_DASHBOARD_AUTOLOGIN", "admin")  # the test-only bypass
    get_settings.cache_clear()
    st.cache_data.clear()

    def open_page(page: str) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
        assert at.session_state[SESSION_KEY].via == "autologin"
        at.switch_page(f"app_pages/{page}.py").run()
        assert not at.exception, [e.message for e in at.exception]
        return at

    return open_page


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_return_rates_on_uci(app) -> None:
    at = app("return_rates")
    categories = frame_with(at, "dimension_value")
    assert len(categories) >= 3 and categories["units_returned"].sum() > 0
    for dimension, expected in (("location_id", {"UK-WH"}), ("reason", {"other"}), ("size", {"(none)"})):
        at.selectbox(key="rr_dimension").set_value(dimension).run()
        assert not at.exception
        assert set(frame_with(at, "dimension_value")["dimension_value"]) == expected
    at.selectbox(key="rr_dimension").set_value("category").run()
    category = frame_with(at, "dimension_value")["dimension_value"].iloc[0]
    at.selectbox(key="rr_item_category").set_value(category).run()
    assert not at.exception
    assert any(f"Why {category} comes back" in m.value for m in at.markdown)
    assert any("No sized products" in i.value for i in at.info)


def test_operations_and_scoreless_pages_on_uci(app) -> None:
    operations = app("operations")
    assert any(m.label == "Completed" for m in operations.metric)
    queue = app("review_queue")
    assert any("No return has been scored yet" in i.value for i in queue.info)
    models = app("models")
    assert any("No return has been scored yet" in i.value for i in models.info)
