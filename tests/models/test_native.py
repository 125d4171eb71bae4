"""The fast single-row predictor gives exactly what `Booster.predict` gives, from any thread."""

from __future__ import annotations

import threading

import lightgbm as lgb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.native import RowPredictor

COLUMNS = 6


def _booster(objective: str) -> lgb.Booster:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(600, COLUMNS))
    x[rng.random(x.shape) < 0.1] = np.nan
    signal = np.nan_to_num(x[:, 0]) - 2 * np.nan_to_num(x[:, 1]) + rng.normal(size=600)
    y = (signal > 0).astype(float) if objective == "binary" else signal
    params = {"objective": objective, "num_leaves": 7, "verbose": -1, "num_threads": 1, "seed": 1}
    return lgb.train(params, lgb.Dataset(x, y), num_boost_round=25)


BOOSTERS = {objective: _booster(objective) for objective in ("binary", "regression")}
PREDICTORS = {objective: RowPredictor(booster) for objective, booster in BOOSTERS.items()}
ROWS = arrays(
    np.float64,
    COLUMNS,
    elements=st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(float("nan"))),
)


@settings(max_examples=200, deadline=None)
@given(row=ROWS, objective=st.sampled_from(sorted(BOOSTERS)))
def test_single_rows_equal_booster_predict(row: np.ndarray, objective: str) -> None:
    booster, predictor = BOOSTERS[objective], PREDICTORS[objective]
    matrix = row.reshape(1, -1)
    assert predictor.predict(row, "normal")[0] == booster.predict(matrix, num_threads=1)[0]
    assert predictor.predict(row, "raw")[0] == booster.predict(matrix, raw_score=True, num_threads=1)[0]
    contributions = predictor.predict(row, "contrib")
    np.testing.assert_array_equal(contributions, booster.predict(matrix, pred_contrib=True, num_threads=1)[0])
    assert contributions.shape == (COLUMNS + 1,)
    assert contributions.sum() == pytest.approx(predictor.predict(row, "raw")[0], abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(row=ROWS)
def test_rows_in_any_layout_give_the_same_answer(row: np.ndarray) -> None:
    """A contiguous float64 row goes to the library as it is; anything else (a column of a Fortran
    matrix, a list, a 2-d single row, float32) is copied first, and all give the same values."""
    predictor = PREDICTORS["binary"]
    expected = predictor.predict(row, "contrib")
    fortran = np.asfortranarray(np.stack([row, row]))
    for layout in (fortran[0], list(row), row.reshape(1, -1), row[::-1][::-1].copy()):
        np.testing.assert_array_equal(predictor.predict(layout, "contrib"), expected)
    assert not fortran[0].flags.c_contiguous  # the strided case is really exercised
    finite = row[~np.isnan(row)]
    if np.all(np.abs(finite) < 1e30):  # float32 keeps these exactly only where they fit: compare to itself
        single = row.astype(np.float32)
        np.testing.assert_array_equal(predictor.predict(single), predictor.predict(single.astype(np.float64)))


@settings(max_examples=60, deadline=None)
@given(
    rows=arrays(
        np.float64,
        st.tuples(st.integers(1, 12), st.just(COLUMNS)),
        elements=st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.just(float("nan"))),
    ),
    objective=st.sampled_from(sorted(BOOSTERS)),
    kind=st.sampled_from(["normal", "raw", "contrib"]),
)
def test_rows_together_equal_each_row_alone(rows: np.ndarray, objective: str, kind: str) -> None:
    """A batch of rows in one call gives each row exactly what it gets alone (the scores of a batch are
    the scores served alone), whatever the matrix layout."""
    predictor = PREDICTORS[objective]
    expected = np.stack([predictor.predict(row, kind) for row in rows])
    for layout in (rows, np.asfortranarray(rows), rows.tolist()):
        together = predictor.predict_rows(layout, kind)
        assert together.shape == expected.shape
        np.testing.assert_array_equal(together, expected)


def test_wrong_width_is_refused() -> None:
    with pytest.raises(ValueError, match="takes 6 features, the row has 5"):
        PREDICTORS["binary"].predict(np.zeros(5))
    with pytest.raises(ValueError, match=r"takes 6 features, the rows have shape \(2, 5\)"):
        PREDICTORS["binary"].predict_rows(np.zeros((2, 5)))
    assert PREDICTORS["binary"].predict_rows(np.zeros((0, COLUMNS)), "contrib").shape == (0, COLUMNS + 1)


def test_threads_each_get_their_own_handle_and_the_right_answers() -> None:
    booster, predictor = BOOSTERS["regression"], PREDICTORS["regression"]
    rows = np.random.default_rng(3).normal(size=(400, COLUMNS))
    expected = booster.predict(rows, num_threads=1)
    wrong: list[int] = []

    def run(offset: int) -> None:
        for i in range(offset, len(rows), 4):
            if predictor.predict(rows[i])[0] != expected[i]:
                wrong.append(i)

    threads = [threading.Thread(target=run, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
