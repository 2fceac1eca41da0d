"""The same checkpoints on two test splits: one drawn from the training images, and a shifted one.

A label sweep run with ``--test-from-train N`` tests each run on N training images that it held out (a test split
from the training images' distribution). This evaluates each of those runs' best checkpoints (chosen on ``val``,
as before) once more, on the test split of another prepared dataset (PneumoniaMNIST's own test split, whose
images and class shares differ from the training ones), and tabulates, per sweep, method and labels per class,
mean ± sd over seeds of accuracy and ROC AUC on both, and ADGM − supervised on each over the seeds both
methods have. Each evaluation is saved in its run folder (``shifted-test/<dataset folder>/evaluation-test.json``)
and read back on a second call.

Writes, under ``--out``: ``split_shift.csv`` (one row per run), ``split_shift.md`` (the table) and
``split_shift.png`` (accuracy against labels per class on each test split).

    python benchmarks/split_shift.py runs/sweep-iid runs/sweep-iid-uw0.1 --data runs/pneumoniamnist-official --out runs/split-shift
    python benchmarks/split_shift.py --quick      # a demo sweep, tested on another demo dataset (tests run it)
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data_tools.errors import InputError  # noqa: E402
from pyro_adgm import runs  # noqa: E402
from pyro_adgm.label_curve import draw_label_curves, summarise, write_rows  # noqa: E402
from pyro_adgm.plots import save_figure  # noqa: E402

COLUMNS = ("sweep", "method", "labels_per_class", "seed", "test_accuracy", "test_roc_auc", "shifted_test_accuracy",
           "shifted_test_roc_auc", "run_dir")  # fmt: skip
METRICS = ("test_accuracy", "test_roc_auc", "shifted_test_accuracy", "shifted_test_roc_auc")


def shifted_evaluation(run_dir: Path, data: Path) -> dict:
    """The best checkpoint of ``run_dir`` on the test split of ``data`` (evaluated once, then read back)."""
    out_dir = run_dir / "shifted-test" / data.resolve().name
    saved = out_dir / "evaluation-test.json"
    if saved.exists():
        return json.loads(saved.read_text())
    return runs.evaluate(run_dir / "best.pt", data=data, split="test", out_dir=out_dir, device="cpu")


def sweep_rows(sweep: Path, data: Path) -> list[dict]:
    """One row per run of the sweep folder ``sweep`` (its ``label_curve.csv``), with the shifted test's figures."""
    table = sweep / "label_curve.csv"
    if not table.is_file():
        raise InputError(f"{table}: not found (expected the folder of a finished label sweep)")
    with open(table, newline="") as handle:
        runs_done = list(csv.DictReader(handle))
    rows = []
    for run in runs_done:
        if not run["test_accuracy"]:
            raise InputError(f"{table}: run {run['run_dir']} has no test evaluation (was the sweep's dataset without a test split?)")
        shifted = shifted_evaluation(sweep / Path(run["run_dir"]).name, data)
        rows.append({"sweep": sweep.name, "method": run["method"], "labels_per_class": int(run["labels_per_class"]),
                     "seed": int(run["seed"]), "test_accuracy": float(run["test_accuracy"]),
                     "test_roc_auc": float(run["test_roc_auc"]), "shifted_test_accuracy": shifted["accuracy"],
                     "shifted_test_roc_auc": shifted["roc_auc"], "run_dir": str(sweep / Path(run["run_dir"]).name)})  # fmt: skip
    return rows


