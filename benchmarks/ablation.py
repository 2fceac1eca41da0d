"""Ablation of the root fixes: the settings before them, each fix alone, and all of them (the defaults).

The fixes (BENCHMARKS.md, "Ablation of the root fixes"):

- ``group-norm``: p(x|z,y) normalises per sample instead of with batch statistics per enumerated class;
- ``discretized-logistic``: p(x|z,y) is a probability over the 256 grey levels instead of a Gaussian density;
- ``adamw``: decoupled weight decay (the same per-step shrinkage for both methods) instead of Adam's coupled one;
- ``uniform-prior``: the paper's fixed uniform p(y) with unweighted labels, instead of a learned p(y) with each
  labelled image's classification term weighted by K * p(y).

``before`` has none of them, each ``+NAME`` setting adds one, ``all`` has all four, ``defaults`` all but the
discretised logistic (the command line's defaults). Every ADGM setting and the
supervised baseline (with the defaults) are trained on the same label draws of PneumoniaMNIST (the seed sets the
draw and the initialisation), selected on ``val`` and tested once on 624 training images held out
(``--test-from-train``, an in-distribution test). Resumable: finished runs are read back, not trained again.
Two processes with different ``--settings`` (or ``--labels``) can share one ``--out``.

Writes ``ablation.csv`` (one row per finished run under ``--out``, whichever invocation trained it: accuracies, the last epoch's validation accuracy, and the largest fall
of the labelled images' training accuracy from its best so far) and ``ablation.md`` under ``--out``.

    OMP_NUM_THREADS=1 python benchmarks/ablation.py --out runs/ablation
    python benchmarks/ablation.py --summarise-only --out runs/ablation     # the tables of the finished runs
    python benchmarks/ablation.py --quick        # demo phantoms, tiny; a test runs it
"""

from __future__ import annotations

import argparse
import csv
import logging
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from label_sweep import DEFAULT_NPZ, prepared_dataset  # noqa: E402

from pyro_adgm.label_curve import finished_row, mean_sd, run_label_curve, write_rows  # noqa: E402

#: the settings before the fixes, as ADGM keyword arguments and TrainConfig fields
BEFORE_MODEL = {"decoder_norm": "batch", "likelihood": "gaussian", "learn_class_prior": True, "prior_weighted_labels": True}
BEFORE_TRAIN = {"decoupled_weight_decay": False}
#: each fix as the options it changes
FIXES = {
    "group-norm": ({"decoder_norm": "group"}, {}),
    "discretized-logistic": ({"likelihood": "discretized-logistic"}, {}),
    "adamw": ({}, {"decoupled_weight_decay": True}),
    "uniform-prior": ({"learn_class_prior": False, "prior_weighted_labels": False}, {}),
}


def settings() -> dict[str, tuple[dict, dict]]:
    """name -> (model options, config overrides) of each ADGM setting."""
    out = {"before": (dict(BEFORE_MODEL), dict(BEFORE_TRAIN))}
    for name, (model, train) in FIXES.items():
        out[f"+{name}"] = ({**BEFORE_MODEL, **model}, {**BEFORE_TRAIN, **train})
    everything_model, everything_train = dict(BEFORE_MODEL), dict(BEFORE_TRAIN)
    for model, train in FIXES.values():
        everything_model.update(model)
        everything_train.update(train)
    out["all"] = (everything_model, everything_train)
    # the defaults chosen from the rows above: every fix but the discretised logistic
    out["defaults"] = ({**everything_model, "likelihood": "gaussian"}, everything_train)
    return out


SETTINGS = settings()
COLUMNS = ("setting", "method", "labels_per_class", "seed", "val_accuracy", "final_val_accuracy", "test_accuracy",
           "test_roc_auc", "train_accuracy_fall", "seconds", "run_dir")  # fmt: skip


def train_accuracy_fall(run_dir: Path) -> float:
    """The largest fall of the labelled images' training accuracy below its best of the earlier epochs."""
    with open(Path(run_dir) / "metrics.csv", newline="") as handle:
        accuracy = [float(row["train_accuracy"]) for row in csv.DictReader(handle)]
    best, fall = float("-inf"), 0.0
    for value in accuracy:
        best = max(best, value)
        fall = max(fall, best - value)
    return fall


