"""Return rates (merchandisers): rates by dimension with drill-down to reasons and sizes, abnormal items
with their excess cost, and size/fit signals. Reads the analytics tables (sale cohorts, see
`features.analytics`); works on data without sizes or stores (e.g. UCI Online Retail)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import access, data, ui

DIMENSIONS = {
    "category": "Category",
    "brand": "Brand",
    "style_id": "Style",
    "sku": "SKU",
    "size": "Size",
    "channel": "Order channel",
    "location_id": "Store / location of sale",
    "reason": "Return reason",
}
CODED = ("category", "channel", "reason")  # dimensions whose values are codes of the contract
RATES = {
    "return_rate": "returned / sold",
    "fit_rate": "doesn't fit / sold",
    "category_size_fit_rate": "category, same size: doesn't fit / sold",
}
REASON_DRILL = ("category", "brand", "style_id", "sku", "size", "channel", "location_id")
SIZE_DRILL = ("category", "brand", "style_id", "sku")
SIGNALS = ("runs_small", "runs_large", "fit_issue", "ok", "low_volume")
TABLES = (
    "analytics_return_rates",
    "analytics_abnormal_items",
    "analytics_size_curve",
    "analytics_fit_signals",
)

access.require("return_rates")
url = data.database_url()
st.title("Return rates")
ui.require_analytics(url, TABLES)


def rates(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sum a return-rate slice over `by` and recompute its rates."""
    summed = frame.groupby(by, as_index=False)[
        ["units_sold", "units_returned", "value_sold", "value_refunded"]
    ].sum()
    summed["return_rate_units"] = summed["units_returned"] / summed["units_sold"].where(
        summed["units_sold"] > 0
    )
    summed["return_rate_value"] = summed["value_refunded"] / summed["value_sold"].where(
        summed["value_sold"] > 0
    )
    return summed


by_dimension, abnormal, fit = st.tabs(["By dimension", "Abnormal items", "Size and fit"])

# --- rates by dimension ------------------------------------------------------------------------------

