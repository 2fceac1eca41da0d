"""ADGM against the supervised baseline on 1,500 real RSNA challenge images (``../shared/data/rsna-1500``).

Prepares the images once at ``--size`` (64 by default, a size a CPU trains in minutes) with 10% of the patients
per class in ``val`` and 20% in ``test``, then, for each task (2class, 3class), labels-per-class count and seed,
trains one ADGM run and one supervised run on the same label draw (:func:`pyro_adgm.label_curve.run_label_curve`;
the rest of the training split is the unlabelled set), selects on ``val`` and evaluates the best checkpoint once
on ``test``, and on the run's unlabelled training images against their hidden labels (the transductive accuracy,
``unlabelled_accuracy``: what the method makes of the images it trained on without labels). Resumable: finished runs are read back. Two processes with different ``--tasks`` can share ``--out``.

Writes ``OUT/rsna_1500.csv`` (one row per finished run) and ``OUT/rsna_1500.md`` (mean ± sd over seeds and the
ADGM's gain over the baseline on the same seed, in points).

``--view AP`` or ``--view PA`` keeps the patients of one view position alone (``labels.csv``'s ``ViewPosition``;
``OUT/source-VIEW`` holds links to their images and the two stage-2 CSVs restricted to them): in rsna-1500 the
view goes with the class (AP is 61% of the abnormal images, 18% of the normal ones), so the view alone ranks the
2class classes (BENCHMARKS.md, "On the unlabelled images and the view position"); within one view it cannot.
``--likelihood-reduction mean`` trains the ADGM with log p(x|z,y) averaged over the pixels, as the paper's
published code does (``TrainConfig.likelihood_reduction``; BENCHMARKS.md, "The pixel term averaged").

    OMP_NUM_THREADS=1 python benchmarks/rsna_1500.py --tasks 2class --out runs/rsna-1500
    OMP_NUM_THREADS=1 python benchmarks/rsna_1500.py --tasks 3class --out runs/rsna-1500
    python benchmarks/rsna_1500.py --summarise-only --out runs/rsna-1500
    OMP_NUM_THREADS=1 python benchmarks/rsna_1500.py --view PA --tasks 2class --out runs/rsna-1500-pa
    python benchmarks/rsna_1500.py --quick --out /tmp/rsna-quick     # tiny; a test runs it
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view_position import read_views  # noqa: E402

from pyro_adgm.checkpoint import atomic_write_text  # noqa: E402
from pyro_adgm.config import LIKELIHOOD_REDUCTIONS  # noqa: E402
from pyro_adgm.label_curve import finished_row, mean_sd, run_label_curve, write_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "rsna-1500"
COLUMNS = ("task", "method", "labels_per_class", "seed", "val_accuracy", "final_val_accuracy", "test_accuracy",
           "test_roc_auc", "unlabelled_accuracy", "seconds", "run_dir")  # fmt: skip


def prepared(source: Path, out: Path, size: int) -> Path:
    """``out/prepared-SIZE``: the images at ``size`` x ``size``, val 10% and test 20% of the patients per class."""
    from data_tools.rsna import prepare_rsna

    folder = out / f"prepared-{size}"
    prepare_rsna(folder, root=source, size=size, val_fraction=0.1, test_fraction=0.2, seed=0, workers=0)
    return folder


def one_view_source(source: Path, out: Path, view: str) -> Path:
    """``out/source-VIEW``: the rsna-1500 layout for the patients of one view alone (links to their images, the
    two stage-2 CSVs restricted to their rows); brought up to date with ``source`` on each call, files that
    already match left alone (so that a dataset prepared from them is not prepared again)."""
    from data_tools.rsna import CLASS_CSV, IMAGES_DIR, LABELS_CSV

    patients = {patient for patient, position in read_views(source).items() if position == view}
    if not patients:
        raise SystemExit(f"{source / 'labels.csv'}: no patient with ViewPosition {view}")
    folder = out / f"source-{view}"
    images = folder / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    for image in sorted((source / IMAGES_DIR).iterdir()):
        link = images / image.name
        if image.stem in patients and not link.is_symlink():
            link.symlink_to(image.resolve())
    for name in (LABELS_CSV, CLASS_CSV):
        with open(source / name, newline="") as handle:
            lines = handle.read().splitlines()
        kept = "\n".join([lines[0], *(line for line in lines[1:] if line.split(",", 1)[0] in patients)]) + "\n"
        target = folder / name
        if not target.is_file() or target.read_text() != kept:  # rewritten, it would count as new input
            atomic_write_text(target, kept)
    return folder


def tested_runs(out: Path) -> list[Path]:
    """The finished and tested run folders under ``out`` (``out/TASK/RUN``)."""
    return [evaluation.parent for evaluation in sorted(out.glob("*class/*/evaluation-test.json"))]


def evaluate_unlabelled(out: Path, device: str) -> None:
    """Evaluate each tested run's best checkpoint on its unlabelled training images, where not done yet."""
    from pyro_adgm import runs

    for run_dir in tested_runs(out):
        if not (run_dir / f"evaluation-{runs.UNLABELLED}.json").exists():
            runs.evaluate(run_dir / "best.pt", split=runs.UNLABELLED, device=device)


