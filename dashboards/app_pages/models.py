"""Models: the champion and its metrics (MLflow), scores over time, feature drift (PSI), serving skew, and
the policy backtest (a review threshold or capacity replayed on scored, reviewed history)."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboards import access, data, monitoring, ui

AUTO_DRIFT_RETURNS = (
    50_000  # above this many returns feature drift is computed on request (it recomputes features)
)
SCORE_BINS_SHOWN = 20
SAMPLE_MIN = 100  # figures on fewer labelled returns are flagged as rough
TRADE_OFF = {
    "precision_reviewed": "precision (reviews)",
    "precision_audit": "precision (audit)",
    "value_caught_share": "fraud value caught",
    "flagged_share": "share of returns flagged",
}
METRICS = {
    "average_precision": "average precision",
    "roc_auc": "ROC AUC",
    "precision_at_capacity": "precision at capacity",
    "recall_at_capacity": "recall at capacity",
    "value_caught_at_capacity": "fraud value caught at capacity",
    "calibration_error": "calibration error",
}

access.require("models")
url = data.database_url()
st.title("Models")

registry = data.current_registry()
versions = data.scored_versions(url)
if registry.error:
    st.warning(f"The MLflow store at {registry.tracking_uri} could not be read: {registry.error}")

# --- champion ----------------------------------------------------------------------------------------

st.header("What scores fraud")
if registry.champion is None:
    rules = registry.rules or {}
    st.info(
        "**The rules scorer serves** (model version `rules`): "
        + (rules.get("why") or f"no champion fraud model in the registry at {registry.tracking_uri}")
        + ". It is the legacy rules, each weighted "
        + (
            f"by what {rules.get('labels', 0):,} labelled returns say"
            if rules.get("fitted")
            else "by a prior (too few labels to fit them)"
        )
        + "; a model replaces it when one beats it with confidence."
    )
    if rules.get("weights"):
        ui.dataframe(
            pd.DataFrame(
                {
                    "rule": list(rules["weights"]),
                    "weight (log-odds when hit)": list(rules["weights"].values()),
                }
            ),
            hide_index=True,
            key="models_rules",
        )
else:
    metrics = registry.metrics.get(registry.champion, {})
    created = registry.versions.loc[registry.versions["version"] == registry.champion, "created"]
    st.caption(
        f"recoup-fraud version {registry.champion}"
        + (f", registered {created.iloc[0]:%Y-%m-%d %H:%M} UTC" if len(created) else "")
        + "; metrics on its holdout (the test period after the label delay)."
    )
    cells = st.columns(4)
    cells[0].metric(
        "Average precision (reviews)",
        ui.number(metrics.get("model_reviews_average_precision"), 3),
        delta=f"{metrics.get('model_reviews_average_precision', 0) - metrics.get('rules_reviews_average_precision', 0):+.3f} vs rules",
    )
    audited = int(metrics.get("model_audit_labelled", 0) or 0)
    few = f"on {audited:,} audited returns" + (": rough, fewer than 100" if audited < SAMPLE_MIN else "")
    cells[1].metric(
        "Average precision (audit)",
        ui.number(metrics.get("model_audit_average_precision"), 3),
        delta=few,
        delta_color="off",
    )
    cells[2].metric(
        "Precision at capacity (audit)",
        ui.percent(metrics.get("model_audit_precision_at_capacity")),
        delta=few,
        delta_color="off",
    )
    cells[3].metric(
        "Fraud value caught at capacity (reviews)",
        ui.percent(metrics.get("model_reviews_value_caught_at_capacity")),
    )
    rows = []
    for scorer in ("model", "rules", "champion"):
        for subset in ("reviews", "audit"):
            row = {"scorer": scorer if scorer != "champion" else "previous champion", "holdout": subset}
            row.update({label: metrics.get(f"{scorer}_{subset}_{key}") for key, label in METRICS.items()})
            if any(v is not None for k, v in row.items() if k not in ("scorer", "holdout")):
                row["labelled returns"] = int(metrics.get(f"{scorer}_{subset}_labelled", 0) or 0)
                row["of them fraud or abuse"] = int(metrics.get(f"{scorer}_{subset}_positives", 0) or 0)
                rows.append(row)
    ui.dataframe(pd.DataFrame(rows), hide_index=True, key="models_metrics")
    thin = sorted({r["holdout"] for r in rows if r["labelled returns"] < SAMPLE_MIN})
    if thin:
        st.caption(
            f"Figures on fewer than {SAMPLE_MIN} labelled returns ({', '.join(thin)}) are rough: a few "
            "returns more or less would move them a lot. The re-weighted intervals below say how much."
        )
    intervals = [
        {
            "scorer": {
                "model": "champion",
                "challenger": "champion, on returns the one it replaced never learned from",
                "champion": "the champion it replaced, on the same returns",
            }.get(scorer, scorer),
            "re-weighted AP": metrics[f"{scorer}_ipw_ap"],
            "80 % interval": f"{ui.number(metrics.get(f'{scorer}_ipw_ap_lo'), 3)} to "
            f"{ui.number(metrics.get(f'{scorer}_ipw_ap_hi'), 3)}",
        }
        for scorer in ("model", "rules", "challenger", "champion")
        if f"{scorer}_ipw_ap" in metrics
    ]
    if intervals:
        st.caption(
            "On the test window, every labelled return weighted by how the reviews were chosen (inverse "
            "propensity by rules hit), with bootstrap intervals: a challenger is promoted only when its "
            "lead over the champion (or the rules) is above 0 over the whole interval."
        )
        ui.dataframe(pd.DataFrame(intervals), hide_index=True, key="models_intervals")
    with st.expander("All registered versions"):
        listing = registry.versions.copy()
        listing["average precision (reviews)"] = listing["version"].map(
            lambda v: registry.metrics.get(v, {}).get("model_reviews_average_precision")
        )
        ui.dataframe(listing, hide_index=True, key="models_versions")

# --- the review queue it fills -----------------------------------------------------------------------

policy = data.current_policy()
fraud_policy = policy.fraud
first, last, returns_count = data.returns_span(url)
days = max((last - first) / pd.Timedelta(days=1), 1.0) if first is not None and last is not None else None
if registry.champion is not None:
    queue = registry.metrics.get(registry.champion, {})
    queue_source = "its test window"
else:
    from models.evaluation import expected_queue

    quantiles = (registry.rules or {}).get("score_quantiles") or []
    queue = expected_queue(
        np.asarray(quantiles, dtype=float),
        fraud_policy.review_capacity,
        fraud_policy.review_threshold,
        fraud_policy.deny_threshold,
    )
    queue_source = "the last 120 days of returns"
if "queue_share" in queue and days:
    per_day = returns_count / days
    st.subheader("The review queue it fills")
    cells = st.columns(4)
    cells[0].metric(
        "Held for review a day",
        f"{queue['queue_share'] * per_day:,.1f}",
        delta=f"capacity {fraud_policy.review_capacity * per_day:,.1f}",
        delta_color="off",
    )
    cells[1].metric("Share of returns held", ui.percent(queue["queue_share"]))
    cells[2].metric("Denied a day", f"{queue['deny_share'] * per_day:,.1f}")
    cells[3].metric("Queue starts at score", f"{queue['review_from']:.2f}")
    st.caption(
        f"Expected at the policy's thresholds (review {fraud_policy.review_threshold}, deny "
        f"{fraud_policy.deny_threshold}, capacity {fraud_policy.review_capacity:.1%} of returns) on "
        f"{queue_source}, at this retailer's {per_day:,.1f} returns a day. Scores are probabilities over "
        f"every return; the review threshold alone would hold {ui.percent(queue['threshold_queue_share'])}"
        " of returns, so the queue keeps the highest scores below the deny threshold up to the capacity."
    )

if versions.empty:
    st.info("No return has been scored yet (`recoup score`): nothing more to show.")
    st.stop()

default = data.scored_model(url, registry_=registry)
labels = {
    f"{row.model_name}|{row.model_version}": f"{row.model_name} {row.model_version} · {row.returns:,} returns scored "
    f"{row.scored_at:%Y-%m-%d}"
    for row in versions.itertuples()
}
chosen = st.selectbox(
    "Scores of",
    list(labels),
    index=list(labels).index(f"{default.model_name}|{default.model_version}") if default else 0,
    format_func=labels.get,
    key="models_version",
)
model_name, model_version = chosen.split("|", 1)
if registry.champion is not None and default is not None and not default.is_champion:
    st.warning(
        f"The champion (version {registry.champion}) has no scores in this database yet: run `recoup score`."
    )

params = registry.params.get(model_version, {})
if "split_train_end" in params:
    split_source = "the model's MLflow run"
    train_end = pd.Timestamp(params["split_train_end"])
    test_start = pd.Timestamp(params.get("split_test_start", params["split_train_end"]))
else:
    from models.evaluation import time_split

    split_source = "the default time split as of the latest return (no MLflow run for this version)"
    split = time_split(last + pd.Timedelta(seconds=1))
    train_end, test_start = split.train_end, split.test_start
train_end = train_end.tz_localize("UTC") if train_end.tzinfo is None else train_end
test_start = test_start.tz_localize("UTC") if test_start.tzinfo is None else test_start

# --- scores over time --------------------------------------------------------------------------------

st.header("Scores over time")
histogram = data.score_histogram(url, model_name, model_version)
if histogram.empty:
    st.write("No scored return.")
else:
    shares = histogram.assign(
        share=histogram["returns"] / histogram.groupby("month")["returns"].transform("sum"),
        score_from=histogram["bin"] / SCORE_BINS_SHOWN,
    )
    st.altair_chart(
        alt.Chart(shares)
        .mark_rect()
        .encode(
            x=alt.X("month:O", title="month requested"),
            y=alt.Y("score_from:O", title="score from", sort="descending", axis=alt.Axis(format=".2f")),
            color=alt.Color(
                "share:Q", title="share of the month", scale=alt.Scale(type="sqrt", scheme="blues")
            ),
            tooltip=[
                "month",
                alt.Tooltip("score_from:Q", format=".2f"),
                "returns",
                alt.Tooltip("share:Q", format=".1%"),
            ],
        )
        .properties(height=260),
        width="stretch",
    )
    review_bin = policy.fraud.review_threshold * SCORE_BINS_SHOWN
    monthly = histogram.assign(flagged=histogram["returns"].where(histogram["bin"] >= review_bin, 0))
    monthly = monthly.groupby("month", as_index=False)[["returns", "flagged"]].sum()
    monthly["flagged_share"] = monthly["flagged"] / monthly["returns"]
    reference_months = sorted({m for m in histogram["month"] if m < f"{train_end:%Y-%m}"})
    drift = monitoring.score_psi_by_month(histogram, reference_months)
    monthly = monthly.merge(drift[["month", "psi"]], on="month", how="left")
    left, right = st.columns(2)
    left.altair_chart(
        alt.Chart(monthly)
        .mark_line(point=True)
        .encode(
            x=alt.X("month:O", title=None),
            y=alt.Y(
                "flagged_share:Q",
                title=f"share scored ≥ {policy.fraud.review_threshold}",
                axis=alt.Axis(format="%"),
            ),
            tooltip=["month", "returns", "flagged", alt.Tooltip("flagged_share:Q", format=".2%")],
        )
        .properties(title="Share flagged for review"),
        width="stretch",
    )
    right.altair_chart(
        (
            alt.Chart(monthly)
            .mark_line(point=True)
            .encode(
                x=alt.X("month:O", title=None),
                y=alt.Y("psi:Q", title="PSI"),
                tooltip=["month", alt.Tooltip("psi:Q", format=".3f")],
            )
            + alt.Chart(pd.DataFrame({"y": [monitoring.PSI_MODERATE, monitoring.PSI_MAJOR]}))
            .mark_rule(strokeDash=[4, 4], color="grey")
            .encode(y="y:Q")
        ).properties(title="Score drift against the training months (PSI)"),
        width="stretch",
    )

# --- feature drift -----------------------------------------------------------------------------------

st.header("Feature drift")
recent_days = st.select_slider(
    "Recent window (days)", options=[30, 60, 90, 180], value=60, key="models_recent_days"
)
recent_end = last + pd.Timedelta(seconds=1)
recent_start = recent_end - pd.Timedelta(days=recent_days)
st.caption(
    f"PSI of each fraud feature: returns requested before {train_end:%Y-%m-%d} (training period, from "
    f"{split_source}) against the last {recent_days} days ({recent_start:%Y-%m-%d} to {last:%Y-%m-%d}). "
    f"Below {monitoring.PSI_MODERATE} stable, above {monitoring.PSI_MAJOR} shifted."
)
wanted = returns_count <= AUTO_DRIFT_RETURNS or st.session_state.get("drift_requested", False)
if not wanted:
    st.write(
        f"{returns_count:,} returns: drift recomputes their point-in-time features (tens of seconds on "
        "this history); the result is then cached for an hour for everyone."
    )
    if st.button("Compute feature drift", key="models_drift_run"):
        st.session_state["drift_requested"] = True
        wanted = True
if wanted:
    with st.spinner("Computing features and PSI"):
        psi = data.feature_drift(url, train_end, recent_start, recent_end)
    if psi.empty or psi["psi"].isna().all():
        st.info("Not enough returns in one of the two periods to compare.")
    else:
        counts = psi["stability"].value_counts()
        cells = st.columns(3)
        cells[0].metric("Shifted features", ui.count(counts.get("shifted", 0)))
        cells[1].metric("Moderate", ui.count(counts.get("moderate", 0)))
        cells[2].metric("Stable", ui.count(counts.get("stable", 0)))
        top = psi.head(20).assign(feature=lambda f: f["feature"].map(ui.feature_label))
        st.altair_chart(
            alt.Chart(top)
            .mark_bar()
            .encode(
                x=alt.X("psi:Q", title="PSI"),
                y=alt.Y(
                    "feature:N", sort="-x", title=None, axis=alt.Axis(labelLimit=260, labelOverlap=False)
                ),
                color=alt.Color(
                    "stability:N",
                    scale=alt.Scale(
                        domain=["stable", "moderate", "shifted"], range=["#4c78a8", "#f58518", "#e45756"]
                    ),
                ),
                tooltip=["feature", alt.Tooltip("psi:Q", format=".3f"), "description"],
            )
            .properties(height=max(22 * len(top), 120)),
            width="stretch",
        )
        ui.dataframe(
            psi.assign(feature=psi["feature"].map(ui.feature_label)),
            hide_index=True,
            key="models_drift",
            column_config={"psi": st.column_config.NumberColumn(format="%.3f")},
        )

# --- serving skew ------------------------------------------------------------------------------------

st.header("Serving skew")
tables = data.table_names(url)
served = data.serving_log_recent(url) if "serving_log" in tables else pd.DataFrame()
if served.empty:
    st.info(
        "No serving log yet: once the scoring API has served scores, this compares them "
        "with the batch scores of the same returns, and the features it served with their offline values."
    )
else:
    recent = served[served["served_at"] >= served["served_at"].max() - pd.Timedelta(days=7)]
    cells = st.columns(4)
    cells[0].metric("Scores served (last 7 days of the log)", ui.count(len(recent)))
    cells[1].metric(
        "Latency p50 / p99 (ms)",
        f"{recent['latency_ms'].quantile(0.5):.1f} / {recent['latency_ms'].quantile(0.99):.1f}",
    )
    cells[2].metric("Degraded to the rules", ui.percent(recent["degraded"].mean()))
    versions_served = ", ".join(sorted(recent["model_version"].dropna().astype(str).unique())) or "–"
    cells[3].metric("Versions served", versions_served)
    skew = data.serving_skew(url, model_name, model_version)
    if skew.empty:
        st.write(
            f"No served score of version {model_version} belongs to a return that batch scoring has scored yet."
        )
    else:
        skew["difference"] = skew["served_score"] - skew["batch_score"]
        cells = st.columns(3)
        cells[0].metric("Returns compared", ui.count(len(skew)))
        cells[1].metric("Mean |online − batch|", f"{skew['difference'].abs().mean():.4f}")
        cells[2].metric("Differ by > 0.01", ui.percent((skew["difference"].abs() > 0.01).mean()))
        st.altair_chart(
            alt.Chart(skew)
            .mark_bar()
            .encode(
                x=alt.X("difference:Q", bin=alt.Bin(maxbins=40), title="online − batch score"), y="count()"
            ),
            width="stretch",
        )
    if "analytics_serving_skew" in tables:
        features_skew = data.feature_skew(url)
        mismatched = features_skew[features_skew["mismatched"] > 0]
        st.markdown(
            f"**Features served vs recomputed offline**: {len(mismatched)} of {len(features_skew)} features differ "
            "on at least one return (from the pipelines' serving-skew asset)."
        )
        ui.dataframe(features_skew, hide_index=True, key="models_feature_skew")
    else:
        st.caption("Per-feature skew appears once the pipelines' `serving_skew` asset has run.")

# --- policy backtest ---------------------------------------------------------------------------------

st.header("Policy backtest")
st.caption(
    "Replays a review threshold (or a capacity) on scored history: what would have been flagged, and what the "
    "reviews say of it. Reviewed returns were mostly chosen by the old rules (biased); the random audit is "
    "a small unbiased sample."
)
controls = st.columns([1.4, 1.2, 1.2, 1.6])
mode = controls[0].radio("Cut by", ["threshold", "capacity"], horizontal=True, key="bt_mode")
threshold_input = controls[1].slider(
    "Review threshold",
    0.0,
    1.0,
    float(policy.fraud.review_threshold),
    0.01,
    key="bt_threshold",
    disabled=mode != "threshold",
)
capacity_percent = controls[2].number_input(
    "Capacity (% of returns)",
    min_value=0.1,
    max_value=50.0,
    value=float(policy.fraud.review_capacity * 100),
    step=0.5,
    key="bt_capacity",
    disabled=mode != "capacity",
)
minutes = controls[3].number_input(
    "Minutes per review", min_value=1, max_value=240, value=12, step=1, key="bt_minutes"
)
history_choices = {
    "after_training": f"after the training window (from {train_end:%Y-%m-%d})",
    "holdout": f"the holdout only (from {test_start:%Y-%m-%d})",
    "all": "all scored returns (in-sample: optimistic)",
}
history = st.radio(
    "History to replay",
    list(history_choices),
    format_func=history_choices.get,
    horizontal=True,
    key="bt_history",
)
since = {"after_training": train_end, "holdout": test_start, "all": None}[history]
bins = data.backtest_bins(url, model_name, model_version, since)
if bins.empty:
    st.info("No scored return in this history.")
    st.stop()
threshold = (
    threshold_input
    if mode == "threshold"
    else monitoring.threshold_for_capacity(bins, capacity_percent / 100)
)
result = monitoring.backtest(bins, threshold, float(minutes))
current = monitoring.backtest(bins, policy.fraud.review_threshold, float(minutes))
low, high = monitoring.wilson_interval(result.audited_positive, result.audited)

st.markdown(
    f"**Threshold {threshold:.3f}** on {result.returns:,} returns over {result.weeks:,.1f} weeks"
    + (f" (capacity {capacity_percent:.1f} %)" if mode == "capacity" else "")
)
cells = st.columns(4)
cells[0].metric("Flagged", ui.count(result.flagged), help=f"{ui.percent(result.flagged_share, 2)} of returns")
cells[1].metric("Flagged per week", f"{result.flagged_per_week:,.1f}")
cells[2].metric(
    "Analyst hours per week",
    f"{result.analyst_hours_per_week:,.1f}",
    help=f"{result.analyst_hours:,.0f} h in all",
)
cells[3].metric("Value flagged", ui.money(result.flagged_value))
cells = st.columns(4)
cells[0].metric(
    "Precision (reviewed)",
    ui.percent(result.precision_reviewed),
    help=f"{result.reviewed_positive} of {result.reviewed} reviewed",
)
cells[1].metric(
    "Precision (random audit)",
    ui.percent(result.precision_audit),
    help=f"{result.audited_positive} of {result.audited} audited; 95 % interval {ui.percent(low)}–{ui.percent(high)}",
)
cells[2].metric(
    "Audit fraud caught", ui.percent(result.audit_recall), help="share of the audit's fraud/abuse flagged"
)
cells[3].metric(
    "Known fraud value caught",
    ui.money(result.value_caught),
    help=f"{ui.percent(result.value_caught_share)} of the value of all returns decided fraud or abuse",
)
comparison = pd.DataFrame(
    [
        {"policy": "chosen", **result.as_dict()},
        {"policy": f"current ({policy.fraud.review_threshold})", **current.as_dict()},
    ]
)[
    [
        "policy",
        "threshold",
        "flagged",
        "flagged_per_week",
        "precision_reviewed",
        "precision_audit",
        "audit_recall",
        "value_caught",
        "value_caught_share",
        "analyst_hours_per_week",
    ]
]
ui.dataframe(
    comparison,
    hide_index=True,
    key="bt_comparison",
    column_config={
        "threshold": st.column_config.NumberColumn(format="%.3f"),
        "flagged_per_week": st.column_config.NumberColumn(format="%.1f"),
        "precision_reviewed": st.column_config.NumberColumn(format="percent"),
        "precision_audit": st.column_config.NumberColumn(format="percent"),
        "audit_recall": st.column_config.NumberColumn(format="percent"),
        "value_caught": st.column_config.NumberColumn(format="%.2f"),
        "value_caught_share": st.column_config.NumberColumn(format="percent"),
        "analyst_hours_per_week": st.column_config.NumberColumn(format="%.1f"),
    },
)
curve = monitoring.backtest_curve(bins, float(minutes))
long = curve.melt(
    id_vars=["threshold"],
    value_vars=["precision_reviewed", "precision_audit", "value_caught_share", "flagged_share"],
    var_name="measure",
    value_name="share",
)
long["measure"] = long["measure"].map(TRADE_OFF)
marker = alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(color="black").encode(x="threshold:Q")
st.altair_chart(
    (
        alt.Chart(long)
        .mark_line()
        .encode(
            x=alt.X("threshold:Q", title="review threshold"),
            y=alt.Y("share:Q", title=None, axis=alt.Axis(format="%")),
            color=alt.Color("measure:N", title=None),
            tooltip=[
                alt.Tooltip("threshold:Q", format=".2f"),
                "measure",
                alt.Tooltip("share:Q", format=".1%"),
            ],
        )
        + marker
    ).properties(title="Trade-off by threshold", height=300),
    width="stretch",
)