with by_dimension:
    controls = st.columns([2, 1.3, 1.2, 1.2])
    dimension = controls[0].selectbox(
        "Dimension", list(DIMENSIONS), format_func=DIMENSIONS.get, key="rr_dimension"
    )
    measure = controls[1].radio("Rate of", ["units", "value"], horizontal=True, key="rr_measure")
    mature_only = controls[2].toggle(
        "Mature sales only",
        value=True,
        key="rr_mature",
        help="Sales whose return window (plus grace) has closed.",
    )
    min_units = controls[3].number_input(
        "Min. units sold", min_value=0, value=30, step=10, key="rr_min_units"
    )
    rate_column = f"return_rate_{measure}"

    totals = data.analytics(
        url,
        "analytics_return_rates",
        "dimension = :dimension AND period = :period",
        (("dimension", dimension), ("period", "all")),
    )
    if mature_only:
        totals = totals[totals["mature"]]
    ranked = rates(totals, ["dimension_value"])
    ranked = ranked[ranked["units_sold"] >= min_units].sort_values(rate_column, ascending=False)
    as_of = totals["as_of"].max() if len(totals) else None
    st.caption(
        f"Share of what was sold that came back, by the period of the sale; computed {as_of:%Y-%m-%d %H:%M} UTC."
        if as_of is not None and pd.notna(as_of)
        else "No sales in the analytics tables."
    )
    if ranked.empty:
        st.info(
            "No value of this dimension has enough sold units: lower the minimum or include immature sales."
        )
    else:
        overall = (
            ranked["units_returned"].sum() / ranked["units_sold"].sum()
            if measure == "units"
            else ranked["value_refunded"].sum() / ranked["value_sold"].sum()
        )
        summary = st.columns(3)
        summary[0].metric(f"{DIMENSIONS[dimension]} values", ui.count(len(ranked)))
        if dimension != "reason":
            summary[1].metric(f"Return rate ({measure})", ui.percent(overall))
        summary[2].metric("Units returned", ui.count(ranked["units_returned"].sum()))
        top = ui.labelled(ranked.head(25), "dimension_value") if dimension in CODED else ranked.head(25)
        bars = (
            alt.Chart(top)
            .mark_bar()
            .encode(
                x=alt.X(f"{rate_column}:Q", title=f"return rate ({measure})", axis=alt.Axis(format="%")),
                y=alt.Y(
                    "dimension_value:N",
                    sort="-x",
                    title=None,
                    axis=alt.Axis(labelLimit=260, labelOverlap=False),
                ),
                tooltip=[
                    alt.Tooltip("dimension_value:N", title=DIMENSIONS[dimension]),
                    alt.Tooltip(f"{rate_column}:Q", format=".1%"),
                    alt.Tooltip("units_sold:Q", format=","),
                    alt.Tooltip("units_returned:Q", format=","),
                    alt.Tooltip("value_refunded:Q", format=",.2f"),
                ],
            )
        )
        layers = bars
        if dimension != "reason":
            layers = bars + alt.Chart(pd.DataFrame({"overall": [overall]})).mark_rule(color="grey").encode(
                x="overall:Q"
            )
        st.altair_chart(layers.properties(height=max(22 * len(top), 120)), width="stretch")
        ui.dataframe(
            ranked,
            hide_index=True,
            key="rr_table",
            column_config={
                "dimension_value": DIMENSIONS[dimension],
                "return_rate_units": st.column_config.NumberColumn("rate (units)", format="percent"),
                "return_rate_value": st.column_config.NumberColumn("rate (value)", format="percent"),
                "value_sold": st.column_config.NumberColumn(format="%.2f"),
                "value_refunded": st.column_config.NumberColumn(format="%.2f"),
            },
        )

        st.subheader("Over time")
        trend_values = st.multiselect(
            "Values to follow",
            ranked["dimension_value"].tolist(),
            default=ranked["dimension_value"].head(5).tolist(),
            key=f"rr_trend_values_{dimension}",
            max_selections=12,
        )
        if trend_values:
            binds = tuple((f"v{i}", value) for i, value in enumerate(trend_values))
            trend = data.analytics(
                url,
                "analytics_return_rates",
                f"dimension = :dimension AND period <> :period AND dimension_value IN "
                f"({', '.join(':' + name for name, _ in binds)})",
                (("dimension", dimension), ("period", "all"), *binds),
            )
            if mature_only:
                trend = trend[trend["mature"]]
            trend = rates(trend, ["dimension_value", "period"])
            st.altair_chart(
                alt.Chart(trend)
                .mark_line(point=True)
                .encode(
                    x=alt.X("period:N", title="sale period"),
                    y=alt.Y(f"{rate_column}:Q", title=f"return rate ({measure})", axis=alt.Axis(format="%")),
                    color=alt.Color("dimension_value:N", title=DIMENSIONS[dimension]),
                    tooltip=[
                        "dimension_value",
                        "period",
                        alt.Tooltip(f"{rate_column}:Q", format=".1%"),
                        "units_sold",
                    ],
                ),
                width="stretch",
            )
            st.caption("Recent sale periods are still open: their returns are not all in yet.")

        if dimension in REASON_DRILL:
            st.subheader("Drill down")
            item = st.selectbox(
                DIMENSIONS[dimension],
                ranked["dimension_value"].tolist(),
                format_func=ui.label if dimension in CODED else str,
                key=f"rr_item_{dimension}",
                help="Ranked by return rate, highest first.",
            )
            reasons_column, sizes_column = st.columns(2)
            with reasons_column:
                mix = data.reason_mix(url, dimension, item)
                st.markdown(
                    f"**Why {ui.label(item) if dimension in CODED else item} comes back** (returned units by reason)"
                )
                if mix.empty:
                    st.write("No returned units.")
                else:
                    st.altair_chart(
                        alt.Chart(ui.labelled(mix, "reason"))
                        .mark_bar()
                        .encode(
                            x=alt.X("units:Q", title="units returned"),
                            y=alt.Y(
                                "reason:N",
                                sort="-x",
                                title=None,
                                axis=alt.Axis(labelLimit=260, labelOverlap=False),
                            ),
                            tooltip=["reason", "units", "returns"],
                        ),
                        width="stretch",
                    )
            with sizes_column:
                if dimension in SIZE_DRILL:
                    sizes = data.size_mix(url, dimension, item)
                    st.markdown(f"**{item} by size** (mature sales)")
                    if sizes.empty:
                        st.write("No sized products here.")
                    else:
                        order = sizes["size"].tolist()
                        long = sizes.melt(
                            id_vars=["size"],
                            value_vars=["return_rate", "fit_rate"],
                            var_name="rate",
                            value_name="share",
                        )
                        long["rate"] = long["rate"].map(RATES)
                        st.altair_chart(
                            alt.Chart(long)
                            .mark_bar()
                            .encode(
                                x=alt.X("size:N", sort=order, title="size"),
                                xOffset="rate:N",
                                y=alt.Y("share:Q", title="share of units sold", axis=alt.Axis(format="%")),
                                color=alt.Color("rate:N", title=None),
                                tooltip=["size", "rate", alt.Tooltip("share:Q", format=".1%")],
                            ),
                            width="stretch",
                        )
                        ui.dataframe(sizes, hide_index=True, key="rr_sizes")

