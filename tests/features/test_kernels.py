"""The engine's vectorised kernels against plain-Python definitions (both paths of each kernel)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features import engine
from features.catalogue import DAY_US

keys = st.sampled_from([None, "a", "b", "c", "d"])


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(keys, st.integers(0, 40)), max_size=60),
    queries=st.lists(st.tuples(keys, st.integers(0, 45)), min_size=1, max_size=20),
    days=st.sampled_from([None, 1, 7]),
)
def test_window_counts_and_totals_match_their_definition(events, queries, days) -> None:
    event_keys = np.array([k for k, _ in events], dtype=object)
    event_times = np.array([t * DAY_US // 4 for _, t in events], dtype=np.int64)
    weights = np.arange(len(events), dtype=float) + 1
    query_keys = np.array([k for k, _ in queries], dtype=object)
    query_times = np.array([t * DAY_US // 4 for _, t in queries], dtype=np.int64)
    w = engine.window(event_keys, event_times, query_keys, query_times, days)
    counts = engine.count(w)
    totals = engine.total(w, weights)
    for i, (key, t) in enumerate(zip(query_keys, query_times, strict=True)):
        inside = [
            j
            for j, (k, et) in enumerate(zip(event_keys, event_times, strict=True))
            if key is not None and k == key and et < t and (days is None or et >= t - days * DAY_US)
        ]
        if key is None:
            assert np.isnan(counts[i])
            continue
        assert counts[i] == len(inside)
        assert totals[i] == pytest.approx(sum(weights[j] for j in inside))


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(keys, st.integers(0, 40), st.sampled_from(["x", "y", None])), max_size=60),
    queries=st.lists(st.tuples(keys, st.integers(0, 45)), min_size=2, max_size=10),
    days=st.sampled_from([None, 1, 7]),
)
def test_one_query_index_equals_the_batch_index(events, queries, days) -> None:
    """Serving builds the index for one request (its own path); every window kernel agrees with the
    batch index built for many requests at once."""
    event_keys = np.array([k for k, _, _ in events], dtype=object)
    event_times = np.array([t * DAY_US // 4 for _, t, _ in events], dtype=np.int64)
    labels = np.array([v for _, _, v in events], dtype=object)
    weights = np.arange(len(events), dtype=float) + 1
    query_keys = np.array([k for k, _ in queries], dtype=object)
    query_times = np.array([t * DAY_US // 4 for _, t in queries], dtype=np.int64)
    batch = engine.EventIndex(event_keys, event_times, query_keys).window(query_times, days)
    for i in range(len(queries)):
        one = engine.EventIndex(event_keys, event_times, query_keys[i : i + 1]).window(
            query_times[i : i + 1], days
        )
        for kernel in (
            engine.count,
            lambda w: engine.total(w, weights),
            lambda w: engine.last_time(w, event_times),
            lambda w: engine.distinct(w, labels),
        ):
            np.testing.assert_array_equal(kernel(one), kernel(batch)[i : i + 1])
        if query_keys[i] is not None:  # distinct counts the present labels in the window only
            inside = {
                label
                for key, t, label in zip(event_keys, event_times, labels, strict=True)
                if key == query_keys[i]
                and t < query_times[i]
                and (days is None or t >= query_times[i] - days * DAY_US)
                and label is not None
            }
            assert engine.distinct(batch, labels)[i] == len(inside)


@pytest.mark.parametrize("small", [True, False])
@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 6),
            st.sampled_from([None, "S1", "S2", "S3"]),
            st.sampled_from([None, float("nan"), "S", "M", "L"]),
        ),
        max_size=50,
    )
)
def test_sizes_per_style_counts_distinct_sizes(rows, small) -> None:
    req = np.array([r for r, _, _ in rows], dtype=np.int64)
    style = np.array([s for _, s, _ in rows], dtype=object)
    size = np.array([z for _, _, z in rows], dtype=object)
    expected: dict = {}
    for q, s, z in rows:
        if z is not None and z == z:
            expected.setdefault((q, s), set()).add(z)
    original = engine.SMALL_BATCH
    engine.SMALL_BATCH = 10**9 if small else 0
    try:
        found = engine._sizes_per_style(req, style, size)
    finally:
        engine.SMALL_BATCH = original
    assert found == {key: len(sizes) for key, sizes in expected.items()}


@given(st.lists(st.sampled_from([None, float("nan"), "a", "b", "c", "d"]), max_size=80))
def test_small_factorize_matches_pandas(values) -> None:
    import pandas as pd

    array = np.array(values, dtype=object)
    codes, uniques = engine.factorize(array)
    expected_codes, expected_uniques = pd.factorize(array)
    assert codes.tolist() == expected_codes.tolist()
    assert list(uniques) == list(expected_uniques)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "SKU-1", "é", ""])), max_size=40))
def test_text_through_the_dictionary_equals_row_by_row(values) -> None:
    import pandas as pd

    from features.sources import _text

    series = pd.Series(values, dtype="string[pyarrow]")
    assert list(_text(series, repeated=True)) == list(_text(series)) == values


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from([None, float("nan"), "C1", "C2", 3, 4]),
            st.sampled_from(["card", "device", "postcode"]),
            st.sampled_from([None, float("nan"), "v1", "v2", 7]),
            st.integers(0, 20),
        ),
        max_size=60,
    ),
    queries=st.lists(
        st.tuples(st.sampled_from([None, "C1", "C2", 3, 4]), st.integers(0, 25)), min_size=1, max_size=4
    ),
)
def test_nobody_linked_shortcut_equals_the_pairing(rows, queries) -> None:
    """The dict check of a request's few link rows (is any card, device or postcode used by two accounts?)
    answers as the pairing does: when it says no, the full computation finds nobody linked."""
    links = {
        "customer_id": np.array([r[0] for r in rows], dtype=object),
        "kind": np.array([r[1] for r in rows], dtype=object),
        "value": np.array([r[2] for r in rows], dtype=object),
        "t": np.array([r[3] * DAY_US for r in rows], dtype=np.int64),
    }
    reviews = {
        "customer_id": np.array(["C1", 4], dtype=object),
        "t": np.array([2 * DAY_US, 5 * DAY_US], dtype=np.int64),
        "bad": np.array([1.0, 1.0]),
    }
    customer = np.array([q for q, _ in queries], dtype=object)
    t = np.array([d * DAY_US for _, d in queries], dtype=np.int64)
    shortcut = engine.linked_accounts(customer, t, links, reviews)
    original = engine._shared
    engine._shared = lambda *_: True  # always pair
    try:
        paired = engine.linked_accounts(customer, t, links, reviews)
    finally:
        engine._shared = original
    for fast, full in zip(shortcut, paired, strict=True):
        np.testing.assert_array_equal(fast, full)
    if rows and not engine._shared(links["customer_id"], links["kind"], links["value"]):
        valid = np.array([c is not None for c in customer])
        np.testing.assert_array_equal(paired[0], np.where(valid, 0.0, np.nan))


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from([*engine.REASON_SHARES.values(), "other", None])),
        max_size=90,
    )
)
def test_reason_shares_equal_one_share_per_reason(lines) -> None:
    """All reason shares from one count equal each reason's count over the request's lines, for the few
    lines of one request (dict lookups) and for many (pandas), bit for bit."""
    n = 6
    req = np.array([q for q, _ in lines], dtype=np.int64)
    reasons = np.array([r for _, r in lines], dtype=object)
    line_count = np.bincount(req, minlength=n).astype(float)
    found = engine._reason_shares(req, reasons, line_count, n)
    for name, reason in engine.REASON_SHARES.items():
        expected = engine._ratio(engine._per_request(req, reasons == reason, n), line_count)
        np.testing.assert_array_equal(found[name], expected)