def read_rows(out: Path) -> list[dict]:
    """Every finished and tested run's row under ``out``, with the task and, where evaluated, the accuracy on the
    run's unlabelled training images."""
    rows = []
    for run_dir in tested_runs(out):
        unlabelled = run_dir / "evaluation-unlabelled.json"
        accuracy = json.loads(unlabelled.read_text())["accuracy"] if unlabelled.exists() else None
        rows.append({**finished_row(run_dir), "task": run_dir.parent.name, "unlabelled_accuracy": accuracy})
    return rows


def summary_markdown(rows: list[dict], command: str) -> str:
    def cell(values):
        mean, sd, _ = mean_sd([None if v in (None, "") else float(v) for v in values])
        return "-" if mean is None else f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")

    test = {(r["task"], r["method"], int(r["labels_per_class"]), int(r["seed"])): float(r["test_accuracy"])
            for r in rows if r.get("test_accuracy") not in (None, "")}  # fmt: skip
    lines = ["| task | labels/class | method | runs | test accuracy | − supervised (points) | test ROC AUC | val accuracy | "
             "val, last epoch | unlabelled images' accuracy |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for key in sorted({(r["task"], int(r["labels_per_class"]), r["method"]) for r in rows}):
        task, n, method = key
        group = [r for r in rows if (r["task"], int(r["labels_per_class"]), r["method"]) == key]
        gains = [100 * (test[(task, method, n, int(r["seed"]))] - test[(task, "supervised", n, int(r["seed"]))]) for r in group
                 if method != "supervised" and (task, method, n, int(r["seed"])) in test and (task, "supervised", n, int(r["seed"])) in test]  # fmt: skip
        gain_mean, gain_sd, _ = mean_sd(gains)
        gain = "-" if gain_mean is None else f"{gain_mean:+.1f}" + (f" ± {gain_sd:.1f}" if gain_sd is not None else "")
        lines.append(f"| {task} | {n} | {method} | {len(group)} | {cell([r['test_accuracy'] for r in group])} | {gain} | "
                     f"{cell([r['test_roc_auc'] for r in group])} | {cell([r['val_accuracy'] for r in group])} | "
                     f"{cell([r['final_val_accuracy'] for r in group])} | {cell([r.get('unlabelled_accuracy') for r in group])} |")  # fmt: skip
    return f"`{command}`\n\n" + "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the rsna-1500 folder")
    parser.add_argument("--tasks", nargs="+", default=["2class", "3class"], choices=["2class", "3class"])
    parser.add_argument("--labels", type=int, nargs="+", default=[25, 100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["supervised", "adgm"])
    parser.add_argument("--view", choices=["AP", "PA"], help="the patients of this view position alone")
    parser.add_argument("--likelihood-reduction", choices=LIKELIHOOD_REDUCTIONS, default="sum",
                        help="the ADGM's log p(x|z,y) in its objective: summed or averaged over the pixels (TrainConfig)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--warmup-epochs", type=float, default=8.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/rsna-1500"))
    parser.add_argument("--summarise-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="16x16, 2class, 5 labels, 1 epoch, 1 seed, small networks")
    args = parser.parse_args(argv)
    sizes = {}
    if args.quick:
        args.size, args.tasks, args.labels, args.seeds, args.epochs, args.warmup_epochs = 16, ["2class"], [5], [0], 1, 1.0
        sizes = {"a_dim": 8, "z_dim": 8, "channels": (8, 16), "hidden": (32,)}
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.summarise_only:
        if not (args.source / "labels.csv").is_file():
            parser.error(f"{args.source}: not the rsna-1500 folder (no labels.csv; see ../shared/data/README.md)")
        source = one_view_source(args.source, args.out, args.view) if args.view else args.source
        data = prepared(source, args.out, args.size)
        overrides = {"warmup_epochs": args.warmup_epochs, "device": args.device, "likelihood_reduction": args.likelihood_reduction}
        for task in args.tasks:
            for seed in args.seeds:  # seed by seed, so that a stopped sweep has whole comparisons
                for n in args.labels:
                    run_label_curve([n], [seed], args.methods, data=data, task=task, epochs=args.epochs,
                                    out_dir=args.out / task, config_overrides=overrides, model_options=sizes)  # fmt: skip
        evaluate_unlabelled(args.out, args.device)
    everything = read_rows(args.out)
    write_rows(everything, args.out / "rsna_1500.csv", COLUMNS)
    view = f" --view {args.view}" if args.view else ""
    view += f" --likelihood-reduction {args.likelihood_reduction}" if args.likelihood_reduction != "sum" else ""
    command = (f"python benchmarks/rsna_1500.py{view} --size {args.size} --epochs {args.epochs} --warmup-epochs {args.warmup_epochs:g} "
               f"--labels {' '.join(map(str, args.labels))} --seeds {' '.join(map(str, args.seeds))} --out {shlex.quote(str(args.out))}")  # fmt: skip
    (args.out / "rsna_1500.md").write_text(summary_markdown(everything, command))
    print((args.out / "rsna_1500.md").read_text())
    return everything


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