# --- abnormal items ----------------------------------------------------------------------------------

with abnormal:
    controls = st.columns([1.2, 2, 1.2])
    level = controls[0].radio(
        "Level",
        ["style_id", "sku"],
        format_func={"style_id": "Style", "sku": "SKU"}.get,
        horizontal=True,
        key="ab_level",
    )
    flagged_only = controls[2].toggle("Flagged only", value=True, key="ab_flagged_only")
    where = "level = :level" + (" AND flagged = :flagged" if flagged_only else "")
    params = (("level", level), ("flagged", True)) if flagged_only else (("level", level),)
    items = data.analytics(url, "analytics_abnormal_items", where, params)
    categories = controls[1].multiselect(
        "Category", sorted(items["category"].dropna().unique()), key="ab_categories", placeholder="all"
    )
    if categories:
        items = items[items["category"].isin(categories)]
    items = items.sort_values("excess_value_refunded", ascending=False)
    flagged = items[items["flagged"]]
    summary = st.columns(3)
    summary[0].metric("Flagged items", ui.count(len(flagged)))
    summary[1].metric("Excess units returned", ui.count(flagged["excess_units_returned"].sum()))
    summary[2].metric("Excess value refunded", ui.money(flagged["excess_value_refunded"].sum()))
    st.caption(
        "Flagged: at least the minimum volume of mature sales and a return rate whose lower bound "
        "(beta-binomial against the rest of its category) is above the category's, overall or for one reason. "
        "Excess: what came back beyond the category rate."
    )
    if items.empty:
        st.info(
            "No item matches." if not flagged_only else "No item is flagged as returning abnormally often."
        )
    else:
        top = items.head(20)
        st.altair_chart(
            alt.Chart(ui.labelled(top, "dominant_reason"))
            .mark_bar()
            .encode(
                x=alt.X("excess_value_refunded:Q", title="excess value refunded"),
                y=alt.Y(
                    "item_id:N", sort="-x", title=None, axis=alt.Axis(labelLimit=260, labelOverlap=False)
                ),
                color=alt.Color("dominant_reason:N", title="main reason"),
                tooltip=[
                    "item_id",
                    "category",
                    alt.Tooltip("return_rate_units:Q", format=".1%"),
                    alt.Tooltip("category_rate:Q", format=".1%"),
                    alt.Tooltip("excess_value_refunded:Q", format=",.2f"),
                    "flag_reasons",
                ],
            )
            .properties(height=max(22 * len(top), 120)),
            width="stretch",
        )
        ui.dataframe(
            items[
                [
                    "item_id",
                    "style_id",
                    "category",
                    "units_sold",
                    "units_returned",
                    "return_rate_units",
                    "category_rate",
                    "rate_lower",
                    "excess_units_returned",
                    "excess_value_refunded",
                    "dominant_reason",
                    "dominant_reason_share",
                    "flagged",
                    "flag_reasons",
                ]
            ],
            hide_index=True,
            key="ab_table",
            column_config={
                "return_rate_units": st.column_config.NumberColumn("rate", format="percent"),
                "category_rate": st.column_config.NumberColumn("category rate", format="percent"),
                "rate_lower": st.column_config.NumberColumn("rate lower bound", format="percent"),
                "dominant_reason_share": st.column_config.NumberColumn("reason share", format="percent"),
                "excess_units_returned": st.column_config.NumberColumn("excess units", format="%.1f"),
                "excess_value_refunded": st.column_config.NumberColumn("excess value", format="%.2f"),
            },
        )

