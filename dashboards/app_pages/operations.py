"""Operations: returns by status, limbo (received, not yet back in stock) by location and age, disposition
mix and recovered value, BORIS share and refund cycle times."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import access, data, ui

TABLES = (
    "analytics_limbo",
    "analytics_limbo_lines",
    "analytics_dispositions",
    "analytics_cycle_time",
    "analytics_boris",
)
AGE_ORDER = ["0-2", "3-7", "8-14", "15-30", ">30"]
ALL = "all"
STAGES = {
    "request_to_receipt": "request to receipt",
    "receipt_to_disposition": "receipt to disposition",
    "request_to_disposition": "request to disposition",
    "request_to_refund": "request to refund",
    "receipt_to_refund": "receipt to refund",
}
BORIS_SHARES = {
    "boris_share_of_returns": "of all returns",
    "boris_share_of_online_returns": "of returns of online orders",
    "boris_share_of_value": "of returned value",
}

access.require("operations")
url = data.database_url()
st.title("Operations")
ui.require_analytics(url, TABLES)

locations = data.locations(url)
names = dict(zip(locations["location_id"], locations["name"].fillna(locations["location_id"]), strict=True))
dispositions = data.analytics(url, "analytics_dispositions")
boris = data.analytics(url, "analytics_boris")
periods = sorted((set(dispositions["period"].dropna()) | set(boris["period"].dropna())) - {ALL})

controls = st.columns([2, 3])
location = controls[0].selectbox(
    "Location",
    [ALL, *locations["location_id"].tolist()],
    format_func=lambda loc: "All locations" if loc == ALL else f"{loc} · {names.get(loc, loc)}",
    key="ops_location",
)
if len(periods) >= 2:
    first_period, last_period = controls[1].select_slider(
        "Periods", options=periods, value=(periods[0], periods[-1]), key="ops_periods"
    )
else:
    first_period, last_period = (periods[0], periods[0]) if periods else ("", "")
as_of = boris["as_of"].max() if len(boris) else None
if as_of is not None and pd.notna(as_of):
    st.caption(
        f"Analytics computed {as_of:%Y-%m-%d %H:%M} UTC (limbo ages count from then; the daily analytics "
        "run refreshes them); returns by status are live."
    )


def in_periods(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["period"] >= first_period) & (frame["period"] <= last_period)]


# --- returns by status -------------------------------------------------------------------------------

st.header("Returns by status")
statuses = data.status_counts(url, None if location == ALL else location)
by_status = (
    statuses.groupby("status", as_index=False)["returns"].sum().sort_values("returns", ascending=False)
)
cells = st.columns(max(min(len(by_status), 6), 1))
for cell, row in zip(cells, by_status.head(6).itertuples(), strict=False):
    cell.metric(ui.label(row.status).capitalize(), ui.count(row.returns))
if len(statuses):
    st.altair_chart(
        alt.Chart(ui.labelled(statuses, "status", "channel"))
        .mark_bar()
        .encode(
            x=alt.X("returns:Q", title="returns"),
            y=alt.Y("status:N", sort="-x", title=None, axis=alt.Axis(labelLimit=260, labelOverlap=False)),
            color=alt.Color("channel:N", title="return channel"),
            tooltip=["status", "channel", "returns"],
        ),
        width="stretch",
    )

# --- limbo -------------------------------------------------------------------------------------------

st.header("Limbo: received, not yet back in stock")
limbo = data.analytics(url, "analytics_limbo")
if location != ALL:
    limbo = limbo[limbo["location_id"] == location]
cells = st.columns(4)
cells[0].metric("Lines in limbo", ui.count(limbo["lines"].sum()))
cells[1].metric("Units", ui.count(limbo["units"].sum()))
cells[2].metric("Value", ui.money(limbo["value"].sum()))
cells[3].metric(
    "Oldest (days)",
    ui.count(limbo["oldest_age_days"].max()) if limbo["oldest_age_days"].notna().any() else "–",
)
held = limbo[limbo["lines"] > 0]
if held.empty:
    st.write("Nothing is waiting in limbo.")
else:
    st.altair_chart(
        alt.Chart(held)
        .mark_bar()
        .encode(
            x=alt.X("value:Q", title="value in limbo"),
            y=alt.Y(
                "location_id:N", sort="-x", title=None, axis=alt.Axis(labelLimit=260, labelOverlap=False)
            ),
            color=alt.Color(
                "age_bucket:N",
                sort=AGE_ORDER,
                title="days since receipt",
                scale=alt.Scale(scheme="orangered"),
            ),
            order=alt.Order("age_bucket:N"),
            tooltip=[
                "location_id",
                "location_name",
                "age_bucket",
                "lines",
                "units",
                alt.Tooltip("value:Q", format=",.2f"),
            ],
        ),
        width="stretch",
    )
    oldest = data.analytics(
        url,
        "analytics_limbo_lines",
        None if location == ALL else "location_id = :location",
        () if location == ALL else (("location", location),),
    ).sort_values("age_days", ascending=False)
    st.markdown("**Oldest lines in limbo**")
    ui.dataframe(
        oldest.head(200)[
            [
                "return_id",
                "line_no",
                "location_id",
                "sku",
                "category",
                "units",
                "value",
                "received_at",
                "age_days",
            ]
        ],
        hide_index=True,
        key="ops_limbo_lines",
        column_config={
            "value": st.column_config.NumberColumn(format="%.2f"),
            "age_days": st.column_config.NumberColumn("age (days)", format="%.1f"),
            "received_at": st.column_config.DatetimeColumn("received", format="YYYY-MM-DD"),
        },
    )

# --- dispositions ------------------------------------------------------------------------------------

st.header("Disposition mix and recovered value")
mix = in_periods(dispositions[dispositions["period"] != ALL])
if location != ALL:
    mix = mix[mix["location_id"] == location]
if mix.empty:
    st.write("No disposed lines in these periods.")
else:
    by_outlet = mix.groupby("disposition", as_index=False)[
        ["lines", "units", "value_refunded", "recovered_value"]
    ].sum()
    by_outlet["recovery_rate"] = by_outlet["recovered_value"] / by_outlet["value_refunded"].where(
        by_outlet["value_refunded"] > 0
    )
    cells = st.columns(3)
    cells[0].metric("Units disposed", ui.count(by_outlet["units"].sum()))
    cells[1].metric("Recovered value", ui.money(by_outlet["recovered_value"].sum()))
    total_refunded = by_outlet["value_refunded"].sum()
    cells[2].metric(
        "Recovered / refunded",
        ui.percent(by_outlet["recovered_value"].sum() / total_refunded if total_refunded else None),
    )
    left, right = st.columns(2)
    left.altair_chart(
        alt.Chart(ui.labelled(by_outlet, "disposition"))
        .mark_arc(innerRadius=50)
        .encode(
            theta=alt.Theta("units:Q"),
            color=alt.Color("disposition:N"),
            tooltip=["disposition", "units", "lines", alt.Tooltip("recovery_rate:Q", format=".0%")],
        )
        .properties(title="Units by disposition"),
        width="stretch",
    )
    over_time = mix.groupby("period", as_index=False)[["recovered_value", "value_refunded"]].sum()
    right.altair_chart(
        alt.Chart(over_time)
        .mark_line(point=True)
        .encode(
            x=alt.X("period:N", title="period of disposal"),
            y=alt.Y("recovered_value:Q", title="recovered value"),
            tooltip=[
                "period",
                alt.Tooltip("recovered_value:Q", format=",.2f"),
                alt.Tooltip("value_refunded:Q", format=",.2f"),
            ],
        )
        .properties(title="Recovered value"),
        width="stretch",
    )
    ui.dataframe(
        by_outlet.sort_values("units", ascending=False),
        hide_index=True,
        key="ops_dispositions",
        column_config={
            "value_refunded": st.column_config.NumberColumn(format="%.2f"),
            "recovered_value": st.column_config.NumberColumn(format="%.2f"),
            "recovery_rate": st.column_config.NumberColumn("recovered / refunded", format="percent"),
        },
    )

# --- BORIS -------------------------------------------------------------------------------------------

st.header("BORIS: bought online, returned in store")
where = ALL if location == ALL else location
trend = in_periods(boris[(boris["location_id"] == where) & (boris["period"] != ALL)])
window = trend[["returns", "boris_returns", "online_order_returns", "value", "boris_value"]].sum()
cells = st.columns(3)
cells[0].metric("BORIS returns", ui.count(window["boris_returns"]))
cells[1].metric(
    "Share of all returns",
    ui.percent(window["boris_returns"] / window["returns"] if window["returns"] else None),
)
cells[2].metric(
    "Share of online-order returns",
    ui.percent(
        window["boris_returns"] / window["online_order_returns"] if window["online_order_returns"] else None
    ),
)
if len(trend):
    long = trend.melt(
        id_vars=["period"],
        value_vars=list(BORIS_SHARES),
        var_name="share",
        value_name="share_value",
    )
    long["share"] = long["share"].map(BORIS_SHARES)
    st.altair_chart(
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("period:N", title="period of the return"),
            y=alt.Y("share_value:Q", title="share", axis=alt.Axis(format="%")),
            color=alt.Color("share:N", title=None),
            tooltip=["period", "share", alt.Tooltip("share_value:Q", format=".1%")],
        ),
        width="stretch",
    )
by_store = boris[(boris["period"] == ALL) & (boris["location_id"] != ALL) & (boris["boris_returns"] > 0)]
if len(by_store):
    by_store = by_store.assign(
        place=[f"{loc} · {names.get(loc, loc)}" for loc in by_store["location_id"]]
    ).sort_values("boris_share_of_returns", ascending=False)
    st.markdown("**By location, whole history**")
    st.altair_chart(
        alt.Chart(by_store)
        .mark_bar()
        .encode(
            x=alt.X(
                "boris_share_of_returns:Q",
                title="BORIS share of the location's returns",
                axis=alt.Axis(format="%"),
            ),
            y=alt.Y(
                "place:N",
                sort="-x",
                title=None,
                axis=alt.Axis(labelLimit=320, labelOverlap=False, labelFontSize=12),
            ),
            tooltip=[
                alt.Tooltip("place:N", title="location"),
                alt.Tooltip("boris_returns:Q", title="BORIS returns", format=","),
                alt.Tooltip("returns:Q", title="all returns", format=","),
                alt.Tooltip("boris_share_of_returns:Q", title="share", format=".1%"),
            ],
        )
        .properties(height=max(28 * len(by_store), 120)),
        width="stretch",
    )

# --- cycle time --------------------------------------------------------------------------------------

st.header("Refund cycle time")
cycle = data.analytics(url, "analytics_cycle_time")
cycle = cycle.assign(stage=cycle["stage"].map(lambda stage: STAGES.get(stage, ui.label(stage))))
overall = cycle[(cycle["channel"] == ALL) & (cycle["period"] == ALL)]
observed = overall[overall["observations"] > 0]
if len(observed):
    ui.dataframe(
        observed[["stage", "observations", "mean_days", "p50_days", "p75_days", "p90_days", "p95_days"]],
        key="ops_cycle_time",
        column_config={
            "stage": st.column_config.TextColumn("Stage", width="medium"),
            "observations": st.column_config.NumberColumn("Completed", format="%d"),
            "mean_days": st.column_config.NumberColumn("Mean (days)", format="%.1f"),
            "p50_days": st.column_config.NumberColumn("Median", format="%.1f"),
            "p75_days": st.column_config.NumberColumn("75th pct.", format="%.1f"),
            "p90_days": st.column_config.NumberColumn("90th pct.", format="%.1f"),
            "p95_days": st.column_config.NumberColumn("95th pct.", format="%.1f"),
        },
    )
monthly = in_periods(
    cycle[(cycle["channel"] == ALL) & (cycle["period"] != ALL) & (cycle["observations"] > 0)]
)
if len(monthly):
    st.altair_chart(
        alt.Chart(monthly)
        .mark_line(point=True)
        .encode(
            x=alt.X("period:N", title="period the interval ended"),
            y=alt.Y("p50_days:Q", title="median days"),
            color=alt.Color("stage:N", title="stage", sort=list(STAGES.values())),
            tooltip=[
                "stage",
                "period",
                alt.Tooltip("observations:Q", title="completed", format=","),
                alt.Tooltip("p50_days:Q", title="median days", format=".1f"),
                alt.Tooltip("p90_days:Q", title="90th pct. days", format=".1f"),
            ],
        ),
        width="stretch",
    )
missing = overall[overall["observations"] == 0]["stage"].tolist()
if missing:
    st.caption(
        f"No completed interval yet for: {'; '.join(missing)}. Their end events (disposal, refund) are "
        "recorded by the lifecycle or come with imported files that carry refund and disposal times; this "
        "history has none."
    )
