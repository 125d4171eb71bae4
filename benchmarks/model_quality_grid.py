"""The fraud model over many retailers: size, months, review budget, audit share, label delay and fraud
mix (typology seeds), each trained and served as `recoup train` and `recoup score` would, and judged
against the simulator's truth on the last 4 months of its history.

    python benchmarks/model_quality.py --grid [--seeds 1 2 3 4 5] [--cells small,mid-delay]
    python benchmarks/model_quality_grid.py [...]   # the same

For each cell and typology seed it prints what the retailer is served (the model champion or the rules
scorer; "nothing" if training failed), then AP, ROC AUC and precision at 2 % of the trained challenger
and of the legacy rules against the truth, on every return of the last 4 months (labelled or not), and
the AP of what is served, and what its decisions at the policy's thresholds ask of the team on those
4 months: the review queue (held for review, within the capacity), what the review threshold alone would
hold, the denials, and the mean score (against the fraud share: calibration); then the spread over the
seeds.
Targets: the review queue within 0.5x-2x the review capacity in every cell and seed; 20k customers, ~1,200 reviews, delay up to 4 months: AP >= 0.90 in every seed; 5k customers x 12
months, ~180 reviews: AP >= 0.80 and never below the rules; training never fails and there is always a
scorer.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from features.offline import fraud_features
from models import registry
from models.evaluation import legacy_rule_scores
from models.training import train_fraud_or_rules
from oms.db import make_engine
from oms.frames import load_frame
from oms.importer import import_directory
from oms.migrate import upgrade
from oms.policy import load_policy
from oms.settings import DEFAULT_POLICY_PATH
from simulator.retailer import SimulationConfig, simulate

POLICY = load_policy(DEFAULT_POLICY_PATH).fraud
CAPACITY = POLICY.review_capacity
REVIEW_THRESHOLD, DENY_THRESHOLD = POLICY.review_threshold, POLICY.deny_threshold
LAST_DAYS = 120


@dataclass(frozen=True)
class Cell:
    name: str
    customers: int
    months: int
    reviews: int
    delay_days: int
    audit_share: float = 0.2


CELLS = (
    Cell("small", 5_000, 12, 180, 0),
    Cell("small-delay", 5_000, 12, 180, 120),
    Cell("tiny", 5_000, 12, 100, 60),
    Cell("mid", 20_000, 18, 1_200, 0),
    Cell("mid-delay", 20_000, 18, 1_200, 120),
    Cell("mid-many", 20_000, 18, 5_000, 60, 0.1),
)


def _precision_at(scores: np.ndarray, truth: np.ndarray, share: float) -> float:
    k = max(int(len(scores) * share), 1)
    top = np.argsort(-scores, kind="stable")[:k]
    return float(truth[top].mean())


def _judge(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    return (
        float(average_precision_score(truth, scores)),
        float(roc_auc_score(truth, scores)),
        _precision_at(scores, truth, CAPACITY),
    )


def run_cell(cell: Cell, seed: int, scratch: Path, forward: int = 0) -> dict:
    started = time.perf_counter()
    config = SimulationConfig(
        customers=cell.customers,
        months=cell.months,
        seed=1000 + seed,
        review_budget=cell.reviews,
        audit_share=cell.audit_share,
        label_delay_days=cell.delay_days,
    ).with_typologies(seed)
    out = scratch / f"{cell.name}-{seed}"
    simulate(config, out / "data")
    url = f"sqlite:///{out / 'recoup.db'}"
    upgrade(url)
    engine = make_engine(url)
    import_directory(out / "data", engine)
    registry.configure(f"sqlite:///{out / 'mlflow.db'}", str(out / "mlartifacts"))
    features = fraud_features(engine)
    reviews = load_frame(engine, "fraud_reviews", ["return_id", "reviewed_at", "outcome", "source"])
    row = {"cell": cell.name, "seed": seed, "reviews": len(reviews)}
    end = pd.Timestamp(config.end.isoformat(), tz="UTC")
    last = features[features["requested_at"] >= end - pd.Timedelta(days=LAST_DAYS)].reset_index(drop=True)
    truth = pd.read_csv(out / "data" / "_truth" / "returns.csv").set_index("return_id")["label"]
    positive = (last["return_id"].map(truth) != "legitimate").to_numpy()
    row["fraud_share"] = float(positive.mean())
    if forward:  # trained on what was known `forward` days before the end, judged on those days
        cut = end - pd.Timedelta(days=forward)
        later = features[features["requested_at"] >= cut].reset_index(drop=True)
        features = features[features["requested_at"] < cut].reset_index(drop=True)
        reviews = reviews[reviews["reviewed_at"] < cut].reset_index(drop=True)
    try:
        outcome = train_fraud_or_rules(
            features,
            reviews,
            capacity=CAPACITY,
            thresholds=(REVIEW_THRESHOLD, DENY_THRESHOLD),
            artifact_root=str(out / "mlartifacts"),
        )
        row["why"] = outcome.reason
        if outcome.version is not None:
            model = registry.load_fraud(version=outcome.version)
            row["model_ap"], row["model_auc"], row["model_p2"] = _judge(
                model.predict(model.matrix(last)), positive
            )
        serving = registry.load_serving()
        row["served"] = "rules" if serving.version == "rules" else "model"
        served = serving.predict(serving.matrix(last))
        row["served_ap"] = _judge(served, positive)[0]
        if forward:  # the queue on returns after the training cut, which the scorer never saw
            served = serving.predict(serving.matrix(later))
        review_from = serving.review_from(POLICY)
        row["denied"] = float((served >= DENY_THRESHOLD).mean())
        row["flagged"] = float(((served >= review_from) & (served < DENY_THRESHOLD)).mean())
        row["at_threshold"] = float(((served >= REVIEW_THRESHOLD) & (served < DENY_THRESHOLD)).mean())
        row["mean_score"] = float(served.mean())
    except Exception as exc:  # what a retailer would meet: reported, the grid goes on
        row["served"] = "nothing"
        row["served_ap"] = float("nan")
        row["flagged"] = row["at_threshold"] = row["denied"] = row["mean_score"] = float("nan")
        row["why"] = f"training failed: {type(exc).__name__}: {str(exc)[:120]}"
    rules = legacy_rule_scores(last)
    row["rules_ap"], row["rules_auc"], row["rules_p2"] = _judge(rules, positive)
    row["seconds"] = time.perf_counter() - started
    engine.dispose()
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--cells", default=",".join(c.name for c in CELLS))
    parser.add_argument(
        "--forward",
        type=int,
        default=0,
        help="train on what was known this many days before the end; the queue figures are then those "
        "days' returns (the AP figures keep the last 4 months, partly unseen)",
    )
    args = parser.parse_args(argv)
    wanted = [c for c in CELLS if c.name in args.cells.split(",")]
    rows = []
    header = f"{'cell':<12}{'seed':>5}{'reviews':>8}{'fraud':>7}  {'served':<8}{'model AP':>9}{'AUC':>7}{'P@2%':>7}{'rules AP':>9}{'AUC':>7}{'P@2%':>7}{'served AP':>10}{'queue':>7}{'>=rev':>7}{'deny':>7}{'mean':>6}{'s':>6}  why"
    print(header, flush=True)
    with tempfile.TemporaryDirectory(prefix="recoup-grid-") as scratch:
        for cell in wanted:
            for seed in args.seeds:
                row = run_cell(cell, seed, Path(scratch), args.forward)
                rows.append(row)
                print(
                    f"{row['cell']:<12}{seed:>5}{row['reviews']:>8}{row['fraud_share']:>7.1%}  {row['served']:<8}"
                    f"{row.get('model_ap', float('nan')):>9.3f}{row.get('model_auc', float('nan')):>7.3f}{row.get('model_p2', float('nan')):>7.3f}"
                    f"{row['rules_ap']:>9.3f}{row['rules_auc']:>7.3f}{row['rules_p2']:>7.3f}{row['served_ap']:>10.3f}{row['flagged']:>7.1%}{row['at_threshold']:>7.1%}{row['denied']:>7.1%}{row['mean_score']:>6.3f}{row['seconds']:>6.0f}  {row['why'][:90]}",
                    flush=True,
                )
    frame = pd.DataFrame(rows)
    print("\nspread over the typology seeds (min / median / max):")
    for cell, group in frame.groupby("cell", sort=False):
        parts = []
        for column in ("model_ap", "rules_ap", "served_ap", "model_p2", "flagged", "denied"):
            values = group[column] if column in group else pd.Series(dtype=float)
            parts.append(f"{column} {values.min():.3f} / {values.median():.3f} / {values.max():.3f}")
        served = ", ".join(f"{k} {v}" for k, v in group["served"].value_counts().items())
        print(f"  {cell:<12} {'; '.join(parts)}; served: {served}")


if __name__ == "__main__":
    main()