# --- size and fit ------------------------------------------------------------------------------------

with fit:
    signals = data.analytics(url, "analytics_fit_signals")
    if signals.empty:
        st.info("No sized products in this data: size-curve and fit signals need products with sizes.")
    else:
        controls = st.columns(2)
        chosen = controls[0].multiselect(
            "Signal", list(SIGNALS), default=["runs_small", "runs_large", "fit_issue"], key="fit_signals"
        )
        fit_categories = controls[1].multiselect(
            "Category", sorted(signals["category"].dropna().unique()), key="fit_categories", placeholder="all"
        )
        shown = signals[signals["fit_signal"].isin(chosen)] if chosen else signals
        if fit_categories:
            shown = shown[shown["category"].isin(fit_categories)]
        shown = shown.sort_values(["fit_signal", "fit_rate"], ascending=[True, False])
        counts = signals["fit_signal"].value_counts()
        summary = st.columns(3)
        summary[0].metric("Runs small", ui.count(counts.get("runs_small", 0)))
        summary[1].metric("Runs large", ui.count(counts.get("runs_large", 0)))
        summary[2].metric("Fit issue, direction unknown", ui.count(counts.get("fit_issue", 0)))
        ui.dataframe(
            shown[
                [
                    "style_id",
                    "category",
                    "fit_signal",
                    "sizes",
                    "units_sold",
                    "fit_returns",
                    "fit_rate",
                    "category_fit_rate",
                    "size_up_events",
                    "size_down_events",
                    "direction_p_value",
                ]
            ],
            hide_index=True,
            key="fit_table",
            column_config={
                "fit_rate": st.column_config.NumberColumn("fit rate", format="percent"),
                "category_fit_rate": st.column_config.NumberColumn("category fit rate", format="percent"),
                "direction_p_value": st.column_config.NumberColumn("direction p", format="%.3f"),
            },
        )
        if shown.empty:
            st.write("No style has these signals.")
        else:
            style = st.selectbox("Size curve of style", shown["style_id"].tolist(), key="fit_style")
            curve = data.analytics(url, "analytics_size_curve", "style_id = :style", (("style", style),))
            curve = curve.sort_values(["size_rank", "size"], kind="stable")
            order = curve["size"].tolist()
            long = curve.melt(
                id_vars=["size"],
                value_vars=["fit_rate", "category_size_fit_rate"],
                var_name="rate",
                value_name="share",
            )
            long["rate"] = long["rate"].map(RATES)
            st.altair_chart(
                alt.Chart(long)
                .mark_line(point=True)
                .encode(
                    x=alt.X("size:N", sort=order, title="size"),
                    y=alt.Y("share:Q", title="doesn't-fit returns / units sold", axis=alt.Axis(format="%")),
                    color=alt.Color(
                        "rate:N",
                        title=None,
                        scale=alt.Scale(domain=[RATES["fit_rate"], RATES["category_size_fit_rate"]]),
                    ),
                    tooltip=["size", "rate", alt.Tooltip("share:Q", format=".1%")],
                ),
                width="stretch",
            )
            st.caption(
                "Runs small / large is claimed only from directional evidence (exchanges to another size of "
                "the style, bracketed orders where a bigger or smaller size was kept)."
            )