def paired_leads(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """ADGM − supervised per (sweep, labels per class), the mean over the seeds both have (``seeds``), on each test
    split. The baseline is the sweep's own where it has one, else that of the first sweep given with one."""
    baseline: dict[tuple, dict] = {}
    for row in rows:
        if row["method"] == "supervised":
            baseline[(row["sweep"], row["labels_per_class"], row["seed"])] = row
            baseline.setdefault((None, row["labels_per_class"], row["seed"]), row)
    pairs: dict[tuple[str, int], list[tuple[dict, dict]]] = {}
    for row in rows:
        key = (row["sweep"], row["labels_per_class"], row["seed"])
        base = baseline.get(key, baseline.get((None, *key[1:])))
        if row["method"] != "supervised" and base is not None:
            pairs.setdefault(key[:2], []).append((row, base))
    return {key: {"seeds": [a["seed"] for a, _ in members],
                  **{metric: float(np.mean([a[metric] - b[metric] for a, b in members]))
                     for metric in ("test_accuracy", "shifted_test_accuracy")}}
            for key, members in pairs.items()}  # fmt: skip


def markdown(summary: list[dict], rows: list[dict], data: Path) -> str:
    def cell(entry, metric):
        mean, sd = entry[f"{metric}_mean"], entry[f"{metric}_sd"]
        return "-" if mean is None else f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")

    leads = paired_leads(rows)

    def lead(entry):
        found = leads.get((entry["sweep"], entry["labels_per_class"]))
        if entry["method"] == "supervised" or found is None:
            return "-"
        return f"{100 * found['test_accuracy']:+.1f} / {100 * found['shifted_test_accuracy']:+.1f} ({len(found['seeds'])} seeds)"

    lines = [f"Shifted test split: the test split of `{data}`.", "",
             "| sweep | method | labels/class | runs | test accuracy (drawn from train) | ROC AUC | shifted test accuracy | "
             "ROC AUC | − supervised on the same seeds, points: drawn / shifted |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in summary:
        lines.append(f"| {s['sweep']} | {s['method']} | {s['labels_per_class']} | {s['runs']} | {cell(s, 'test_accuracy')} | "
                     f"{cell(s, 'test_roc_auc')} | {cell(s, 'shifted_test_accuracy')} | {cell(s, 'shifted_test_roc_auc')} | "
                     f"{lead(s)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, metric, title in zip(axes, ("test_accuracy", "shifted_test_accuracy"),
                                 ("test split drawn from the training images", "the file's test split (shifted)")):  # fmt: skip
        draw_label_curves(ax, summary, metric, series=("sweep", "method"),
                          label=lambda key: key[1] if key[1] == "supervised" else f"{key[1]} ({key[0]})")
        ax.set_title(title)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend()
    save_figure(fig, path)


def quick(folder: Path) -> tuple[list[Path], Path]:
    """A 1-epoch demo sweep, and another demo dataset (other phantoms) as the shifted test split."""
    import importlib.util

    from data_tools.demo import make_demo_dataset

    spec = importlib.util.spec_from_file_location("label_sweep", Path(__file__).with_name("label_sweep.py"))
    label_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(label_sweep)
    label_sweep.main(["--quick", "--out", str(folder / "sweep")])
    other = make_demo_dataset(80, 28, seed=7, val_fraction=0.2, test_fraction=0.5).save(folder / "other")
    return [folder / "sweep"], other


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="*", type=Path, help="label sweep folders (run with --test-from-train)")
    parser.add_argument("--data", type=Path, help="the prepared dataset whose test split is the shifted one")
    parser.add_argument("--out", type=Path, default=None, help="default: runs/split-shift (--quick: a temporary folder, which also holds its sweep)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            args.out = args.out or Path(tmp)
            args.sweeps, args.data = quick(args.out)
        if not args.sweeps or args.data is None:
            parser.error("give at least one sweep folder and --data")
        args.out = args.out or Path("runs/split-shift")
        try:
            rows = [row for sweep in args.sweeps for row in sweep_rows(sweep, args.data)]
        except InputError as error:
            parser.error(str(error))
        summary = summarise(rows, by=("sweep", "method", "labels_per_class"), metrics=METRICS)
        args.out.mkdir(parents=True, exist_ok=True)
        write_rows(rows, args.out / "split_shift.csv", COLUMNS)
        text = markdown(summary, rows, args.data)
        (args.out / "split_shift.md").write_text(text)
        plot(summary, args.out / "split_shift.png")
        print(text)
    return rows


if __name__ == "__main__":
    main()
