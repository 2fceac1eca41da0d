"""How much the labels weigh against the unlabelled term: J^alpha against two heavier label weights.

Settings (each an ADGM run; J^alpha's and the baseline's rows come from ``benchmarks/results/ablation.csv``
and ``benchmarks/results/rsna_1500.csv`` too, which ran the same protocol):

- ``batch-means`` (the default): each step's labelled and unlabelled batch means weighed equally, as the paper's
  published code does: ``unlabelled_weight`` N_l / N_u (N_l labelled, N_u unlabelled training images), so that the labelled
  bounds and the classification term together weigh as much as the unlabelled bounds;
- ``beta-10``: the classification term ten times heavier (alpha = 10 (N_l + N_u) / N_l);
- ``sum``: J^alpha as the paper's equation writes it, each image counted once (``unlabelled_weight`` 1).

Data: ``pneumoniamnist`` (the ablation's protocol: 624 training images held out as the test split, labels 10
and 100 per class) or ``rsna-2class`` / ``rsna-3class`` (``rsna_1500.py``'s: the 1,500 real RSNA images at
64x64, labels 25 and 100 per class). 12 epochs, warm-up 8, selection on ``val``, ``test`` read once per run.
Resumable: finished runs are read back, and the runs that ``--rows`` (by default ``OUT/label_weight.csv``) holds
are not trained again, so that the committed ``results/label_weight.csv`` lets a machine without the run folders
go on. Merges each new row into that file as its run finishes; ``--summarise-only`` writes
``OUT/label_weight.md``: every setting beside J^alpha (``sum``) and the supervised baseline, whose rows come from
``--results`` (the committed ``ablation.csv`` and ``rsna_1500.csv``, the J^alpha rows of which ran when it was
the default) and from this script's ``sum`` runs.

    OMP_NUM_THREADS=1 python benchmarks/label_weight.py --data rsna-2class rsna-3class --out runs/label-weight
    OMP_NUM_THREADS=1 python benchmarks/label_weight.py --data pneumoniamnist --out runs/label-weight
    OMP_NUM_THREADS=1 python benchmarks/label_weight.py --data pneumoniamnist --seeds 2 --rows benchmarks/results/label_weight.csv
    python benchmarks/label_weight.py --summarise-only --out benchmarks/results
    python benchmarks/label_weight.py --quick --out /tmp/label-weight     # demo phantoms, 1 epoch; a test runs it
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from label_sweep import DEFAULT_NPZ, prepared_dataset  # noqa: E402
from rsna_1500 import DEFAULT_SOURCE, prepared  # noqa: E402

from pyro_adgm.config import BATCH_MEANS  # noqa: E402
from pyro_adgm.label_curve import finished_row, mean_sd, merge_row, read_rows, row_key, run_dir_name, run_label_curve  # noqa: E402

#: setting -> the TrainConfig fields it sets
SETTINGS = {"batch-means": {"unlabelled_weight": BATCH_MEANS}, "beta-10": {"beta": 10.0, "unlabelled_weight": 1.0},
            "sum": {"unlabelled_weight": 1.0}}  # fmt: skip
DATA = {"pneumoniamnist": ("2class", (10, 100)), "rsna-2class": ("2class", (25, 100)), "rsna-3class": ("3class", (25, 100))}
COLUMNS = ("data", "setting", "method", "labels_per_class", "seed", "unlabelled_weight", "beta", "val_accuracy",
           "final_val_accuracy", "test_accuracy", "test_roc_auc", "seconds", "run_dir")  # fmt: skip


#: the columns that name a run of this script (one row per such key in ``label_weight.csv``)
KEY = ("data", "setting", "labels_per_class", "seed")


def folder_row(run_dir: Path) -> dict:
    """The row of a finished and tested run in ``OUT/DATA/SETTING/RUN``."""
    saved = json.loads((run_dir / "config.json").read_text())
    train = saved.get("train", saved)
    return {**finished_row(run_dir), "data": run_dir.parent.parent.name, "setting": run_dir.parent.name,
            "unlabelled_weight": train.get("unlabelled_weight"), "beta": train.get("beta")}  # fmt: skip


RESULTS = ROOT / "results"
#: the label_weight data names of rsna_1500.csv's tasks
RSNA_DATA = {"2class": "rsna-2class", "3class": "rsna-3class"}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def comparison_rows(label_weight_csv: Path, results: Path) -> list[dict]:
    """This script's rows with the supervised and J^alpha (``sum``) rows of ``results/ablation.csv`` (its
    ``supervised`` and ``defaults`` settings, trained with unlabelled_weight 1) and ``results/rsna_1500.csv``;
    a ``sum`` run of this script replaces a row of the same data, labels and seed."""
    rows = {}
    for r in read_csv(results / "ablation.csv"):
        if r["setting"] in ("supervised", "defaults"):
            setting = "supervised" if r["setting"] == "supervised" else "sum"
            rows[("pneumoniamnist", setting, int(r["labels_per_class"]), int(r["seed"]))] = r
    for r in read_csv(results / "rsna_1500.csv"):
        setting = "supervised" if r["method"] == "supervised" else "sum"
        rows[(RSNA_DATA[r["task"]], setting, int(r["labels_per_class"]), int(r["seed"]))] = r
    for r in read_csv(label_weight_csv):
        rows[(r["data"], r["setting"], int(r["labels_per_class"]), int(r["seed"]))] = r
    return [{"data": k[0], "setting": k[1], "labels_per_class": k[2], "seed": k[3], **{c: r.get(c) for c in
             ("val_accuracy", "final_val_accuracy", "test_accuracy", "test_roc_auc")}} for k, r in sorted(rows.items())]  # fmt: skip


def summary_markdown(rows: list[dict]) -> str:
    """Per data, labels and setting: runs, val (best and last epoch), test, the gains over the baseline on the
    same seeds (points), ROC AUC; then each setting's mean val gain over the data sets and label counts."""
    def cell(values, scale=1.0, signed=False):
        mean, sd, _ = mean_sd([scale * float(v) for v in values if v not in (None, "")])
        if mean is None:
            return "-"
        return (f"{mean:+.1f}" if signed else f"{mean:.3f}") + (f" ± {sd:.1f}" if signed and sd is not None else f" ± {sd:.3f}" if sd is not None else "")

    by_key = {(r["data"], r["setting"], r["labels_per_class"], r["seed"]): r for r in rows}
    lines = ["| data | labels/class | setting | runs | val accuracy | val, last epoch | − supervised, val (points) | "
             "test accuracy | − supervised, test (points) | test ROC AUC |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    order = list(dict.fromkeys(["supervised", "sum", *SETTINGS]))
    gains_by_setting: dict[str, list[float]] = {}
    for data, n, setting in sorted({(r["data"], r["labels_per_class"], r["setting"]) for r in rows},
                                   key=lambda k: (list(DATA).index(k[0]), k[1], order.index(k[2]))):  # fmt: skip
        group = [r for r in rows if (r["data"], r["labels_per_class"], r["setting"]) == (data, n, setting)]
        paired = [(r, by_key[(data, "supervised", n, r["seed"])]) for r in group if (data, "supervised", n, r["seed"]) in by_key]
        val_gain = [100 * (float(r["val_accuracy"]) - float(b["val_accuracy"])) for r, b in paired]
        test_gain = [100 * (float(r["test_accuracy"]) - float(b["test_accuracy"])) for r, b in paired]
        if setting != "supervised" and val_gain:
            gains_by_setting.setdefault(setting, []).append(sum(val_gain) / len(val_gain))
        no_gain = setting == "supervised"
        lines.append(f"| {data} | {n} | {setting} | {len(group)} | {cell([r['val_accuracy'] for r in group])} | "
                     f"{cell([r['final_val_accuracy'] for r in group])} | {'-' if no_gain else cell(val_gain, signed=True)} | "
                     f"{cell([r['test_accuracy'] for r in group])} | {'-' if no_gain else cell(test_gain, signed=True)} | "
                     f"{cell([r['test_roc_auc'] for r in group])} |")  # fmt: skip
    lines += ["", "| setting | comparisons | mean val gain over the baseline (points) | smallest | largest |", "|---|---|---|---|---|"]
    for setting in [s for s in order if s in gains_by_setting]:
        gains = gains_by_setting[setting]
        lines.append(f"| {setting} | {len(gains)} | {sum(gains) / len(gains):+.1f} | {min(gains):+.1f} | {max(gains):+.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=list(DATA))
    parser.add_argument("--settings", nargs="+", default=["batch-means", "beta-10"], choices=list(SETTINGS))
    parser.add_argument("--labels", type=int, nargs="+", help="labels per class (default: the data's two counts)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--warmup-epochs", type=float, default=8.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/label-weight"))
    parser.add_argument("--quick", action="store_true", help="demo phantoms (28x28, 150 images), 1 epoch, 3 labels")
    parser.add_argument("--summarise-only", action="store_true", help="write OUT/label_weight.md from OUT/label_weight.csv and --results")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the folder of ablation.csv and rsna_1500.csv")
    parser.add_argument("--rows", type=Path, default=None, metavar="CSV",
                        help="finished rows (default: OUT/label_weight.csv; e.g. the committed results/label_weight.csv): "
                             "not trained again; each new row merged in as its run finishes")
    args = parser.parse_args(argv)
    if args.summarise_only:
        table = summary_markdown(comparison_rows(args.out / "label_weight.csv", args.results))
        (args.out / "label_weight.md").write_text(table)
        print(table)
        return read_csv(args.out / "label_weight.csv")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {"warmup_epochs": args.warmup_epochs, "device": args.device}
    rows_csv = args.rows or args.out / "label_weight.csv"
    recorded = {row_key(r, KEY) for r in read_rows(rows_csv, KEY)}
    sizes = {}
    for name in ["quick"] if args.quick else args.data:
        if args.quick:
            task, counts, data, demo = "2class", (3,), None, {"n_images": 150, "image_size": 28, "seed": 0}
            args.epochs, args.seeds = 1, [0]
            sizes = {"a_dim": 8, "z_dim": 8, "channels": (8, 16), "hidden": (32,)}
        else:
            (task, counts), demo = DATA[name], None
            if name == "pneumoniamnist":
                if not DEFAULT_NPZ.exists():
                    parser.error(f"{DEFAULT_NPZ}: PneumoniaMNIST file not found (see ../shared/data/README.md)")
                data = prepared_dataset(DEFAULT_NPZ, args.out / name, 624)
            else:
                if not (DEFAULT_SOURCE / "labels.csv").is_file():
                    parser.error(f"{DEFAULT_SOURCE}: not the rsna-1500 folder (no labels.csv; see ../shared/data/README.md)")
                data = prepared(DEFAULT_SOURCE, args.out / "rsna", 64)
        for seed in args.seeds:
            for n in args.labels or counts:
                for setting in args.settings:
                    run_dir = args.out / name / setting / run_dir_name("adgm", n, seed)
                    if (name, setting, n, seed) in recorded and not (run_dir / "report.json").exists():
                        logging.info("%s: its row is in %s, not trained again", run_dir, rows_csv)
                        continue
                    run_label_curve([n], [seed], ["adgm"], data=data, demo=demo, task=task, epochs=args.epochs,
                                    out_dir=args.out / name / setting, config_overrides={**overrides, **SETTINGS[setting]},
                                    model_options=sizes)  # fmt: skip
                    merge_row(folder_row(run_dir), rows_csv, KEY, COLUMNS)
    return read_rows(rows_csv, KEY)


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
