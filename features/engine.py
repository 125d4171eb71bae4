"""The one implementation of the feature catalogue, on numpy arrays of any length.

The offline batch calls it with every return in history (arrays of length N, events of the whole
database); the online path calls it with one request (length 1) and only the rows of that customer,
order, card, device, store and employee. The same functions run in both cases, which is what makes
training and serving agree; `tests/features/test_parity.py` proves it on real databases.

Times are int64 microseconds since the epoch (UTC). "Before t" is strict everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.catalogue import DAY_US, SMOOTHING_UNITS

ONLINE_CHANNELS = ("web", "app", "marketplace")
APPAREL = ("apparel", "shoes")
REASON_SHARES = {
    "reason_changed_mind_share": "changed_mind",
    "reason_doesnt_fit_share": "doesnt_fit",
    "reason_defective_share": "defective",
    "reason_not_as_described_share": "not_as_described",
    "reason_damaged_share": "damaged_in_transit",
    "reason_wrong_item_share": "wrong_item",
}

Arrays = dict[str, np.ndarray]
SMALL_BATCH = 5_000  # below this many rows, some kernels take a plain-Python path
FEW_QUERIES = 64  # up to this many queries (a batch of online requests), window sums are per key


# --- inputs -----------------------------------------------------------------------------------------


@dataclass
class Requests:
    """N return requests with their lines, their orders' lines and payments (flattened, `req` = index)."""

    header: Arrays  # t, customer_id, customer_created, order_id, order_placed, order_channel, channel,
    #                 location_id, employee_id, refund_method
    lines: Arrays  # req, sku, style_id, category, size, quantity, reason, unit_paid, promo, window_days
    order_lines: Arrays  # req, style_id, size, quantity, value
    payments: Arrays  # req, method, amount

    @property
    def n(self) -> int:
        return len(self.header["t"])


@dataclass
class History:
    """Events strictly before the requests (the online path fetches only the related rows)."""

    orders: Arrays  # customer_id, t, value, units
    returns: Arrays  # customer_id, location_id, t, units, value, receiptless, changed_mind_lines, lines
    reviews: Arrays  # customer_id, t, bad
    links: Arrays  # customer_id, kind, value, t (first use of a card / device / postcode)
    store: Arrays | None = None  # precomputed store_* features (online: SQL aggregates)
    employee: Arrays | None = None  # precomputed emp_* features
    store_events: Arrays | None = (
        None  # offline: returns headers (location_id, employee_id, t, receiptless, cash)
    )
    store_orders: Arrays | None = None  # offline: orders (location_id, t)
    product: Arrays | None = None  # precomputed product rates (online: snapshot rows)
    product_events: dict[str, Arrays] = field(default_factory=dict)  # offline: sold / returned by level


# --- kernels ----------------------------------------------------------------------------------------


