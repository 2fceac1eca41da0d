"""Labels drowned by the unlabelled term: ``tests/test_class_prior.py``'s run with one setting changed at a time.

The run: 10 short epochs (warm-up 5, lr 3e-3, the tests' small networks) on 60 labelled demo phantoms (20 per
class) and 300 unlabelled ones in class shares 0.6 / 0.3 / 0.1, p(y) fixed and uniform. For each setting it
reports the classes' shares of the unlabelled images' predictions, the labelled images' training accuracy and
the validation accuracy of the last epoch. ``defaults`` weighs each step's labelled batch as its unlabelled
batch, as the paper's published code does (the unlabelled weight N_l / N_u); ``sum`` is J^alpha with each image
counted once (the unlabelled weight 1), and the other ADGM settings change one thing of ``sum``.

    OMP_NUM_THREADS=1 python benchmarks/labels_drowned.py --out runs/labels-drowned
    python benchmarks/labels_drowned.py --settings defaults --epochs 1 --out /tmp/drowned   # a test runs it
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import pyro
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import SMALL_MODEL  # noqa: E402
from test_class_prior import unequal_training_data  # noqa: E402

from pyro_adgm.evaluation import predict_proba  # noqa: E402
from pyro_adgm.model import ADGM  # noqa: E402
from pyro_adgm.runs import model_options_for  # noqa: E402
from pyro_adgm.training import TrainConfig, Trainer  # noqa: E402

LABELLED, UNLABELLED = 60, 300
#: name -> (ADGM keyword arguments, TrainConfig fields) over the test's run; the changes but ``defaults`` are
#: made to J^alpha (``sum``: the unlabelled weight 1)
SETTINGS = {
    "defaults": ({}, {}),
    "sum": ({}, {"unlabelled_weight": 1.0}),
    "discretized-logistic": ({"likelihood": "discretized-logistic"}, {"unlabelled_weight": 1.0}),
    "unlabelled-weight-0.001": ({}, {"unlabelled_weight": 0.001}),
    "supervised": ({}, {"method": "supervised"}),
    "beta-30": ({}, {"beta": 30.0, "unlabelled_weight": 1.0}),
}
COLUMNS = ("setting", "share_normal", "share_opacity", "share_not_normal", "train_accuracy", "val_accuracy")


def run(name: str, out: Path, epochs: int) -> dict:
    model_options, config_options = SETTINGS[name]
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    data = unequal_training_data(n_unlabelled=UNLABELLED, labels_per_class=LABELLED // 3)
    model = ADGM(num_classes=3, image_size=28, **SMALL_MODEL, **{**model_options_for("adgm"), **model_options})
    config = TrainConfig(task="3class", epochs=epochs, batch_size=32, warmup_epochs=epochs / 2, lr=3e-3, device="cpu",
                         seed=0, **config_options)  # fmt: skip
    Trainer(model, data, config, out / name).fit()
    shares = np.bincount(predict_proba(model, data.unlabelled_images).argmax(1), minlength=3) / UNLABELLED
    with open(out / name / "metrics.csv", newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    return {"setting": name, "share_normal": shares[0], "share_opacity": shares[1], "share_not_normal": shares[2],
            "train_accuracy": float(last["train_accuracy"]), "val_accuracy": float(last["val_accuracy"])}  # fmt: skip


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/labels-drowned"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run(name, args.out, args.epochs) for name in args.settings]
    lines = ["| setting | predicted shares | labelled training accuracy, last epoch | `val` accuracy, last epoch |",
             "|---|---|---|---|"]  # fmt: skip
    for r in rows:
        shares = " / ".join(f"{r[k]:.2f}" for k in ("share_normal", "share_opacity", "share_not_normal"))
        lines.append(f"| {r['setting']} | {shares} | {r['train_accuracy']:.2f} | {r['val_accuracy']:.2f} |")
    with open(args.out / "labels_drowned.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "labels_drowned.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
