"""LightGBM predictions through the library's C entry points (the serving hot path).

`Booster.predict` builds a predictor object, copies its parameters and checks its input on every call:
about 80 microseconds before a tree is walked, more than a small model's whole prediction. LightGBM's
`LGBM_BoosterPredictForMatSingleRowFast` keeps that set-up in a handle made once per booster and kind of
output, and predicts one float64 row in place. The handles are per thread (the C side reuses a buffer
per handle), created on first use and freed with the predictor. A batch of rows (the scores served
together) goes to `LGBM_BoosterPredictForMat` in one call instead: the trees are walked row after row in
C, with no Python between the rows (TreeSHAP on the fraud champion, 16 rows: 128 us per row against
173 us one at a time, measured on the 2026-12-02 machine); a single row keeps the single-row handle.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading

import lightgbm as lgb
import numpy as np
from lightgbm import basic

_KINDS = {
    "raw": basic._C_API_PREDICT_RAW_SCORE,
    "normal": basic._C_API_PREDICT_NORMAL,
    "contrib": basic._C_API_PREDICT_CONTRIB,
}


_PREDICT = basic._LIB.LGBM_BoosterPredictForMatSingleRowFast
_PREDICT_MATRIX = basic._LIB.LGBM_BoosterPredictForMat
_ONE_THREAD = basic._c_str("num_threads=1")


def _is_row(row: np.ndarray) -> bool:
    """Already a contiguous 1-d float64 array (no copy needed)."""
    return type(row) is np.ndarray and row.ndim == 1 and row.dtype == np.float64 and row.flags.c_contiguous


class RowPredictor:
    """Predicts single rows of `booster` (same values as `booster.predict(row, ...)`)."""

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster  # holds the model alive as long as the handles
        self.columns = booster.num_feature()
        # as Booster.predict: every tree of a saved model unless it recorded a best iteration
        self.iterations = booster.best_iteration if booster.best_iteration > 0 else -1
        outputs = booster.num_model_per_iteration()
        self._sizes = {"raw": outputs, "normal": outputs, "contrib": (self.columns + 1) * outputs}
        self._local = threading.local()
        self._handles: list[ctypes.c_void_p] = []
        self._lock = threading.Lock()

    def _handle(self, kind: str) -> ctypes.c_void_p:
        handles = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = {}
        handle = handles.get(kind)
        if handle is None:
            handle = ctypes.c_void_p()
            basic._safe_call(
                basic._LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                    self.booster._handle,
                    ctypes.c_int(_KINDS[kind]),
                    ctypes.c_int(0),
                    ctypes.c_int(self.iterations),
                    ctypes.c_int(basic._C_API_DTYPE_FLOAT64),
                    ctypes.c_int32(self.columns),
                    _ONE_THREAD,
                    ctypes.byref(handle),
                )
            )
            handles[kind] = handle
            with self._lock:
                self._handles.append(handle)
        return handle

    def predict(self, row: np.ndarray, kind: str = "normal") -> np.ndarray:
        """One row's prediction: `raw` margin, `normal` output, or `contrib` (feature contributions and
        the base value last, summing to the margin)."""
        data = row if _is_row(row) else np.ascontiguousarray(row, dtype=np.float64).reshape(-1)
        if data.shape[0] != self.columns:
            raise ValueError(f"the model takes {self.columns} features, the row has {data.shape[0]}")
        out = np.empty(self._sizes[kind], dtype=np.float64)
        length = ctypes.c_int64(0)
        # raw addresses as c_void_p: `ndarray.ctypes.data_as` builds a pointer type per call (several
        # microseconds each, more than a small model's trees)
        basic._safe_call(
            _PREDICT(
                self._handle(kind),
                ctypes.c_void_p(data.ctypes.data),
                ctypes.byref(length),
                ctypes.c_void_p(out.ctypes.data),
            )
        )
        return out[: length.value]

    def predict_rows(self, rows: np.ndarray, kind: str = "normal") -> np.ndarray:
        """Several rows (n x features) at once, one C call: a matrix of n x `predict`'s width, row i the
        same values as `predict(rows[i], kind)`. One thread: the serving processes share the cores."""
        data = np.ascontiguousarray(rows, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] != self.columns:
            raise ValueError(f"the model takes {self.columns} features, the rows have shape {data.shape}")
        count = data.shape[0]
        width = self._sizes[kind]
        if count == 1:  # the single-row handle skips the matrix call's set-up (10-25 us here)
            return self.predict(data[0], kind).reshape(1, width)
        out = np.empty(count * width, dtype=np.float64)
        if count == 0:
            return out.reshape(0, width)
        length = ctypes.c_int64(0)
        basic._safe_call(
            _PREDICT_MATRIX(
                self.booster._handle,
                ctypes.c_void_p(data.ctypes.data),
                ctypes.c_int(basic._C_API_DTYPE_FLOAT64),
                ctypes.c_int32(count),
                ctypes.c_int32(self.columns),
                ctypes.c_int(1),  # row major
                ctypes.c_int(_KINDS[kind]),
                ctypes.c_int(0),  # from the first iteration
                ctypes.c_int(self.iterations),
                _ONE_THREAD,
                ctypes.byref(length),
                ctypes.c_void_p(out.ctypes.data),
            )
        )
        if length.value != count * width:
            raise RuntimeError(f"LightGBM gave {length.value} values for {count} rows of {width}")
        return out.reshape(count, width)

    def _free(self) -> None:
        with self._lock:
            handles, self._handles = self._handles, []
        for handle in handles:
            basic._LIB.LGBM_FastConfigFree(handle)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: the library may be gone already
            self._free()