@dataclass
class Window:
    """For each query, the slice [lo, hi) of its key's events with lo <= time < hi, in `order`."""

    order: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    valid: np.ndarray  # query has a key
    index: EventIndex  # where the window came from (its running sums are shared)


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`pd.factorize` (missing -> -1); a plain dict for the few rows of one online request."""
    if len(values) > 64:
        return pd.factorize(values)
    seen: dict[object, int] = {}
    codes = np.fromiter(
        (-1 if v is None or v != v else seen.setdefault(v, len(seen)) for v in values),
        dtype=np.intp,
        count=len(values),
    )
    return codes, np.array(list(seen), dtype=object)


class EventIndex:
    """Events sorted by (key, time) once; then any number of window lookups for a set of queries."""

    def __init__(self, event_keys: np.ndarray, event_times: np.ndarray, query_keys: np.ndarray) -> None:
        self._sums: dict[object, tuple[np.ndarray, np.ndarray]] = {}
        keys = np.asarray(event_keys, dtype=object)
        queries = np.asarray(query_keys, dtype=object)
        self.single = len(queries) == 1
        if self.single:  # one request (serving)
            self._one(keys, np.asarray(event_times, dtype=np.int64), queries[0])
            return
        codes, uniques = factorize(np.concatenate([keys, queries]))
        event_code, self.query_code = codes[: len(keys)], codes[len(keys) :]
        self.valid = self.query_code >= 0
        times = np.asarray(event_times, dtype=np.int64)
        self.order = np.lexsort((times, event_code))
        self.sorted_time = times[self.order]
        # each key's block in the sorted events, from the counts per code (events without a key sort
        # first, code -1); a linear pass instead of a binary search per query
        keyed = event_code >= 0
        offsets = np.empty(len(uniques) + 1, dtype=np.int64)
        offsets[0] = len(keys) - int(keyed.sum())
        np.cumsum(np.bincount(event_code[keyed], minlength=len(uniques)), out=offsets[1:])
        offsets[1:] += offsets[0]
        code = np.where(self.valid, self.query_code, 0)
        self.start = np.where(self.valid, offsets[code], 0)
        self.end = np.where(self.valid, offsets[np.minimum(code + 1, len(uniques))], 0)

    def _one(self, keys: np.ndarray, times: np.ndarray, query: object) -> None:
        """The index for a single query: only its key's events, in time order (stable, as the lexsort
        of the general case orders them); no factorising of every key."""
        valid = query is not None and query == query
        self.valid = np.array([valid])
        mine = np.flatnonzero(keys == query) if valid and len(keys) else np.zeros(0, dtype=np.intp)
        self.order = mine[np.argsort(times[mine], kind="stable")]
        self.sorted_time = times[self.order]  # the query's block is all of it (see window)

    def window(self, query_times: np.ndarray, days: int | None) -> Window:
        query_times = np.asarray(query_times, dtype=np.int64)
        if self.single:  # the one block is the whole of sorted_time
            hi = np.searchsorted(self.sorted_time, query_times, side="left")
            lo = (
                np.zeros(1, dtype=np.int64)
                if days is None
                else np.searchsorted(self.sorted_time, query_times - days * DAY_US, side="left")
            )
            return Window(self.order, lo, hi, self.valid, self)
        hi = _search_in_blocks(self.sorted_time, self.start, self.end, query_times)
        lo = (
            self.start.copy()
            if days is None
            else _search_in_blocks(self.sorted_time, self.start, self.end, query_times - days * DAY_US)
        )
        return Window(self.order, np.where(self.valid, lo, 0), np.where(self.valid, hi, 0), self.valid, self)

    def block_sum(self, values: np.ndarray, start: int, end: int) -> np.ndarray:
        """0 then the cumulative sums of `values` over one key's block [start, end) of the index's order
        (as `running_sum` computes them for an index of that key alone)."""
        key = (id(values), start)
        held = self._sums.get(key)
        if held is None or held[0] is not values:
            ordered = np.asarray(values, dtype=float)[self.order[start:end]]
            cumulative = np.empty(len(ordered) + 1)
            cumulative[0] = 0.0
            np.cumsum(ordered, out=cumulative[1:])
            held = self._sums[key] = (values, cumulative)
        return held[1]

    def running_sum(self, values: np.ndarray) -> np.ndarray:
        """0 then the cumulative sums of `values` in the index's order: computed once per values array
        however many windows total it (the 30, 90 and 365-day windows share one)."""
        held = self._sums.get(id(values))
        if held is None or held[0] is not values:  # the array itself is kept, so its id is not reused
            ordered = np.asarray(values, dtype=float)[self.order]
            cumulative = np.empty(len(ordered) + 1)
            cumulative[0] = 0.0
            np.cumsum(ordered, out=cumulative[1:])
            held = self._sums[id(values)] = (values, cumulative)
        return held[1]


def window(
    event_keys: np.ndarray,
    event_times: np.ndarray,
    query_keys: np.ndarray,
    query_times: np.ndarray,
    days: int | None,
) -> Window:
    return EventIndex(event_keys, event_times, query_keys).window(query_times, days)


def _search_in_blocks(
    sorted_time: np.ndarray, start: np.ndarray, end: np.ndarray, value: np.ndarray
) -> np.ndarray:
    """Per query: first index in [start, end) whose time is >= value (vectorised binary search)."""
    lo, hi = start.copy(), end.copy()
    if len(sorted_time) == 0:
        return lo
    if len(lo) <= 8:  # online (one request): a searchsorted per block beats the vectorised loop
        for i in range(len(lo)):
            if lo[i] < hi[i]:
                lo[i] += np.searchsorted(sorted_time[lo[i] : hi[i]], value[i], side="left")
        return lo
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        go_right = active & (sorted_time[np.minimum(mid, len(sorted_time) - 1)] < value)
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)


def count(w: Window) -> np.ndarray:
    return np.where(w.valid, (w.hi - w.lo).astype(float), np.nan)


def total(w: Window, values: np.ndarray) -> np.ndarray:
    index = w.index
    if not index.single and len(w.hi) <= FEW_QUERIES:
        # a batch of online requests: each query's sums start at its own key's first event, exactly as
        # when the request is scored alone (a running sum over every key's events would carry the
        # rounding of the others' amounts, and an answer would depend on its batch-mates)
        out = np.full(len(w.hi), np.nan)
        for i in np.flatnonzero(w.valid):
            start = int(index.start[i])
            cumulative = index.block_sum(values, start, int(index.end[i]))
            out[i] = cumulative[w.hi[i] - start] - cumulative[w.lo[i] - start]
        return out
    cumulative = index.running_sum(values)
    return np.where(w.valid, cumulative[w.hi] - cumulative[w.lo], np.nan)


def last_time(w: Window, event_times: np.ndarray) -> np.ndarray:
    sorted_time = np.asarray(event_times, dtype=np.int64)[w.order]
    has = w.valid & (w.hi > w.lo)
    out = np.full(len(w.hi), np.nan)
    out[has] = sorted_time[w.hi[has] - 1]
    return out


def distinct(w: Window, values: np.ndarray) -> np.ndarray:
    """Distinct `values` among each query's events in its window."""
    sizes = np.where(w.valid, w.hi - w.lo, 0)
    if sizes.sum() == 0:
        return np.where(w.valid, 0.0, np.nan)
    query = np.repeat(np.arange(len(sizes)), sizes)
    offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    picked = w.order[np.repeat(w.lo, sizes) + offsets]
    value_code, _ = factorize(np.asarray(values, dtype=object)[picked])
    present = value_code >= 0  # a missing value is not a distinct value
    query, value_code = query[present], value_code[present]
    width = int(value_code.max()) + 1 if len(value_code) else 1
    pairs = np.unique(query.astype(np.int64) * width + value_code)
    result = np.bincount(pairs // width, minlength=len(sizes)).astype(float)
    return np.where(w.valid, result, np.nan)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator where the denominator is positive, else NaN (nothing divides by 0 or NaN)."""
    out = np.full(np.shape(denominator), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _per_request(req: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(req, weights=np.asarray(values, dtype=float), minlength=n)


def _extreme_per_request(req: np.ndarray, values: np.ndarray, n: int, largest: bool) -> np.ndarray:
    """Largest (or smallest) value per request ignoring NaN; NaN where a request has none."""
    values = np.asarray(values, dtype=float)
    empty = -np.inf if largest else np.inf
    if n == 1:  # one request (serving): one reduction instead of an unbuffered ufunc.at
        pick = (np.fmax if largest else np.fmin).reduce(values, initial=empty)
        return np.array([np.nan if np.isinf(pick) else pick])
    out = np.full(n, empty)
    (np.maximum if largest else np.minimum).at(out, req, np.where(np.isnan(values), empty, values))
    return np.where(np.isinf(out), np.nan, out)


def _max_per_request(req: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    return _extreme_per_request(req, values, n, largest=True)


def _min_per_request(req: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    return _extreme_per_request(req, values, n, largest=False)


def isin(values: np.ndarray, options: tuple) -> np.ndarray:
    """`np.isin` for object arrays; a set lookup per value for the few values of one request (numpy's
    machinery costs tens of microseconds before it compares anything)."""
    values = np.asarray(values, dtype=object)
    if len(values) <= 64:
        wanted = set(options)
        return np.fromiter((v in wanted for v in values), dtype=bool, count=len(values))
    return np.isin(values, options)


# --- feature groups ---------------------------------------------------------------------------------


_REASONS = tuple(REASON_SHARES.values())
_REASON_CODE = {reason: code for code, reason in enumerate(_REASONS)}


def _reason_shares(req: np.ndarray, reasons: np.ndarray, line_count: np.ndarray, n: int) -> Arrays:
    """Per request, the share of its lines with each reason of REASON_SHARES: one count of (reason,
    request) pairs for all of them, not a comparison, a count and a division per reason."""
    if len(reasons) <= 64:  # one request's few lines: a dict lookup each
        codes = np.fromiter((_REASON_CODE.get(r, -1) for r in reasons), dtype=np.int64, count=len(reasons))
    else:
        codes = pd.Index(_REASONS).get_indexer(np.asarray(reasons, dtype=object)).astype(np.int64)
    known = codes >= 0
    counts = np.bincount(codes[known] * n + req[known], minlength=len(_REASONS) * n).reshape(len(_REASONS), n)
    shares = np.full(counts.shape, np.nan)
    np.divide(counts, line_count, out=shares, where=line_count > 0)
    return {name: shares[k] for k, name in enumerate(REASON_SHARES)}


def _sizes_per_style(req: np.ndarray, style: np.ndarray, size: np.ndarray) -> dict[tuple[int, object], int]:
    """Distinct sizes of each (request, style) among the order's lines."""
    if len(req) < SMALL_BATCH:  # one request (serving): plain Python beats vectorising
        seen: dict[tuple[int, object], set] = {}
        for q, st, sz in zip(req.tolist(), style, size, strict=True):
            if sz is not None and sz == sz:
                seen.setdefault((q, st), set()).add(sz)
        return {key: len(sizes) for key, sizes in seen.items()}
    present = np.array([s is not None and s == s for s in size], dtype=bool)
    style_code, styles = pd.factorize(np.asarray(style, dtype=object)[present], use_na_sentinel=False)
    size_code, sizes = pd.factorize(np.asarray(size, dtype=object)[present])
    pair = req[present].astype(np.int64) * max(len(styles), 1) + style_code
    distinct = np.unique(pair * max(len(sizes), 1) + size_code) // max(len(sizes), 1)
    pairs, counts = np.unique(distinct, return_counts=True)
    width = max(len(styles), 1)
    vocabulary = np.asarray(styles, dtype=object)
    vocabulary[pd.isna(vocabulary)] = None  # a missing style stays the None key the lookup uses
    style_of = vocabulary[pairs % width]
    return dict(
        zip(zip((pairs // width).tolist(), style_of.tolist(), strict=True), counts.tolist(), strict=True)
    )


def request_features(r: Requests) -> Arrays:
    h, lines, order_lines, payments = r.header, r.lines, r.order_lines, r.payments
    n = r.n
    t = h["t"].astype(np.int64)
    has_order = np.array([o is not None and o == o for o in h["order_id"]], dtype=bool)
    channel = np.asarray(h["channel"], dtype=object)
    order_online = isin(h["order_channel"], ONLINE_CHANNELS) & has_order
    refund = np.asarray(h["refund_method"], dtype=object)
    out: Arrays = {
        "receiptless": (~has_order).astype(float),
        "return_channel_store": (channel == "store").astype(float),
        "return_channel_mail": (channel == "mail").astype(float),
        "return_channel_online": isin(channel, ("web", "app")).astype(float),
        "cross_channel": (order_online & (channel == "store")).astype(float),
        "refund_cash": (refund == "cash").astype(float),
        "refund_store_credit": (refund == "store_credit").astype(float),
        "refund_exchange": (refund == "exchange").astype(float),
        "has_employee": np.array([e is not None and e == e for e in h["employee_id"]], dtype=float),
        "order_online": order_online.astype(float),
    }
    placed = np.asarray(h["order_placed"], dtype=float)
    days_since = np.where(has_order, (t - placed) / DAY_US, np.nan)
    out["days_since_purchase"] = days_since
    req = lines["req"].astype(np.int64)
    quantity = lines["quantity"].astype(float)
    value = quantity * lines["unit_paid"].astype(float)
    line_left = lines["window_days"].astype(float) - days_since[req]
    out["days_left_in_window"] = _min_per_request(req, line_left, n)
    out["return_units"] = _per_request(req, quantity, n)
    line_count = np.bincount(req, minlength=n).astype(float)
    out["return_lines"] = line_count
    out["return_value"] = _per_request(req, value, n)
    order_req = order_lines["req"].astype(np.int64)
    order_value = _per_request(order_req, order_lines["value"], n)
    out["order_value"] = np.where(has_order, order_value, np.nan)
    out["order_units"] = np.where(has_order, _per_request(order_req, order_lines["quantity"], n), np.nan)
    out["order_lines"] = np.where(has_order, np.bincount(order_req, minlength=n).astype(float), np.nan)
    out["return_share_of_order"] = np.where(has_order, _ratio(out["return_value"], order_value), np.nan)
    out["promo_share"] = _ratio(
        _per_request(req, value * lines["promo"].astype(float), n), out["return_value"]
    )
    pay_req = payments["req"].astype(np.int64)
    methods = np.asarray(payments["method"], dtype=object)
    amounts = payments["amount"].astype(float)
    paid = _per_request(pay_req, amounts, n)
    out["gift_card_share"] = np.where(
        has_order, _ratio(_per_request(pay_req, amounts * (methods == "gift_card"), n), paid), np.nan
    )
    out["cash_share"] = np.where(
        has_order, _ratio(_per_request(pay_req, amounts * (methods == "cash"), n), paid), np.nan
    )
    out["tender_count"] = np.where(has_order, np.bincount(pay_req, minlength=n).astype(float), np.nan)
    out.update(_reason_shares(req, lines["reason"], line_count, n))
    # bracketing: returned lines of a style the order holds in two or more sizes
    spread = _sizes_per_style(order_req, order_lines["style_id"], order_lines["size"])
    keys = [(int(q), s) for q, s in zip(req, lines["style_id"], strict=True)]
    out["bracketing_lines"] = _per_request(
        req, np.array([spread.get(k, 0) >= 2 for k in keys], dtype=float), n
    )
    out["max_unit_price"] = _max_per_request(req, lines["unit_paid"].astype(float), n)
    category = np.asarray(lines["category"], dtype=object)
    out["electronics_share"] = _ratio(
        _per_request(req, value * (category == "electronics"), n), out["return_value"]
    )
    out["apparel_share"] = _ratio(_per_request(req, value * isin(category, APPAREL), n), out["return_value"])
    known = np.array([c is not None and c == c for c in h["customer_id"]], dtype=bool)
    out["customer_known"] = known.astype(float)
    created = np.asarray(h["customer_created"], dtype=float)
    out["customer_tenure_days"] = np.where(known, (t - created) / DAY_US, np.nan)
    return out


def customer_features(r: Requests, history: History) -> Arrays:
    h, out = r.header, {}
    t = h["t"].astype(np.int64)
    customer = np.asarray(h["customer_id"], dtype=object)
    orders, returns = history.orders, history.returns
    by_orders = EventIndex(orders["customer_id"], orders["t"], customer)
    by_returns = EventIndex(returns["customer_id"], returns["t"], customer)
    for days in (30, 90, 365):
        w = by_orders.window(t, days)
        out[f"cust_orders_{days}d"] = count(w)
        out[f"cust_spend_{days}d"] = total(w, orders["value"])
        if days == 365:
            bought_units = total(w, orders["units"])
            bought_value = out["cust_spend_365d"]
        w = by_returns.window(t, days)
        out[f"cust_returns_{days}d"] = count(w)
        out[f"cust_return_value_{days}d"] = total(w, returns["value"])
        if days == 365:
            out["cust_return_rate_units_365d"] = _ratio(total(w, returns["units"]), bought_units)
            out["cust_return_rate_value_365d"] = _ratio(out["cust_return_value_365d"], bought_value)
            out["cust_receiptless_returns_365d"] = total(w, returns["receiptless"])
            out["cust_changed_mind_share_365d"] = _ratio(
                total(w, returns["changed_mind_lines"]), total(w, returns["lines"])
            )
        if days == 30:
            out["cust_return_locations_30d"] = distinct(w, returns["location_id"])
    last = last_time(by_returns.window(t, None), returns["t"])
    out["cust_days_since_last_return"] = (t - last) / DAY_US
    reviews = history.reviews
    w = window(reviews["customer_id"], reviews["t"], customer, t, None)
    out["cust_prior_reviews"] = count(w)
    out["cust_prior_fraud"] = total(w, reviews["bad"])
    linked, linked_fraud = linked_accounts(customer, t, history.links, reviews)
    out["cust_linked_accounts"] = linked
    out["cust_linked_fraud"] = linked_fraud
    return out


def _first_uses(
    customer: np.ndarray, kind: np.ndarray, value: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(customer code, link-value code, first time) per distinct (customer, kind, value)."""
    customer_code, customers = factorize(np.asarray(customer, dtype=object))
    kind_code, kinds = factorize(np.asarray(kind, dtype=object))
    value_code, _ = factorize(np.asarray(value, dtype=object))
    link_code, _ = factorize(value_code.astype(np.int64) * max(len(kinds), 1) + kind_code)
    composite = customer_code.astype(np.int64) * (int(link_code.max()) + 1) + link_code
    order = np.lexsort((t, composite))
    first = order[np.unique(composite[order], return_index=True)[1]]
    return customer_code[first], link_code[first], np.asarray(t, dtype=np.int64)[first], customers


def _shared(customer: np.ndarray, kind: np.ndarray, value: np.ndarray) -> bool:
    """Whether some card, device or postcode is used by two different accounts (a missing id or value
    counting as one key, as `factorize` codes it): without one, nobody is linked. For the few rows of
    an online request (most customers share nothing), a dict instead of the pairing below."""
    first_user: dict[tuple[object, object], object] = {}
    for who, what, which in zip(customer, kind, value, strict=True):
        who = None if who is None or who != who else who
        what = None if what is None or what != what else what
        which = None if which is None or which != which else which
        if first_user.setdefault((what, which), who) != who:
            return True
    return False


def linked_accounts(
    customer: np.ndarray, t: np.ndarray, links: Arrays, reviews: Arrays
) -> tuple[np.ndarray, np.ndarray]:
    """Other accounts that used one of the customer's cards, devices or postcodes (both uses before t),
    and how many of them had a fraud/abuse decision before t."""
    valid = np.array([c is not None and c == c for c in customer], dtype=bool)
    zero = np.where(valid, 0.0, np.nan)
    if len(links["customer_id"]) == 0 or (
        len(links["customer_id"]) <= 64 and not _shared(links["customer_id"], links["kind"], links["value"])
    ):
        return zero, zero.copy()
    who, link, since, customers = _first_uses(links["customer_id"], links["kind"], links["value"], links["t"])
    # all ordered pairs of accounts sharing a link value: group by value, pair every member with every other
    order = np.argsort(link, kind="stable")
    who, link, since = who[order], link[order], since[order]
    starts = np.searchsorted(link, link, side="left")
    sizes = np.searchsorted(link, link, side="right") - starts
    left = np.repeat(np.arange(len(link)), sizes)
    right = np.repeat(starts, sizes) + (np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    other = who[left] != who[right]
    left, right = left[other], right[other]
    if len(left) == 0:
        return zero, zero.copy()
    pair_since = np.maximum(since[left], since[right])
    pair_key = who[left].astype(np.int64) * len(customers) + who[right]
    order = np.lexsort((pair_since, pair_key))
    first = order[np.unique(pair_key[order], return_index=True)[1]]
    a, b, pair_since = who[left][first], who[right][first], pair_since[first]
    names = np.asarray(customers, dtype=object)
    linked = count(window(names[a], pair_since, customer, t, None))
    bad = reviews["bad"].astype(bool)
    if not bad.any():
        return linked, zero.copy()
    bad_who = np.asarray(reviews["customer_id"], dtype=object)[bad]
    bad_t = np.asarray(reviews["t"], dtype=np.int64)[bad]
    first_bad = {}
    for name, moment in zip(bad_who, bad_t, strict=True):
        if name not in first_bad or moment < first_bad[name]:
            first_bad[name] = moment
    flagged = np.array([first_bad.get(name, -1) for name in names[b]], dtype=np.int64)
    keep = flagged >= 0
    fraud = count(window(names[a][keep], np.maximum(pair_since[keep], flagged[keep]), customer, t, None))
    return linked, np.where(valid, _zero_nan(fraud), np.nan)


def store_features(r: Requests, history: History) -> Arrays:
    if history.store is not None:
        return history.store
    h, events, orders = r.header, history.store_events, history.store_orders
    assert events is not None and orders is not None
    t = h["t"].astype(np.int64)
    location = np.asarray(h["location_id"], dtype=object)
    w = window(events["location_id"], events["t"], location, t, 30)
    returns = count(w)
    placed = count(window(orders["location_id"], orders["t"], location, t, 30))
    return {
        "store_returns_30d": returns,
        "store_receiptless_share_30d": _ratio(total(w, events["receiptless"]), returns),
        "store_return_rate_30d": _ratio(returns, placed),
    }


def employee_features(r: Requests, history: History) -> Arrays:
    if history.employee is not None:
        return history.employee
    h, events = r.header, history.store_events
    assert events is not None
    t = h["t"].astype(np.int64)
    w = window(events["employee_id"], events["t"], np.asarray(h["employee_id"], dtype=object), t, 30)
    returns = count(w)
    return {
        "emp_returns_30d": returns,
        "emp_receiptless_share_30d": _ratio(total(w, events["receiptless"]), returns),
        "emp_cash_share_30d": _ratio(total(w, events["cash"]), returns),
    }


def _zero_nan(values: np.ndarray) -> np.ndarray:
    """NaN -> 0 (the values here are finite or NaN; `np.nan_to_num` costs ten times more per call)."""
    return np.where(np.isnan(values), 0.0, values)


def day_start(t: np.ndarray) -> np.ndarray:
    return (np.asarray(t, dtype=np.int64) // DAY_US) * DAY_US


def product_counts(
    lines: Arrays, line_t: np.ndarray, product_events: dict[str, Arrays]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Units sold and returned per level (sku, style, category) before 00:00 UTC of each line's day."""
    cutoff = day_start(line_t)
    out = {}
    for level, column in (("sku", "sku"), ("style", "style_id"), ("category", "category")):
        sold, returned = product_events[f"sold_{level}"], product_events[f"returned_{level}"]
        keys = np.asarray(lines[column], dtype=object)
        sold_units = total(window(sold["key"], sold["t"], keys, cutoff, None), sold["quantity"])
        returned_units = total(
            window(returned["key"], returned["t"], keys, cutoff, None), returned["quantity"]
        )
        out[level] = (_zero_nan(sold_units), _zero_nan(returned_units))
    return out


def product_rates(counts: dict[str, tuple[np.ndarray, np.ndarray]]) -> Arrays:
    """Per line: category rate, and sku and style rates smoothed toward it."""
    sold_c, returned_c = counts["category"]
    category_rate = _ratio(returned_c, sold_c)
    prior = _zero_nan(category_rate)
    rates = {"category_return_rate": category_rate}
    for level in ("sku", "style"):
        sold, returned = counts[level]
        rates[f"{level}_return_rate"] = (returned + SMOOTHING_UNITS * prior) / (sold + SMOOTHING_UNITS)
    rates["style_rate_lift"] = _ratio(rates["style_return_rate"], category_rate)
    return rates


def product_features(r: Requests, history: History) -> Arrays:
    if history.product is not None:
        rates = history.product
    else:
        line_t = r.header["t"].astype(np.int64)[r.lines["req"].astype(np.int64)]
        rates = product_rates(product_counts(r.lines, line_t, history.product_events))
    req, n = r.lines["req"].astype(np.int64), r.n
    return {
        name: _max_per_request(req, rates[name], n)
        for name in ("sku_return_rate", "style_return_rate", "category_return_rate", "style_rate_lift")
    }


def compute(r: Requests, history: History) -> Arrays:
    """Every fraud feature for the requests, as float arrays (NaN = unknown)."""
    out: Arrays = {}
    out.update(request_features(r))
    out.update(customer_features(r, history))
    out.update(store_features(r, history))
    out.update(employee_features(r, history))
    out.update(product_features(r, history))
    return out
