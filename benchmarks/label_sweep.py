"""Accuracy against labels per class on real X-rays: ADGM against the supervised baseline on PneumoniaMNIST.

Prepares ``pneumoniamnist_28.npz`` once with ``prepare medmnist`` (its train/val/test splits kept), then runs
:func:`pyro_adgm.label_curve.run_label_curve`: for each labels-per-class count and seed, one ADGM run and one
supervised run with the same label draw (the seed sets the draw and the initialisation), model selection on
``val``, and the best checkpoint evaluated once on ``test``. Resumable: finished runs are not trained again.

Writes, under ``--out``: ``label_curve.csv`` (one row per run), ``summary.md`` (mean ± sd of test accuracy and
ROC AUC, with the command that reproduces each row), ``accuracy_vs_labels.png`` and ``val_curves.png``
(validation accuracy per epoch for seed 0 of each label count). Run folders are named by method, labels and seed
only: use a new ``--out`` for new settings, or the finished runs of the old ones are summarised under the new
command. Sweeps before `--augment-probability` existed transformed every training image (``--augment-probability 1``).
``--rows`` names a results CSV kept in the repository: the runs it holds are not trained again, and each new run's
row is merged into it as it finishes, so a sweep longer than one machine's life goes on elsewhere (two processes
given other ``--seeds`` may share it).

    python benchmarks/label_sweep.py --epochs 12 --out runs/pneumoniamnist-sweep
    python benchmarks/label_sweep.py --quick          # demo phantoms, tiny; a test runs it
    python benchmarks/label_sweep.py --epochs 30 --warmup-epochs 10 --seeds 3 --out runs/sweep30-file \
        --rows benchmarks/results/label_curve_30epochs_file.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shlex
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from data_tools.errors import InputError  # noqa: E402
from pyro_adgm.config import (  # noqa: E402
    BATCH_MEANS,
    DEFAULT_LIKELIHOOD,
    TRAINABLE_LIKELIHOODS,
    TrainConfig,
    model_options_for,
    unlabelled_weight_from_text,
)
from pyro_adgm.label_curve import plot_label_curve, run_dir_name, run_label_curve, summarise  # noqa: E402
from pyro_adgm.model import CLASS_PRIORS, LABEL_WEIGHTS  # noqa: E402
from pyro_adgm.plots import save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_NPZ = ROOT.parent / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist_28.npz"


def prepared_dataset(npz: Path, out_dir: Path, test_from_train: int = 0) -> Path:
    """``out_dir/prepared``, prepared once (with ``test_from_train`` training images, seed 0, as the test split
    when > 0); :class:`InputError` when the folder there was prepared with another test split."""
    from data_tools.medmnist import prepare_medmnist

    prepared = out_dir / "prepared"
    if not (prepared / "meta.json").exists():
        prepare_medmnist(npz, prepared, test_from_train=test_from_train)
    have = json.loads((prepared / "meta.json").read_text()).get("medmnist", {}).get("test_from_train")
    want = {"images": test_from_train, "seed": 0} if test_from_train else None
    if have != want:
        shown = {k: f"{v['images']} images drawn from train" if v else "the file's" for k, v in (("have", have), ("want", want))}
        raise InputError(f"{prepared}: prepared with {shown['have']} as the test split, not {shown['want']}; "
                         "choose another output folder")  # fmt: skip
    return prepared


def plot_val_curves(out_dir: Path, labels: list[int], methods: list[str], seed: int, path: Path) -> None:
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 3.8), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for n in labels:
            metrics = out_dir / run_dir_name(method, n, seed) / "metrics.csv"
            if not metrics.exists():
                continue
            with open(metrics, newline="") as handle:
                rows = list(csv.DictReader(handle))
            ax.plot([int(r["epoch"]) for r in rows], [float(r["val_accuracy"]) for r in rows], label=f"{n} labels/class")
        ax.set_title(f"{method}: validation accuracy per epoch (seed {seed})")
        ax.set_xlabel("epoch")
        if ax.lines:  # none where the seed's run folders are on another machine
            ax.legend()
    save_figure(fig, path)


def summary_markdown(rows: list[dict], command: str) -> str:
    def cell(mean, sd):
        return "-" if mean is None else f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f}"

    seconds = {}
    for row in rows:
        seconds.setdefault((row["method"], int(row["labels_per_class"])), []).append(float(row["seconds"] or 0))
    lines = ["| method | labels/class | runs | test accuracy | test ROC AUC | val accuracy | val accuracy, last epoch | train time / run (s) | reproduce |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for s in summarise(rows):
        key = (s["method"], s["labels_per_class"])
        mean_seconds = sum(seconds[key]) / len(seconds[key])
        rerun = f"`{command} --methods {s['method']} --labels {s['labels_per_class']}`"
        lines.append(f"| {s['method']} | {s['labels_per_class']} | {s['runs']} | {cell(s['test_accuracy_mean'], s['test_accuracy_sd'])} | "
                     f"{cell(s['test_roc_auc_mean'], s['test_roc_auc_sd'])} | {cell(s['val_accuracy_mean'], s['val_accuracy_sd'])} | "
                     f"{cell(s['final_val_accuracy_mean'], s['final_val_accuracy_sd'])} | {mean_seconds:.0f} | {rerun} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ)
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 50, 100, 500])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["adgm", "supervised"])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--warmup-epochs", type=float, default=8.0, help="KL and unlabelled-term warm-up")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--beta", type=float, default=TrainConfig.beta,
                        help="weight of the classification term, alpha = beta * (N_l + N_u) / N_l")
    parser.add_argument("--unlabelled-weight", type=unlabelled_weight_from_text, default=TrainConfig.unlabelled_weight,
                        help=f"the ADGM's unlabelled-term weight at the end of its ramp: {BATCH_MEANS} (N_l / N_u) or a number (1: J^alpha)")
    parser.add_argument("--weight-average-decay", type=float, default=TrainConfig.weight_average_decay,
                        help="per-step decay of the evaluated weight average (0: the raw weights)")
    parser.add_argument("--augment-probability", type=float, default=TrainConfig.augment_probability,
                        help="the chance that a training image is transformed")
    parser.add_argument("--class-prior", default=None, metavar="|".join(CLASS_PRIORS) + "|NAME=P,...",
                        help="p(y): fixed uniform, learned from the unlabelled images, or fixed at known class shares "
                             "(normal=0.258,abnormal=0.742; both methods) (default: uniform)")
    parser.add_argument("--label-weights", choices=LABEL_WEIGHTS, default="equal",
                        help="prior: each labelled image's classification term times K * p(y); equal: the paper's")
    parser.add_argument("--likelihood", choices=TRAINABLE_LIKELIHOODS, default=DEFAULT_LIKELIHOOD,
                        help="the ADGM's p(x|z,y): gaussian (the paper's density) or discretized-logistic (8-bit levels)")
    parser.add_argument("--test-from-train", type=int, default=0, metavar="N",
                        help="test on N training images drawn at random (seed 0) instead of the file's test split, "
                             "which is then left out: an in-distribution test (0: the file's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/pneumoniamnist-sweep"))
    parser.add_argument("--rows", type=Path, default=None, metavar="CSV",
                        help="finished rows of this sweep (label_curve.csv's columns): not trained again; new rows merged in")
    parser.add_argument("--quick", action="store_true", help="demo phantoms (28x28, 150 images), 1 epoch, 1 seed")
    args = parser.parse_args(argv)
    if args.likelihood != DEFAULT_LIKELIHOOD and "supervised" in args.methods:
        parser.error(f"--likelihood {args.likelihood} is an ADGM setting (the supervised baseline has no generative model): add --methods adgm")
    if args.class_prior == "learned" and "supervised" in args.methods:
        parser.error("--class-prior learned is an ADGM setting (the supervised baseline has no p(y)): add --methods adgm")
    if args.quick and args.test_from_train:
        parser.error("--test-from-train draws from the PneumoniaMNIST file's training images, not from --quick's demo phantoms")
    overrides = {"batch_size": args.batch_size, "warmup_epochs": args.warmup_epochs, "device": args.device,
                 "weight_average_decay": args.weight_average_decay or None,
                 "beta": args.beta, "unlabelled_weight": args.unlabelled_weight, "augment_probability": args.augment_probability}
    for method in args.methods:  # every setting is checked before any run
        try:
            model_options_for(method, args.class_prior, args.label_weights, args.likelihood if method == "adgm" else DEFAULT_LIKELIHOOD)
            TrainConfig(method=method, **overrides)
        except InputError as error:
            parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = (f"python benchmarks/label_sweep.py --epochs {args.epochs} --warmup-epochs {args.warmup_epochs:g} "
               f"--batch-size {args.batch_size} --beta {args.beta:g} {f'--unlabelled-weight {args.unlabelled_weight} ' if args.unlabelled_weight != TrainConfig.unlabelled_weight else ''}--weight-average-decay {args.weight_average_decay:g} --augment-probability {args.augment_probability:g} {f'--class-prior {shlex.quote(args.class_prior)} ' if args.class_prior else ''}--label-weights {args.label_weights} {f'--likelihood {args.likelihood} ' if args.likelihood != DEFAULT_LIKELIHOOD else ''}{f'--test-from-train {args.test_from_train} ' if args.test_from_train else ''}--seeds {' '.join(map(str, args.seeds))} --out {args.out}")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    if args.quick:
        data, demo = None, {"n_images": 150, "image_size": 28, "seed": 0}
        args.labels, args.seeds, args.epochs = [3], [0], 1
        model_options = {"a_dim": 8, "z_dim": 8, "channels": (8, 16), "hidden": (32,)}
    else:
        if not args.npz.exists():
            parser.error(f"{args.npz}: PneumoniaMNIST file not found (see ../shared/data/README.md)")
        try:
            data = prepared_dataset(args.npz, args.out, args.test_from_train)
        except InputError as error:
            parser.error(str(error))
        demo, model_options = None, {}
    model_options.update(likelihood=args.likelihood)
    start = time.perf_counter()
    rows = run_label_curve(args.labels, args.seeds, args.methods, data=data, demo=demo, task="2class", epochs=args.epochs,
                           out_dir=args.out, model_options=model_options, config_overrides=overrides,
                           class_prior=args.class_prior, label_weights=args.label_weights, rows_csv=args.rows)  # fmt: skip
    plot_label_curve(rows, args.out / "accuracy_vs_labels.png", title="PneumoniaMNIST, 2 classes")
    plot_val_curves(args.out, args.labels, args.methods, args.seeds[0], args.out / "val_curves.png")
    (args.out / "summary.md").write_text(summary_markdown(rows, command))
    print((args.out / "summary.md").read_text())
    print(f"wall time of this invocation: {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()
