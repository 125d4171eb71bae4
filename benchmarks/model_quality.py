"""Model quality on a simulated retailer (>= 50k customers, 18 months): train on the first 12 months,
test on the last 6, against the legacy rules and the simulator's ground truth.

    python benchmarks/model_quality.py [--customers 50000] [--seed 42]
    python benchmarks/model_quality.py --grid [--seeds 1 2 3 4 5] [--cells small,mid]   # many retailers

Prints, for the model and the rules: average precision and ROC AUC (on the random-audit reviews, on all
reviews, and on every test return against the truth), precision / recall / fraud value caught at the
review capacity, recall per fraud typology; and the recovery routing value vs the static routing vs the
oracle. Targets: average precision at least twice the rules'; routing captures >= 90 % of the oracle.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from features.offline import fraud_features, line_features
from models.evaluation import threshold_at_capacity, time_split
from models.fraud import train_fraud
from models.recovery import regret_against_truth, train_recovery
from oms.db import make_engine
from oms.frames import load_frame
from oms.importer import import_directory
from oms.migrate import upgrade
from simulator.retailer import SimulationConfig, simulate

CAPACITY = 0.02


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--grid", action="store_true", help="many retailers (benchmarks/model_quality_grid.py)"
    )
    args, rest = parser.parse_known_args()
    if args.grid:
        from model_quality_grid import main as grid

        grid(rest)
        return
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    with tempfile.TemporaryDirectory(prefix="recoup-quality-") as scratch:
        out = Path(scratch) / "retailer"
        started = time.perf_counter()
        config = SimulationConfig(customers=args.customers, months=18, seed=args.seed)
        result = simulate(config, out)
        url = f"sqlite:///{Path(scratch) / 'quality.db'}"
        upgrade(url)
        engine = make_engine(url)
        import_directory(out, engine)
        features = fraud_features(engine)
        reviews = load_frame(engine, "fraud_reviews", ["return_id", "reviewed_at", "outcome", "source"])
        print(
            f"{args.customers:,} customers, 18 months: {result.tables['order_lines']:,} order lines, {len(features):,} returns, "
            f"{len(reviews):,} reviews (prepared in {time.perf_counter() - started:.0f} s)"
        )
        end = pd.Timestamp(config.end.isoformat(), tz="UTC")
        # the last 6 months are the test period: training sees months 1-12 (less the label delay)
        split = time_split(end, test_days=183 - 14, valid_days=45, label_delay_days=14)
        trained = train_fraud(features, reviews, split=split, capacity=CAPACITY)
        m = trained.metrics
        print(
            f"train returns requested before {split.train_end.date()}, test {split.test_start.date()} .. {split.test_end.date()}"
        )
        print(f"{'':<36}{'model':>10}{'rules':>10}")
        for subset, label in (("audit", "random-audit reviews"), ("reviews", "all reviews")):
            for metric in (
                "average_precision",
                "roc_auc",
                "precision_at_capacity",
                "recall_at_capacity",
                "value_caught_at_capacity",
            ):
                print(
                    f"{label + ': ' + metric:<36}{m[f'model_{subset}_{metric}']:>10.3f}{m[f'rules_{subset}_{metric}']:>10.3f}"
                )
        truth = pd.read_csv(out / "_truth" / "returns.csv").set_index("return_id")
        population = trained.population.join(truth, on="return_id")
        positive = (population["label"] != "legitimate").to_numpy()
        value = population["return_value"].fillna(0).to_numpy()
        print(
            f"against the truth, every test return ({len(population):,}, {positive.mean():.1%} fraud or abuse):"
        )
        for name in ("model", "rules"):
            scores = population[f"{name}_score"].to_numpy()
            flagged = scores >= threshold_at_capacity(scores, CAPACITY)
            print(
                f"  {name:<6} AP {average_precision_score(positive, scores):.3f}  AUC {roc_auc_score(positive, scores):.3f}  "
                f"at {CAPACITY:.0%} capacity: precision {positive[flagged].mean():.3f}, recall {flagged[positive].mean():.3f}, "
                f"value caught {value[flagged & positive].sum() / value[positive].sum():.3f}"
            )
            population[f"{name}_flagged"] = flagged
        ap_ratio = average_precision_score(positive, population["model_score"]) / average_precision_score(
            positive, population["rules_score"]
        )
        print(f"  average precision ratio model / rules: {ap_ratio:.2f} (target >= 2)")
        print("recall per typology at capacity (model / rules):")
        for typology, group in population[population["typology"] != "none"].groupby("typology"):
            print(
                f"  {typology:<20} {len(group):>6,} returns   {group['model_flagged'].mean():.3f} / {group['rules_flagged'].mean():.3f}"
            )
        lines = line_features(engine)
        recovery = train_recovery(lines[lines["requested_at"] < end], test_share=1 / 3)
        values = pd.read_csv(out / "_truth" / "return_line_values.csv")
        routing = regret_against_truth(recovery.test, values)
        print(
            f"recovery routing on {int(routing['lines']):,} test lines: model {routing['model_value']:,.0f}, static {routing['static_value']:,.0f}, "
            f"oracle {routing['oracle_value']:,.0f} (GBP); model captures {routing['model_share_of_oracle']:.1%} of the oracle, "
            f"static {routing['static_share_of_oracle']:.1%} (target >= 90 %)"
        )
        print(
            f"regret per line: model {routing['model_regret_per_line']:.2f}, static {routing['static_regret_per_line']:.2f} (GBP)"
        )
        print(f"total {time.perf_counter() - started:.0f} s")
        engine.dispose()


if __name__ == "__main__":
    main()
