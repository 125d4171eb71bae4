"""Training/serving skew: the features the API served, recomputed offline for the same returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from features.offline import fraud_features
from oms.frames import load_frame


def serving_skew(engine: Engine, *, rtol: float = 1e-6) -> pd.DataFrame:
    """Per feature: served requests that became returns, how many differ from the offline value, the
    largest difference. Offline features are the training features, so any mismatch is skew."""
    served = load_frame(engine, "serving_log", ["return_id", "features", "degraded"])
    served = served[served["return_id"].notna() & ~served["degraded"].fillna(False).astype(bool)]
    if served.empty:
        return pd.DataFrame(columns=["feature", "compared", "mismatched", "max_abs_difference"])
    logged = pd.DataFrame([_as_dict(v) for v in served["features"]], index=served["return_id"].to_numpy())
    offline = fraud_features(engine).set_index("return_id")
    common = logged.index.intersection(offline.index)
    rows = []
    for feature in logged.columns:
        if feature not in offline.columns:
            continue
        a = pd.to_numeric(logged.loc[common, feature], errors="coerce").to_numpy(float)
        b = offline.loc[common, feature].to_numpy(float)
        same = np.isclose(a, b, rtol=rtol, atol=1e-9, equal_nan=True)
        difference = np.abs(np.nan_to_num(a - b))
        rows.append(
            {
                "feature": feature,
                "compared": len(common),
                "mismatched": int((~same).sum()),
                "max_abs_difference": float(difference.max()) if len(difference) else 0.0,
            }
        )
    return (
        pd.DataFrame(rows)
        .sort_values(["mismatched", "feature"], ascending=[False, True])
        .reset_index(drop=True)
    )


def _as_dict(value) -> dict:
    if isinstance(value, dict):
        return value
    import json

    return json.loads(value) if value else {}
