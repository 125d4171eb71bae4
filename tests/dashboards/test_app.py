"""The Streamlit app through `AppTest`, on SQLite and PostgreSQL: every page renders for its role,
filters change what is shown, a decision writes the review and the transition, a second is refused."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from sqlalchemy import text
from streamlit.testing.v1 import AppTest

from dashboards import ui
from dashboards.access import SESSION_KEY
from dashboards.auth import User
from oms.db import make_engine
from tests.dashboards.conftest import ADMIN, ALICE, APP, BOB, MARK, OLGA, PASSWORDS, World

pytestmark = pytest.mark.usefixtures("app_env")

PAGES = {
    "review_queue": "Review queue",
    "return_rates": "Return rates",
    "operations": "Operations",
    "models": "Models",
}


def ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.message for e in at.exception]
    return at


def run(at: AppTest) -> AppTest:
    return ok(at.run())


def open_app(user: User | None, page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    if user is not None:
        at.session_state[SESSION_KEY] = user
    run(at)
    if page is not None:
        at.switch_page(f"app_pages/{page}.py")
        run(at)
        assert at.title[0].value == PAGES[page]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def number(at: AppTest, label: str) -> float:
    return float(metric(at, label).replace(",", "").rstrip("%"))


def table(at: AppTest, column: str) -> pd.DataFrame:
    """The first dataframe on the page that has `column`."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def query(url: str, sql: str, **params) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql), params))
    finally:
        engine.dispose()


# --- every page --------------------------------------------------------------------------------------


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_renders_for_an_admin(page: str) -> None:
    at = open_app(ADMIN, page)
    assert at.metric or at.dataframe, f"{page} shows no figures"
    run(at)  # a rerun (cached loaders) renders the same page without error
    assert at.title[0].value == PAGES[page]
    # the grid draws a missing value as "None": every table shows "–" instead (the browser cannot read
    # the grid's canvas, so this is checked here)
    for shown in at.dataframe:
        frame = shown.value
        progress = [c for c in frame.columns if frame[c].dtype.kind == "f" and c in ("score", "push")]
        holes = frame.drop(columns=progress).isna().any()
        assert not holes.any(), f"{page}: missing values shown as None in {list(holes[holes].index)}"


def test_each_role_gets_its_pages_only() -> None:
    cases = {
        ADMIN: ["Review queue", "Return rates", "Operations", "Models"],
        ALICE: ["Review queue", "Models"],
        MARK: ["Return rates"],
        OLGA: ["Operations"],
    }
    for user, titles in cases.items():
        home = open_app(user)
        assert home.title[0].value == "Recoup"
        assert [link.label for link in home.page_link] == titles
    # a page the role does not open is not in the navigation, and the page refuses it by itself
    with pytest.raises(ValueError):
        open_app(MARK, "review_queue")
    direct = AppTest.from_file(str(APP.parent / "app_pages" / "review_queue.py"), default_timeout=60)
    direct.session_state[SESSION_KEY] = MARK
    run(direct)
    assert any("needs the role analyst" in e.value for e in direct.error)
    assert not direct.dataframe


def test_password_sign_in() -> None:
    at = run(AppTest.from_file(str(APP), default_timeout=60))
    assert at.title[0].value == "Recoup" and not at.dataframe
    at.text_input(key="sign_in_username").input("alice")
    at.text_input(key="sign_in_password").input("wrong password")
    run(at.button[0].click())
    assert any("wrong password" in e.value for e in at.error)
    assert SESSION_KEY not in at.session_state
    at.text_input(key="sign_in_username").input("alice")
    at.text_input(key="sign_in_password").input(PASSWORDS["alice"])
    run(at.button[0].click())
    assert at.session_state[SESSION_KEY].name == "alice"
    assert [link.label for link in at.page_link] == ["Review queue", "Models"]
    at.switch_page("app_pages/review_queue.py")
    run(at)
    assert at.title[0].value == "Review queue"
    run(at.button(key="sign_out").click())
    assert SESSION_KEY not in at.session_state
    assert at.text_input(key="sign_in_username") is not None and not at.page_link


