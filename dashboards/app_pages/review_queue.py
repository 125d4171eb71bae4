"""Review queue (analysts): flagged returns by expected loss, one return in detail, and the decision."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import access, data, ui
from dashboards.queries import DECISION_SOURCES, FLAGGED_DECISIONS
from oms import enums

FRAUD_TYPES = ("", *enums.FRAUD_TYPES)  # the data contract's list; required for fraud and abuse
SHOWN = 500  # rows of the queue table (the queue is sorted: the rest is further down the same order)

user = access.require("review_queue")
url = data.database_url()
st.title("Review queue")

model = data.scored_model(url, registry_=data.current_registry())
if model is None:
    st.info(
        "No return has been scored yet: train a model and score the returns (`recoup train`, `recoup score`)."
    )
    st.stop()
if model.model_version == "rules":
    scorer = "the rules scorer (no fraud model is champion yet; the models page says why)"
else:
    scorer = f"{model.model_name} version {model.model_version}" + (
        " (the champion)" if model.is_champion else " (the newest scores; the registry names no champion)"
    )
st.caption(
    f"Returns to decide: held for review, or flagged by {scorer}; not yet decided and still open "
    "(completed, rejected, cancelled and expired returns are left out). Held for review first, then by "
    "score, then by value."
)

message = st.session_state.pop("decision_message", None)
if message:
    (st.success if message[0] == "success" else st.error)(message[1])

queue = data.review_queue(url, model.model_name, model.model_version)
first, last, _ = data.returns_span(url)
locations = data.locations(url)
names = dict(zip(locations["location_id"], locations["name"].fillna(locations["location_id"]), strict=True))

columns = st.columns([2, 1.4, 1.4, 1.4, 2])
chosen_locations = columns[0].multiselect(
    "Store / location",
    sorted(queue["location_id"].unique()),
    format_func=lambda loc: f"{loc} · {names.get(loc, loc)}",
    key="queue_locations",
    placeholder="all",
)
chosen_channels = columns[1].multiselect(
    "Channel",
    sorted(queue["channel"].unique()),
    format_func=ui.label,
    key="queue_channels",
    placeholder="all",
)
chosen_bands = columns[2].multiselect(
    "Band", ["critical", "high", "elevated", "low", "unscored"], key="queue_bands", placeholder="all"
)
chosen_statuses = columns[3].multiselect(
    "Status", sorted(queue["status"].unique()), format_func=ui.label, key="queue_statuses", placeholder="all"
)
today = pd.Timestamp.now(tz="UTC").date()  # the filter ends today, whenever the history ends
default_range = (first.date(), max(last.date(), today)) if first is not None and last is not None else ()
dates = columns[4].date_input("Requested between", value=default_range, key="queue_dates")

view = queue
if chosen_locations:
    view = view[view["location_id"].isin(chosen_locations)]
if chosen_channels:
    view = view[view["channel"].isin(chosen_channels)]
if chosen_bands:
    view = view[view["band"].isin(chosen_bands)]
if chosen_statuses:
    view = view[view["status"].isin(chosen_statuses)]
if isinstance(dates, tuple | list) and len(dates) == 2:
    start = pd.Timestamp(dates[0], tz="UTC")
    end = pd.Timestamp(dates[1], tz="UTC") + pd.Timedelta(days=1)
    view = view[(view["requested_at"] >= start) & (view["requested_at"] < end)]

totals = st.columns(4)
totals[0].metric("Flagged, undecided", ui.count(len(view)))
totals[1].metric("Value at stake", ui.money(view["value"].sum()))
totals[2].metric("Expected loss", ui.money(view["expected_loss"].sum()))
totals[3].metric("Critical", ui.count((view["band"] == "critical").sum()))

ui.dataframe(
    view.head(SHOWN),
    hide_index=True,
    key="queue_table",
    column_order=[
        "return_id",
        "expected_loss",
        "score",
        "band",
        "value",
        "requested_at",
        "status",
        "channel",
        "location_id",
        "customer_id",
        "top_reason",
    ],
    column_config={
        "return_id": "Return",
        "expected_loss": st.column_config.NumberColumn("Expected loss", format="%.2f"),
        "score": st.column_config.ProgressColumn("Score", min_value=0.0, max_value=1.0, format="%.2f"),
        "band": "Band",
        "value": st.column_config.NumberColumn("Value", format="%.2f"),
        "requested_at": st.column_config.DatetimeColumn("Requested", format="YYYY-MM-DD HH:mm"),
        "status": "Status",
        "channel": "Channel",
        "location_id": "Location",
        "customer_id": "Customer",
        "top_reason": st.column_config.TextColumn("Main reason", width="large"),
    },
)
if len(view) > SHOWN:
    st.caption(f"Showing the top {SHOWN:,} of {len(view):,} by expected loss.")

if view.empty:
    st.info("No flagged return matches these filters.")
    st.stop()

# --- one return --------------------------------------------------------------------------------------

st.header("Return detail")
labels = {
    row.return_id: f"{row.return_id} · {row.band} · expected loss {ui.money(row.expected_loss)}"
    for row in view.head(SHOWN).itertuples()
}
return_id = st.selectbox("Return", list(labels), format_func=labels.get, key="queue_return")
detail = data.return_detail(url, return_id, model.model_name, model.model_version)
if not detail:
    st.warning(f"Return {return_id} no longer exists.")
    st.stop()
lines = data.return_lines(url, return_id)

facts = st.columns(6)
facts[0].metric("Score", f"{detail['score']:.2f}" if pd.notna(detail["score"]) else "–")
facts[1].metric("Band", detail["band"] or "–")
facts[2].metric("Value", ui.money(lines["value"].sum()))
facts[3].metric("Status", ui.label(detail["status"]))
facts[4].metric("Channel", ui.label(detail["channel"]))
facts[5].metric("Location", detail["location_id"] or "–")
st.caption(
    f"Requested {detail['requested_at']:%Y-%m-%d %H:%M} UTC · "
    + (f"order {detail['order_id']}" if detail["order_id"] else "receiptless")
    + f" · customer {detail['customer_id'] or 'none (guest)'}"
    + (f" · employee {detail['employee_id']}" if detail["employee_id"] else "")
    + f" · refund {ui.label(detail['refund_method'])}"
)

with st.container():
    st.subheader("Why it was flagged")
    reasons = detail["reasons"]
    if not reasons:
        st.write("No factor pushed this score above the typical return.")
    else:
        ui.dataframe(
            pd.DataFrame(
                {
                    "reason": [r["text"] for r in reasons],
                    "value": [r.get("value") for r in reasons],
                    "typical": [r.get("typical") for r in reasons],
                    "push": [r["contribution"] for r in reasons],
                }
            ),
            hide_index=True,
            key="detail_reasons",
            column_config={
                "reason": st.column_config.TextColumn("Reason", width="large"),
                "value": st.column_config.NumberColumn("This return", format="%.2f"),
                "typical": st.column_config.NumberColumn("Typical", format="%.2f"),
                "push": st.column_config.ProgressColumn(
                    "Push on the score",
                    help="contribution to the log-odds of the score (LightGBM pred_contrib)",
                    min_value=0.0,
                    max_value=max(r["contribution"] for r in reasons),
                    format="%.3f",
                ),
            },
        )
with st.container():
    st.subheader("Lines")
    ui.dataframe(
        lines[
            [
                "line_no",
                "sku",
                "description",
                "category",
                "size",
                "quantity",
                "reason",
                "condition",
                "value",
            ]
        ],
        hide_index=True,
        key="detail_lines",
        column_config={
            "line_no": st.column_config.NumberColumn("Line", format="%d"),
            "sku": "Item",
            "description": "Product",
            "category": "Category",
            "size": "Size",
            "quantity": st.column_config.NumberColumn("Units", format="%d"),
            "reason": "Reason",
            "condition": "Condition",
            "value": st.column_config.NumberColumn("Value", format="%.2f"),
        },
    )

# --- the decision ------------------------------------------------------------------------------------

st.subheader("Decision")
reviews = data.reviews_of_return(url, return_id)
decided = reviews[reviews["source"].isin(DECISION_SOURCES)]
if len(decided):
    last_review = decided.iloc[-1]
    st.info(
        f"Already decided: **{last_review['outcome']}** by {last_review['reviewer'] or 'an analyst'} "
        f"on {last_review['reviewed_at']:%Y-%m-%d %H:%M} UTC."
    )


def _decide(return_id: str, outcome: str, analyst: str, source: str) -> None:
    note = st.session_state.get("decision_note", "").strip()
    fraud_type = st.session_state.get("decision_fraud_type") or None
    if outcome != "legitimate" and fraud_type is None:
        st.session_state["decision_message"] = (
            "error",
            f"Decision not recorded: choose the fraud type of this {outcome} first.",
        )
        return
    try:
        result = data.decide(
            url,
            return_id,
            analyst,
            outcome,
            fraud_type=fraud_type if outcome != "legitimate" else None,
            note=note,
            source=source,
        )
    except data.DecisionRefused as exc:
        st.session_state["decision_message"] = ("error", f"Decision not recorded: {exc}.")
        return
    before, after = ui.label(result["status_before"]), ui.label(result["status_after"])
    change = f"{before} → {after}" if before != after else f"stays {after}"
    if outcome != "legitimate" and result["status_after"] in enums.REFUND_TO_COME:
        change += "; its refund is held"
    st.session_state["decision_message"] = (
        "success",
        f"Recorded {outcome} for {return_id} as {analyst} ({change}).",
    )
    st.session_state["decision_note"] = ""
    st.session_state["decision_fraud_type"] = ""


# where the flag came from: this scorer's decision put it in the queue, or a rule held it for review
source = "model_flag" if detail.get("score_decision") in FLAGGED_DECISIONS else "rule_flag"
status = detail["status"]
if status == "pending_review":
    effect = (
        "This return is held for review: **fraud** or **abuse** rejects it (the customer is told), "
        "**legitimate** authorises it."
    )
elif status in enums.REFUND_TO_COME:
    effect = (
        f"This return is {ui.label(status)} and not yet refunded: **fraud** or **abuse** holds its refund "
        "(the till or web shop is refused it; loss prevention settles the return), **legitimate** records "
        "the label only."
    )
else:
    effect = (
        f"This return is {ui.label(status)}: a decision records the label only, the return goes on "
        "as it is (nothing is rejected or held)."
    )
st.markdown(effect)
left, right = st.columns([1, 2])
left.selectbox("Fraud type (fraud or abuse)", FRAUD_TYPES, key="decision_fraud_type")
right.text_area("Note", key="decision_note", placeholder="What you checked and why you decided so")
buttons = st.columns(3)
for column, outcome, kind in zip(
    buttons, ("fraud", "abuse", "legitimate"), ("primary", "secondary", "secondary"), strict=True
):
    column.button(
        f"Decide {outcome}",
        key=f"decide_{outcome}",
        type=kind,
        on_click=_decide,
        args=(return_id, outcome, user.name, source),
        width="stretch",
    )
st.caption(
    f"Decisions are recorded as {user.name}, as flagged by "
    f"{'the model' if source == 'model_flag' else 'a rule'}; fraud and abuse need a fraud type. One "
    "decision per return: it becomes a training label."
)

# --- the customer ------------------------------------------------------------------------------------

customer_id = detail["customer_id"]
st.header("Customer")
if not customer_id:
    st.write("No customer account on this return (a guest or receiptless return): no history to show.")
    st.stop()

history, links = st.tabs(["Timeline", "Linked accounts"])
with history:
    timeline = data.customer_timeline(url, customer_id)
    counts = timeline["event"].value_counts()
    st.caption(
        f"Customer {customer_id}: {counts.get('order', 0)} orders, {counts.get('return', 0)} returns, "
        f"{counts.get('review', 0)} reviews (newest first)."
    )
    if len(timeline):
        st.altair_chart(
            alt.Chart(timeline.assign(value=timeline["value"].fillna(0.0)))
            .mark_circle(size=90, opacity=0.8)
            .encode(
                x=alt.X("at:T", title=None),
                y=alt.Y("event:N", title=None, sort=["order", "return", "review"]),
                color=alt.Color("event:N", legend=None),
                tooltip=["event", "id", alt.Tooltip("at:T", format="%Y-%m-%d %H:%M"), "detail", "value"],
            )
            .properties(height=160),
            width="stretch",
        )
    ui.dataframe(
        timeline,
        hide_index=True,
        key="customer_timeline",
        column_config={
            "at": st.column_config.DatetimeColumn("When", format="YYYY-MM-DD HH:mm"),
            "value": st.column_config.NumberColumn("value", format="%.2f"),
        },
    )
with links:
    linked = data.linked_accounts(url, customer_id)
    if linked.empty:
        st.write("No other account shares a card, device or delivery postcode with this customer.")
    else:
        flagged_links = int((linked["fraud_or_abuse"] > 0).sum())
        st.caption(
            f"{len(linked)} other accounts share a card, device or delivery postcode; "
            f"{flagged_links} of them have returns decided fraud or abuse."
        )
        ui.dataframe(linked, hide_index=True, key="linked_accounts")
