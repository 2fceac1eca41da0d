"""Accuracy against the number of labelled images per class (the protocol of Figs. 5 and 6 of Cerri &
Fraccaro): the ADGM and the supervised baseline, several label counts, several seeds.

Each (method, labels per class, seed) is one run of the same trainer as ``pyro-adgm train``, in its own folder
under ``--out``; the best-validation checkpoint of each is evaluated once on the test split. Re-running the
same command skips finished runs and continues stopped ones. Writes ``label_curve.csv`` (one row per run),
``summary.csv`` (mean and sd over seeds) and ``label_curve.png`` (log x axis, error bars one sd).

Run from the repository root, on any prepared dataset (``pyro-adgm prepare ...``) or the demo phantoms::

    python examples/label_curve.py --data data/rsna225 --task 2class --labels 50 100 500 1000 4000 \
        --seeds 0 1 2 --out runs/curve
    python examples/label_curve.py --labels 10 50 --seeds 0 1 --epochs 20 --out runs/demo-curve   # demo phantoms
    python examples/label_curve.py --quick --out curve                                            # the test suite's mode
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from data_tools.errors import InputError
from pyro_adgm.checkpoint import atomic_write_text
from pyro_adgm.label_curve import format_summary, plot_label_curve, run_label_curve, summarise, write_rows
from pyro_adgm.model import CLASS_PRIORS, LABEL_WEIGHTS
from pyro_adgm.runs import model_options_for


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="prepared dataset folder (default: the demo phantoms)")
    parser.add_argument("--task", default="2class")
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 50, 200], help="labelled images per class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["adgm", "supervised"], choices=["adgm", "supervised"])
    parser.add_argument("--epochs", type=int, default=None, help="per run (default: the paper's for the task)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--class-prior", default=None, metavar="|".join(CLASS_PRIORS) + "|NAME=P,...",
                        help="p(y): uniform, learned, or known shares such as normal=0.26,abnormal=0.74 "
                             "(default: learned for the ADGM, uniform for the supervised baseline)")
    parser.add_argument("--label-weights", choices=LABEL_WEIGHTS, default="prior",
                        help="prior: each labelled image's classification term times K * p(y); equal: the paper's")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("runs/label-curve"))
    parser.add_argument("--quick", action="store_true", help="150 demo phantoms at 28x28, small networks, 2 and 5 labels per class, one seed, one epoch")
    args = parser.parse_args(argv)
    for method in args.methods:  # a bad p(y) setting is a usage error, before any data is read
        try:
            model_options_for(method, args.class_prior, args.label_weights)
        except InputError as error:
            parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Run (or finish) the grid; print the summary table and return the summary rows."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    options = dict(data=args.data, task=args.task, epochs=args.epochs, out_dir=args.out,
                   class_prior=args.class_prior, label_weights=args.label_weights,
                   config_overrides={"batch_size": args.batch_size, "device": args.device})  # fmt: skip
    labels, seeds = args.labels, args.seeds
    if args.quick:
        labels, seeds = [2, 5], [0]
        options.update(data=None, demo={"n_images": 150, "image_size": 28, "seed": 0}, epochs=1,
                       model_options={"a_dim": 8, "z_dim": 8, "channels": (8, 16, 32, 32, 32), "hidden": (32,)},
                       config_overrides={"batch_size": 16, "warmup_epochs": 1, "device": "cpu"})  # fmt: skip
    rows = run_label_curve(labels, seeds, args.methods, **options)
    summary = summarise(rows)
    write_rows(summary, args.out / "summary.csv", columns=list(summary[0]))
    plot_label_curve(rows, args.out / "label_curve.png", title=f"{args.data or 'demo'}, {args.task}")
    table = format_summary(summary)
    atomic_write_text(args.out / "summary.txt", table + "\n")
    print(table)
    print(f"{args.out}: label_curve.csv, summary.csv, label_curve.png")
    return summary


if __name__ == "__main__":
    main()