def test_repeated_failures_lock_the_user_name() -> None:
    at = run(AppTest.from_file(str(APP), default_timeout=60))
    for _ in range(5):
        at.text_input(key="sign_in_username").input("bob")
        at.text_input(key="sign_in_password").input("not bob's password")
        run(at.button[0].click())
    at.text_input(key="sign_in_username").input("bob")
    at.text_input(key="sign_in_password").input(PASSWORDS["bob"])
    run(at.button[0].click())
    assert any("Too many failed sign-ins" in e.value for e in at.error)
    assert SESSION_KEY not in at.session_state


def test_removing_a_user_ends_their_session(world: World, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = tmp_path / "users.toml"
    users.write_text(world.users_file.read_text())
    monkeypatch.setenv("RECOUP_DASHBOARD_USERS", str(users))
    at = open_app(MARK, "return_rates")
    text_without_mark = world.users_file.read_text().replace("[users.mark]", "[users.mark_old]")
    users.write_text(text_without_mark)
    run(at)
    assert SESSION_KEY not in at.session_state
    assert at.title[0].value == "Recoup" and not at.dataframe


def test_oidc_identity_gets_the_roles_of_its_email() -> None:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["auth"] = {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "x" * 32,
        "client_id": "recoup",
        "client_secret": "secret",
        "server_metadata_url": "https://sso.example.com/.well-known/openid-configuration",
    }
    run(at)
    assert any(b.label == "Sign in with single sign-on" for b in at.button)
    at.user = {"is_logged_in": True, "email": "sso@example.com", "name": "Sam"}
    run(at)
    assert at.session_state[SESSION_KEY].name == "sso@example.com"
    assert len(at.page_link) == 4  # the users file makes this email an admin
    stranger = AppTest.from_file(str(APP), default_timeout=60)
    stranger.secrets["auth"] = at.secrets["auth"]
    stranger.user = {"is_logged_in": True, "email": "nobody@example.com"}
    run(stranger)
    assert any("no dashboard role" in e.value for e in stranger.error)


# --- review queue --------------------------------------------------------------------------------------


def test_queue_holds_open_undecided_returns_pending_first_then_by_score(world: World) -> None:
    at = open_app(ALICE, "review_queue")
    queue = table(at, "expected_loss")
    total = number(at, "Flagged, undecided")
    assert total == len(queue) > 20
    pending = (queue["status"] == "pending review").to_numpy()
    assert pending.any() and not pending[pending.argmin() :].any()  # held for review first
    for _, group in queue.groupby(pending):
        scores = group["score"].dropna()
        assert scores.is_monotonic_decreasing
        for _, tied in group.groupby("score"):
            assert tied["value"].is_monotonic_decreasing  # ties by value
    assert not set(queue["status"]) & {"completed", "rejected", "cancelled", "expired"}
    decided = query(at_url(at), "SELECT return_id FROM fraud_reviews WHERE source <> 'chargeback'")
    assert not queue["return_id"].isin({row[0] for row in decided}).any()
    (dates,) = [d for d in at.date_input if d.key == "queue_dates"]
    assert dates.value[1] >= dt.date.today()  # the default filter ends today
    channel = queue["channel"].value_counts().index[-1]
    at.multiselect(key="queue_channels").set_value([channel])
    run(at)
    filtered = table(at, "expected_loss")
    assert set(filtered["channel"]) == {channel} and number(at, "Flagged, undecided") < total
    at.multiselect(key="queue_channels").set_value([])
    location = queue["location_id"].value_counts().index[0]
    at.multiselect(key="queue_locations").set_value([location])
    run(at)
    assert set(table(at, "expected_loss")["location_id"]) == {location}
    at.multiselect(key="queue_locations").set_value([])
    middle = queue["requested_at"].sort_values().iloc[len(queue) // 2].date()
    at.date_input(key="queue_dates").set_value((middle, middle + dt.timedelta(days=30)))
    run(at)
    dated = table(at, "expected_loss")
    assert 0 < len(dated) < total
    assert dated["requested_at"].dt.date.between(middle, middle + dt.timedelta(days=30)).all()


def at_url(at: AppTest | None) -> str:
    from oms.settings import get_settings

    return get_settings().database_url


def test_detail_shows_reasons_lines_timeline_and_links(world: World) -> None:
    at = open_app(ALICE, "review_queue")
    queue = table(at, "expected_loss")
    known = queue[(queue["customer_id"] != "–") & (queue["order_id"] != "–")]["return_id"].iloc[0]
    at.selectbox(key="queue_return").set_value(known)
    run(at)
    reasons = table(at, "reason")
    assert len(reasons) >= 1 and reasons["reason"].str.len().min() > 10  # sentences, not feature names
    lines = table(at, "line_no")
    assert len(lines) >= 1 and lines["value"].gt(0).all()
    timeline = table(at, "event")
    assert {"order", "return"} <= set(timeline["event"])
    assert known in set(timeline["id"])
    assert [h.value for h in at.header][-1] == "Customer"


def test_decision_writes_the_review_and_the_transition(world: World) -> None:
    return_id = world.pending[0]
    at = open_app(ALICE, "review_queue")
    at.selectbox(key="queue_return").set_value(return_id)
    run(at)
    assert metric(at, "Status") == "pending review"
    assert any("fraud** or **abuse** rejects it" in m.value for m in at.markdown)  # the effect, said first
    run(at.button(key="decide_fraud").click())  # without a fraud type: refused, nothing written
    assert any("choose the fraud type of this fraud first" in e.value for e in at.error)
    assert not query(at_url(at), "SELECT 1 FROM fraud_reviews WHERE return_id = :r", r=return_id)
    at.selectbox(key="queue_return").set_value(return_id)
    at.selectbox(key="decision_fraud_type").set_value("wardrobing")
    at.text_area(key="decision_note").input("worn, tags re-attached")
    run(at.button(key="decide_fraud").click())
    assert any(f"Recorded fraud for {return_id} as alice" in s.value for s in at.success)
    assert return_id not in set(table(at, "expected_loss")["return_id"])
    url = at_url(at)
    reviews = query(
        url,
        "SELECT outcome, fraud_type, source, reviewer, note FROM fraud_reviews WHERE return_id = :r",
        r=return_id,
    )
    assert [tuple(r) for r in reviews] == [
        ("fraud", "wardrobing", "model_flag", "alice", "worn, tags re-attached")  # from the model's queue
    ]
    (status,) = query(url, "SELECT status FROM returns WHERE return_id = :r", r=return_id)[0]
    assert status == "rejected"
    events = query(
        url,
        "SELECT actor, from_status, to_status FROM return_events WHERE return_id = :r ORDER BY seq",
        r=return_id,
    )
    assert ("alice", "pending_review", "rejected") in [tuple(e) for e in events]


def test_fraud_on_an_authorised_return_says_and_holds_its_refund(world: World) -> None:
    at = open_app(ALICE, "review_queue")
    queue = table(at, "expected_loss")
    authorised = queue[queue["status"] == "authorized"]["return_id"].tolist()
    assert authorised, "the test world's queue holds no authorised return"
    return_id = authorised[-1]
    at.selectbox(key="queue_return").set_value(return_id)
    run(at)
    assert any("**fraud** or **abuse** holds its refund" in m.value for m in at.markdown)
    at.selectbox(key="decision_fraud_type").set_value("empty_box")
    run(at.button(key="decide_abuse").click())
    assert any(
        f"Recorded abuse for {return_id}" in s.value and "stays authorized; its refund is held" in s.value
        for s in at.success
    )
    (status,) = query(at_url(at), "SELECT status FROM returns WHERE return_id = :r", r=return_id)[0]
    assert status == "authorized"


def test_a_second_decision_on_the_same_return_is_refused(world: World) -> None:
    return_id = world.pending[1]
    alice, bob = open_app(ALICE, "review_queue"), open_app(BOB, "review_queue")
    for at in (alice, bob):
        at.selectbox(key="queue_return").set_value(return_id)
        run(at)
    run(alice.button(key="decide_legitimate").click())
    assert any("authorized" in s.value for s in alice.success)
    bob.selectbox(key="decision_fraud_type").set_value("empty_box")  # the contract's list
    run(bob.button(key="decide_fraud").click())  # Bob still sees the return he opened before
    assert any(f"return {return_id} was already decided by alice" in e.value for e in bob.error)
    assert not bob.success
    url = at_url(bob)
    reviews = query(url, "SELECT outcome, reviewer FROM fraud_reviews WHERE return_id = :r", r=return_id)
    assert [tuple(r) for r in reviews] == [("legitimate", "alice")]
    (status,) = query(url, "SELECT status FROM returns WHERE return_id = :r", r=return_id)[0]
    assert status == "authorized"


# --- return rates --------------------------------------------------------------------------------------


def test_return_rates_dimension_filters_and_drill_down() -> None:
    at = open_app(MARK, "return_rates")
    categories = table(at, "dimension_value")
    assert len(categories) >= 5 and categories["return_rate_units"].is_monotonic_decreasing
    mature_units = categories["units_sold"].sum()
    at.toggle(key="rr_mature").set_value(False)
    run(at)
    assert table(at, "dimension_value")["units_sold"].sum() > mature_units
    at.selectbox(key="rr_dimension").set_value("channel")
    run(at)
    assert set(table(at, "dimension_value")["dimension_value"]) <= {
        "web",
        "app",
        "store",
        "marketplace",
        "phone",
    }
    at.selectbox(key="rr_dimension").set_value("style_id")
    run(at)
    styles = table(at, "dimension_value")
    at.number_input(key="rr_min_units").set_value(int(styles["units_sold"].median()) + 1)
    run(at)
    assert 0 < len(table(at, "dimension_value")) < len(styles)
    style = table(at, "dimension_value")["dimension_value"].iloc[0]
    at.selectbox(key="rr_item_style_id").set_value(style)
    run(at)
    assert any(f"Why {style} comes back" in m.value for m in at.markdown)
    assert table(at, "fit_rate")["units_sold"].sum() > 0  # the style's sizes


def test_abnormal_items_and_fit_signals() -> None:
    at = open_app(MARK, "return_rates")
    flagged = table(at, "excess_value_refunded")
    assert flagged["flagged"].all() and flagged["excess_value_refunded"].is_monotonic_decreasing
    at.toggle(key="ab_flagged_only").set_value(False)
    run(at)
    assert len(table(at, "excess_value_refunded")) > len(flagged)
    at.radio(key="ab_level").set_value("sku")
    run(at)
    skus = table(at, "excess_value_refunded")
    assert (skus["item_id"] != skus["style_id"]).all()
    at.multiselect(key="fit_signals").set_value(["ok"])
    run(at)
    fit = table(at, "fit_signal")
    assert set(fit["fit_signal"]) == {"ok"}


# --- operations ----------------------------------------------------------------------------------------


def test_operations_location_filter() -> None:
    at = open_app(OLGA, "operations")
    everywhere = sum(
        number(at, status) for status in ("Completed", "Rejected") if status in [m.label for m in at.metric]
    )
    limbo_all = number(at, "Lines in limbo")
    assert limbo_all > 0
    busiest = table(at, "age_days")["location_id"].value_counts().index[0]
    at.selectbox(key="ops_location").set_value(busiest)
    run(at)
    here = sum(
        number(at, status) for status in ("Completed", "Rejected") if status in [m.label for m in at.metric]
    )
    assert 0 < here < everywhere
    assert set(table(at, "age_days")["location_id"]) == {busiest}
    assert 0 < number(at, "Lines in limbo") <= limbo_all
    stages = table(at, "p50_days")
    assert stages.loc[stages["stage"] == "request to receipt", "observations"].iloc[0] > 0
    assert (stages["observations"] > 0).all()  # stages without events are said in words, not listed


# --- models --------------------------------------------------------------------------------------------


def test_models_page_shows_the_champion_drift_and_backtest() -> None:
    at = open_app(ALICE, "models")
    assert 0 < number(at, "Average precision (reviews)") <= 1
    metrics = table(at, "labelled returns")
    assert (metrics["labelled returns"] > 0).all()  # every figure says its sample size
    audit = metrics[metrics["holdout"] == "audit"]["labelled returns"].iloc[0]
    rough = any("are rough" in c.value for c in at.caption)
    assert rough == bool((metrics["labelled returns"] < 100).any()), (audit, rough)
    assert "champion" in " ".join(c.value for c in at.caption) or at.metric
    assert number(at, "Shifted features") + number(at, "Moderate") + number(at, "Stable") > 50
    # the queue the champion fills at the policy's thresholds, sized to the team
    assert 1.0 <= number(at, "Share of returns held") <= 4.0  # 0.5x-2x the 2 % capacity
    assert number(at, "Held for review a day") > 0
    assert number(at, "Queue starts at score") >= 0.2
    assert any("the review threshold alone would hold" in c.value for c in at.caption)
    flagged_default = number(at, "Flagged")
    at.slider(key="bt_threshold").set_value(0.1)
    run(at)
    assert number(at, "Flagged") > flagged_default
    at.slider(key="bt_threshold").set_value(0.9)
    run(at)
    assert number(at, "Flagged") < flagged_default
    run(at.radio(key="bt_mode").set_value("capacity"))
    at.number_input(key="bt_capacity").set_value(2.0)
    at.radio(key="bt_history").set_value("all")
    run(at)
    returns = table(at, "flagged_per_week")
    assert returns["flagged"].iloc[0] > 0
    assert any("capacity 2.0 %" in m.value for m in at.markdown)
    assert any("No serving log yet" in i.value for i in at.info), [i.value for i in at.info]


def test_models_page_without_a_registered_champion(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from oms.settings import get_settings

    monkeypatch.setenv("RECOUP_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty-mlflow.db'}")
    get_settings.cache_clear()
    at = open_app(ADMIN, "models")
    assert any("The rules scorer serves" in i.value for i in at.info), [i.value for i in at.info]
    assert number(at, "Flagged") > 0  # the newest scores are still shown and replayed


def test_without_a_champion_the_pages_show_the_rules_scorers_scores(
    monkeypatch: pytest.MonkeyPatch, tmp_path, world: World
) -> None:
    from models.rules import RulesScorer
    from models.scoring import score_frame, write_scores
    from oms.policy import load_policy
    from oms.settings import DEFAULT_POLICY_PATH, get_settings

    monkeypatch.setenv("RECOUP_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty-mlflow.db'}")
    get_settings.cache_clear()
    rules = RulesScorer()
    engine = make_engine(at_url(None))
    write_scores(engine, rules, score_frame(rules, world.features, load_policy(DEFAULT_POLICY_PATH)))
    engine.dispose()
    at = open_app(ALICE, "review_queue")
    assert any("the rules scorer" in c.value for c in at.caption), [c.value for c in at.caption]
    at = open_app(ADMIN, "models")
    assert any("no fraud model has been trained yet" in i.value for i in at.info)
    assert table(at, "weight (log-odds when hit)")["rule"].tolist() == [ui.label(r) for r in rules.weights]


def test_models_page_compares_served_scores_and_features(world: World) -> None:
    from features.skew import serving_skew

    url = at_url(None)
    engine = make_engine(url)
    sample = world.features.sample(5, random_state=3)
    batch = world.scored.set_index("return_id")["score"]
    rows = []
    for position, row in enumerate(sample.itertuples(index=False)):
        served = {
            name: (None if pd.isna(value) else float(value))
            for name, value in row._asdict().items()
            if name not in ("return_id", "requested_at")
        }
        if position == 0:
            served["return_value"] = (served["return_value"] or 0.0) + 1.0  # one feature served differently
        rows.append(
            {
                "served_at": dt.datetime.now(dt.UTC),
                "requested_at": row.requested_at.to_pydatetime(),
                "return_id": row.return_id,
                "model_version": world.model.version,
                "score": float(batch[row.return_id]) + (0.05 if position == 0 else 0.0),
                "decision": "approve",
                "degraded": False,
                "latency_ms": 3.0 + position,
                "features": served,
            }
        )
    from oms.tables import ServingLog

    try:
        with engine.begin() as connection:
            connection.execute(ServingLog.__table__.insert(), rows)
        skew = serving_skew(engine)
        with engine.begin() as connection:
            skew.to_sql("analytics_serving_skew", connection, if_exists="replace", index=False)
        at = open_app(ALICE, "models")
        assert number(at, "Returns compared") == 5
        assert number(at, "Differ by > 0.01") == pytest.approx(20.0)
        assert metric(at, "Versions served") == world.model.version
        assert any("1 of" in m.value and "features differ" in m.value for m in at.markdown)
        assert table(at, "mismatched").set_index("feature").loc["return value", "mismatched"] == 1
    finally:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM serving_log"))
            connection.execute(text("DROP TABLE IF EXISTS analytics_serving_skew"))
        engine.dispose()
