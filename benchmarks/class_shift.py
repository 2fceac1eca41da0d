"""How much of a checkpoint's accuracy on a split depends on that split's class shares? Checkpoints on splits.

A classifier is fitted to some class shares: those of p(y) for an ADGM with a learned p(y) and labels weighted
by it, 1/K for one fitted to N labels per class (the supervised baseline, an ADGM with a uniform p(y)). Where a
split's shares differ (PneumoniaMNIST's test split is 62.5% pneumonia, its training and validation splits 74.2%),
its accuracy moves although the ranking of the images (ROC AUC) does not. For each checkpoint and split this
reports the class shares, the shares the model holds (``model.prior_probs()``), the mean predicted
probabilities, accuracy and ROC AUC as predicted, accuracy after re-weighting the posteriors from the model's
shares to the split's own (:func:`pyro_adgm.evaluation.adjust_to_class_shares`), and the accuracy at the best
threshold. The last two read the split's labels: they are diagnostics, never a way to choose a model.

    python benchmarks/class_shift.py runs/sweep/adgm-100labels-seed0/best.pt --splits val test --json shift.json
    python benchmarks/class_shift.py runs/sweep-iid/*/best.pt --data runs/sweep/prepared --splits test --means
    python benchmarks/class_shift.py --quick      # a 1-epoch demo run, then its check (tests use it)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
from pathlib import Path

from pyro_adgm.evaluation import adjust_to_class_shares, best_threshold_accuracy, classification_report, predict_proba
from pyro_adgm.runs import checkpoint_split, load_model


def check(checkpoint: Path, splits: list[str], data: Path | None = None) -> list[dict]:
    """One row per split (of ``data``, a prepared dataset, or by default of the data the checkpoint was trained
    on): shares, the model's prior, accuracy as predicted and re-weighted, ROC AUC, best cut."""
    model, state = load_model(checkpoint, "cpu")
    prior = model.prior_probs().detach().double().numpy()
    rows = []
    for split in splits:
        images, y, class_names, name = checkpoint_split(state, split, model.image_size, data=data)
        probs = predict_proba(model, images)
        shares = [float((y == k).mean()) for k in range(len(class_names))]
        report = classification_report(probs, y, class_names)
        adjusted = adjust_to_class_shares(probs, prior, [max(s, 1e-6) for s in shares])
        row = {"checkpoint": str(checkpoint), "data": name, "split": split, "n": int(len(y)), "class_names": list(class_names),
               "class_share": shares, "model_prior": prior.tolist(), "mean_probability": probs.mean(0).tolist(),
               "accuracy": report["accuracy"], "roc_auc": report["roc_auc"],
               "accuracy_at_split_shares": float((adjusted.argmax(1) == y).mean()),
               "confusion_matrix": report["confusion_matrix"]}  # fmt: skip
        if len(class_names) == 2:
            row["best_threshold_accuracy"] = best_threshold_accuracy(probs[:, 1], y)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    def shares(values):
        return " / ".join(f"{v:.3f}" for v in values)

    lines = ["| checkpoint | split | class shares | model's shares | mean predicted | accuracy | ROC AUC | "
             "accuracy re-weighted to the split's shares | accuracy at the best threshold |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        auc = "-" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}"
        best = f"{r['best_threshold_accuracy']:.3f}" if "best_threshold_accuracy" in r else "-"
        lines.append(f"| `{r['checkpoint']}` | {r['split']} | {shares(r['class_share'])} | {shares(r['model_prior'])} | "
                     f"{shares(r['mean_probability'])} | {r['accuracy']:.3f} | {auc} | {r['accuracy_at_split_shares']:.3f} | "
                     f"{best} |")  # fmt: skip
    return "\n".join(lines)


def by_run_name(rows: list[dict]) -> str:
    """Means over seeds: rows grouped by (parent of the run folder, run folder without ``-seedN``, split)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        run = Path(r["checkpoint"]).parent
        groups.setdefault((run.parent.name, re.sub(r"-seed\d+$", "", run.name), r["split"]), []).append(r)
    lines = ["| sweep | runs | split | n | accuracy | accuracy re-weighted to the split's shares | accuracy at the best "
             "threshold | ROC AUC | model's share of the last class |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    def mean(members, key):
        values = [m[key] for m in members if m.get(key) is not None]
        return f"{statistics.mean(values):.3f}" if values else "-"

    for (sweep, name, split), members in groups.items():
        prior = statistics.mean(m["model_prior"][-1] for m in members)
        lines.append(f"| {sweep} | {name} | {split} | {len(members)} | {mean(members, 'accuracy')} | "
                     f"{mean(members, 'accuracy_at_split_shares')} | {mean(members, 'best_threshold_accuracy')} | "
                     f"{mean(members, 'roc_auc')} | {prior:.3f} |")
    return "\n".join(lines)


def quick_checkpoint(folder: Path) -> Path:
    from pyro_adgm.runs import model_options_for, train
    from pyro_adgm.training import TrainConfig

    config = TrainConfig(task="2class", labels_per_class=3, epochs=1, batch_size=16, warmup_epochs=1, device="cpu")
    options = {"a_dim": 8, "z_dim": 8, "channels": (8, 16), "hidden": (32,), **model_options_for("adgm", "learned", "prior")}  # a p(y) to re-weight from
    _, run_dir = train(config, demo={"n_images": 90, "image_size": 28, "seed": 0}, run_dir=folder / "run", model_options=options)
    return run_dir / "best.pt"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--splits", nargs="+", default=["val", "test"], choices=("train", "val", "test"))
    parser.add_argument("--data", type=Path, default=None,
                        help="read the splits from this prepared dataset (default: each checkpoint's own training data)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--means", action="store_true", help="also a table of means over seeds (run folders *-seedN)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.checkpoints = [quick_checkpoint(Path(tmp))]
        if not args.checkpoints:
            parser.error("give at least one checkpoint (best.pt or last.pt of a run)")
        rows = [row for checkpoint in args.checkpoints for row in check(checkpoint, args.splits, args.data)]
    text = markdown(rows) + ("\n\n" + by_run_name(rows) if args.means else "")
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "markdown": text}, indent=2))
    return rows


if __name__ == "__main__":
    main()
