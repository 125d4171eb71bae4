"""The recovery model: LightGBM regressor of the net value per unit of a (returned line, disposition)
pair, trained on realised outcomes; routing picks the feasible disposition with the highest estimate.

The static routing table (condition -> outlet) leaves value on the table: used electronics are worth
refurbishing, some vendors credit defective goods and others do not, cheap used apparel is better
donated than shipped to a liquidator. The model learns those from the outcomes the static policy and
its exploration produced.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.catalogue import LINE_FEATURE_SET, LINE_FEATURES_V1, names
from models.native import RowPredictor
from oms import enums
from oms.disposition import FEASIBLE, STATIC_ROUTING, Choice, ReturnedItem

CATEGORICAL = ("category", "brand", "condition", "reason", "location_kind", "disposition")
SEED = 42
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "metric": "l1",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 0.9,
    "lambda_l2": 1.0,
    "seed": SEED,
    "deterministic": True,
    "force_row_wise": True,
    "num_threads": 2,
    "verbose": -1,
    "cat_smooth": 10,
}


@dataclass
class RecoveryModel:
    booster: lgb.Booster
    features: list[str]  # line features + "disposition"
    vocab: dict[str, list[str]]
    feature_set: str = LINE_FEATURE_SET
    version: str | None = None

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        columns = []
        for name in self.features:
            values = frame[name]
            if name in self.vocab:
                lookup = {v: i for i, v in enumerate(self.vocab[name])}
                columns.append(values.map(lambda v, lookup=lookup: lookup.get(v, -1)).to_numpy(dtype=float))
            else:
                columns.append(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float))
        return np.column_stack(columns) if columns else np.zeros((len(frame), 0))

    @functools.cached_property
    def rows(self) -> RowPredictor:
        """Single-row predictions for serving (LightGBM's fast C path; same values as `booster`)."""
        return RowPredictor(self.booster)

    @functools.cached_property
    def codes(self) -> dict[str, dict[Any, int]]:
        """The vocabularies as value -> code (unknown values encode as -1)."""
        return {name: {v: i for i, v in enumerate(values)} for name, values in self.vocab.items()}

    def predict_unit(self, frame: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(self.encode(frame), num_threads=1)

    def route(self, lines: pd.DataFrame) -> pd.DataFrame:
        """For each line: every feasible disposition's estimated value (per line), and the best one."""
        options = lines.reset_index(drop=True).assign(_line=lambda f: np.arange(len(f)))
        options["disposition"] = options["condition"].map(lambda c: list(FEASIBLE.get(c, ())))
        options = options.explode("disposition").dropna(subset=["disposition"])
        options["estimate"] = self.predict_unit(options) * options["quantity"].to_numpy(float)
        best = (
            options.sort_values(["_line", "estimate"], ascending=[True, False], kind="stable")
            .groupby("_line")
            .head(1)
        )
        out = lines.reset_index(drop=True).copy()
        out["model_disposition"] = best.set_index("_line")["disposition"].reindex(range(len(out))).to_numpy()
        out["model_estimate"] = best.set_index("_line")["estimate"].reindex(range(len(out))).to_numpy()
        return out

    def meta(self) -> dict[str, Any]:
        return {"feature_set": self.feature_set, "features": self.features, "vocab": self.vocab}

    @classmethod
    def from_meta(
        cls, booster: lgb.Booster, meta: dict[str, Any], version: str | None = None
    ) -> RecoveryModel:
        return cls(
            booster,
            list(meta["features"]),
            {k: list(v) for k, v in meta["vocab"].items()},
            meta.get("feature_set", LINE_FEATURE_SET),
            version,
        )


@dataclass
class RecoveryResult:
    model: RecoveryModel
    metrics: dict[str, float]
    test: pd.DataFrame
    params: dict[str, Any]
    rows: dict[str, int] = field(default_factory=dict)


def outcomes(lines: pd.DataFrame) -> pd.DataFrame:
    """Disposed lines with a realised value: the training rows (value per unit is the target)."""
    done = lines[
        lines["disposition"].notna() & lines["recovery_value"].notna() & lines["condition"].notna()
    ].copy()
    done["unit_value"] = done["recovery_value"].astype(float) / done["quantity"].astype(float)
    return done


def train_recovery(
    lines: pd.DataFrame, *, test_share: float = 0.2, params: dict[str, Any] | None = None
) -> RecoveryResult:
    """Train on the earlier lines, test on the latest `test_share` (by request time)."""
    params = {**DEFAULT_PARAMS, **(params or {})}
    rows = outcomes(lines).sort_values("requested_at", kind="stable").reset_index(drop=True)
    if len(rows) < 50:
        raise ValueError(f"not enough disposed lines with a recovery value to train ({len(rows)})")
    cut = int(len(rows) * (1 - test_share))
    train, test = rows.iloc[:cut], rows.iloc[cut:]
    feature_names = [*names(LINE_FEATURES_V1), "disposition"]
    vocab = {
        name: sorted({str(v) for v in rows[name].dropna().unique()})
        for name in CATEGORICAL
        if name != "disposition"
    }
    vocab["disposition"] = list(enums.DISPOSITIONS)
    model = RecoveryModel(booster=None, features=feature_names, vocab=vocab)  # type: ignore[arg-type]
    fit, early = train.iloc[: int(len(train) * 0.85)], train.iloc[int(len(train) * 0.85) :]
    categorical = [feature_names.index(name) for name in CATEGORICAL]
    train_set = lgb.Dataset(
        model.encode(fit),
        label=fit["unit_value"].to_numpy(),
        feature_name=feature_names,
        categorical_feature=categorical,
        free_raw_data=False,
    )
    valid_set = lgb.Dataset(model.encode(early), label=early["unit_value"].to_numpy(), reference=train_set)
    model.booster = lgb.train(
        params,
        train_set,
        num_boost_round=800,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    routed = model.route(test)
    routed["static_disposition"] = routed["condition"].map(STATIC_ROUTING)
    metrics = {
        "test_mae_per_unit": float(np.mean(np.abs(model.predict_unit(test) - test["unit_value"].to_numpy()))),
        "test_lines": float(len(test)),
        "best_iteration": float(model.booster.best_iteration),
    }
    metrics.update(replay_metrics(routed))
    return RecoveryResult(model, metrics, routed, params, {"train": len(train), "test": len(test)})


def replay_metrics(routed: pd.DataFrame) -> dict[str, float]:
    """Off-policy replay on realised outcomes: mean realised value per line where a policy's choice is
    the disposition that was actually taken (exploration makes every outlet observed sometimes)."""
    out = {}
    for policy in ("model", "static"):
        agree = routed[f"{policy}_disposition"] == routed["disposition"]
        out[f"{policy}_agreement"] = float(agree.mean())
        out[f"{policy}_replay_value_per_line"] = (
            float(routed.loc[agree, "recovery_value"].astype(float).mean()) if agree.any() else float("nan")
        )
    return out


def regret_against_truth(routed: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """With the simulator's value of every option: value of model, static and oracle routing."""
    options = truth[truth["feasible"]].copy()
    options["net_value"] = options["net_value"].astype(float)
    key = ["return_id", "line_no"]
    oracle = (
        options.sort_values("net_value", ascending=False).groupby(key).head(1).set_index(key)["net_value"]
    )
    value = options.set_index([*key, "disposition"])["net_value"]
    keys = list(zip(routed["return_id"], routed["line_no"], strict=True))
    model_value = value.reindex(
        [(r, n, d) for (r, n), d in zip(keys, routed["model_disposition"], strict=True)]
    ).to_numpy()
    static_value = value.reindex(
        [(r, n, d) for (r, n), d in zip(keys, routed["static_disposition"], strict=True)]
    ).to_numpy()
    oracle_value = oracle.reindex(keys).to_numpy()
    known = ~(np.isnan(model_value) | np.isnan(static_value) | np.isnan(oracle_value))
    model_total, static_total, oracle_total = (
        model_value[known].sum(),
        static_value[known].sum(),
        oracle_value[known].sum(),
    )
    return {
        "lines": float(known.sum()),
        "model_value": float(model_total),
        "static_value": float(static_total),
        "oracle_value": float(oracle_total),
        "model_share_of_oracle": float(model_total / oracle_total) if oracle_total else float("nan"),
        "static_share_of_oracle": float(static_total / oracle_total) if oracle_total else float("nan"),
        "model_regret_per_line": float((oracle_value[known] - model_value[known]).mean())
        if known.any()
        else float("nan"),
        "static_regret_per_line": float((oracle_value[known] - static_value[known]).mean())
        if known.any()
        else float("nan"),
    }


class RecoveryChooser:
    """The disposition chooser backed by the recovery model (plugs into `oms.lifecycle.ReturnService`)."""

    name = "recovery_model"

    def __init__(self, model: RecoveryModel) -> None:
        self.model = model

    def choose(self, item: ReturnedItem) -> Choice:
        options = list(FEASIBLE[item.condition])
        frame = pd.DataFrame(
            {
                "category": item.category,
                "brand": item.brand,
                "condition": item.condition,
                "reason": item.reason,
                "location_kind": item.location_kind,
                "quantity": float(item.quantity),
                "unit_price": float(item.unit_price),
                "list_price": float(item.list_price) if item.list_price is not None else math.nan,
                "unit_cost": float(item.unit_cost) if item.unit_cost is not None else math.nan,
                "days_since_purchase": item.days_since_purchase
                if item.days_since_purchase is not None
                else math.nan,
                "receiptless": float(item.receiptless),
                "style_return_rate": item.style_return_rate
                if item.style_return_rate is not None
                else math.nan,
                "disposition": options,
            }
        )
        estimates = self.model.predict_unit(frame) * item.quantity
        best = int(np.argmax(estimates))
        return Choice(options[best], Decimal(str(round(float(estimates[best]), 2))), self.name)