def summary_markdown(rows: list[dict], command: str) -> str:
    def cell(values, scale=1.0):
        mean, sd, n = mean_sd([None if v is None else scale * float(v) for v in values])
        return "-" if mean is None else f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f}"

    baseline = {(int(r["labels_per_class"]), int(r["seed"])): float(r["test_accuracy"]) for r in rows
                if r["method"] == "supervised" and r["test_accuracy"] is not None}  # fmt: skip
    lines = ["| setting | labels/class | runs | test accuracy | − supervised (points) | val accuracy | val, last epoch | "
             "labelled train accuracy, largest fall |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    keys = sorted({(r["setting"], int(r["labels_per_class"])) for r in rows}, key=lambda k: (k[1], order(k[0])))
    for setting, n in keys:
        group = [r for r in rows if r["setting"] == setting and int(r["labels_per_class"]) == n]
        gains = [100 * (float(r["test_accuracy"]) - baseline[(n, int(r["seed"]))]) for r in group
                 if r["method"] == "adgm" and (n, int(r["seed"])) in baseline]  # fmt: skip
        gain = mean_sd(gains)
        gain_cell = "-" if gain[0] is None else f"{gain[0]:+.1f}" + (f" ± {gain[1]:.1f}" if gain[1] is not None else "")
        lines.append(f"| {setting} | {n} | {len(group)} | {cell([r['test_accuracy'] for r in group])} | {gain_cell} | "
                     f"{cell([r['val_accuracy'] for r in group])} | {cell([r['final_val_accuracy'] for r in group])} | "
                     f"{cell([r['train_accuracy_fall'] for r in group])} |")  # fmt: skip
    return f"`{command}`\n\n" + "\n".join(lines) + "\n"


def order(setting: str) -> int:
    names = ["supervised", *SETTINGS]
    return names.index(setting) if setting in names else len(names)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=["supervised", *SETTINGS], choices=["supervised", *SETTINGS])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--warmup-epochs", type=float, default=8.0, help="KL and unlabelled-term warm-up")
    parser.add_argument("--test-from-train", type=int, default=624, metavar="N")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--quick", action="store_true", help="demo phantoms (28x28, 150 images), 1 epoch, 1 seed")
    parser.add_argument("--summarise-only", action="store_true", help="write the tables of the finished runs under --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {"warmup_epochs": args.warmup_epochs, "device": args.device}
    if args.quick:
        data, demo = None, {"n_images": 150, "image_size": 28, "seed": 0}
        args.labels, args.seeds, args.epochs = [3], [0], 1
        sizes = {"a_dim": 8, "z_dim": 8, "channels": (8, 16), "hidden": (32,)}
    elif not args.summarise_only:
        if not args.npz.exists():
            parser.error(f"{args.npz}: PneumoniaMNIST file not found (see ../shared/data/README.md)")
        data, demo, sizes = prepared_dataset(args.npz, args.out, args.test_from_train), None, {}
    rows = []
    for setting in [] if args.summarise_only else args.settings:
        if setting == "supervised":
            method, model_options, train_options = "supervised", {}, {}
        else:
            method, (model_options, train_options) = "adgm", SETTINGS[setting]
        new = run_label_curve(args.labels, args.seeds, [method], data=data, demo=demo, task="2class", epochs=args.epochs,
                              out_dir=args.out / setting, model_options={**sizes, **model_options},
                              config_overrides={**overrides, **train_options})  # fmt: skip
        rows += [{**row, "setting": setting, "train_accuracy_fall": train_accuracy_fall(row["run_dir"])} for row in new]
    everything = read_all(args.out)
    write_rows(everything, args.out / "ablation.csv", COLUMNS)
    command = f"python benchmarks/ablation.py --epochs {args.epochs} --warmup-epochs {args.warmup_epochs:g} --test-from-train {args.test_from_train} --seeds {' '.join(map(str, args.seeds))} --out {shlex.quote(str(args.out))}"
    (args.out / "ablation.md").write_text(summary_markdown(everything, command))
    print((args.out / "ablation.md").read_text())
    return rows


def read_all(out: Path) -> list[dict]:
    """Every finished and tested run's row under ``out`` (``out/SETTING/RUN``), the setting column added."""
    rows = []
    for setting in ["supervised", *SETTINGS]:
        for run_dir in sorted((out / setting).glob("*/evaluation-test.json")):
            row = finished_row(run_dir.parent)
            rows.append({**row, "setting": setting, "train_accuracy_fall": train_accuracy_fall(run_dir.parent)})
    return sorted(rows, key=lambda r: (order(r["setting"]), int(r["labels_per_class"]), int(r["seed"])))


if __name__ == "__main__":
    main()
