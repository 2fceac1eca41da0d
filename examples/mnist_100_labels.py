"""The ADGM paper's MNIST experiment: 100 labels (10 per class), the rest of the training images unlabelled.

Maaløe et al. (2016): the MNIST training set split 50,000 / 10,000 into training and validation images, 10
labelled images per class drawn from the 50,000, MLP networks with two hidden layers of 500 units, a and z of
size 100, a Bernoulli likelihood p(x|z,y) on dynamically binarised images. The model is trained with the same
:class:`~pyro_adgm.training.Trainer` as the chest X-ray model (the best validation accuracy picks the
checkpoint); the 10,000 test images are read once, at the end, and the test error of that checkpoint printed.

Anchors at 100 labels (test error): ADGM paper 0.96%, M2 (Kingma et al. 2014) 11.97%, Pyro's SS-VAE tutorial
6.81% (93.19% accuracy).

Run from the repository root (MNIST in torchvision's layout under ``../shared/data/MNIST/raw``; nothing is
downloaded)::

    python examples/mnist_100_labels.py --hours 2 --epochs 1000 --threads 1 --pixels grey --augment 1 --out runs/mnist-grey-aug1.0
    python examples/mnist_100_labels.py --hours 2 --epochs 1000 --threads 1 --out runs/mnist-100labels  # the paper's recipe
    python examples/mnist_100_labels.py --resume --hours 4 --epochs 1000 --out runs/mnist-100labels    # train on
    python examples/mnist_100_labels.py --quick   # a few steps on a small subset (the test suite's mode)

Defaults follow the authors' released code where it says (Adam, learning rate 3e-4, betas (0.9, 0.999), 100
labelled + 100 unlabelled images per step, each batch weighing the same, no KL warm-up) with beta 0.1 (alpha =
beta * N / N_l = 50); the weight average (decay 0.999) is evaluated. Batches that weigh the same are J^alpha with
the unlabelled term weighted by N_l / N_u (``--unlabelled-weight batch-means``, the default, as for every run; the authors' mean over
each batch is that times a constant, which Adam's steps do not feel). Validation accuracy after 6 epochs in a
settings trial without the weight average (BENCHMARKS.md, "MNIST"): batch-means beta 0.1: 84.1%, batch-means beta 1:
82.8%, J^alpha (``--unlabelled-weight 1``) beta 1: 69.6%, beta 10: 74.2%.
Two CPU hours on a 2-core machine, one thread (BENCHMARKS.md): **97.44% test accuracy** (2.56% error, 66
epochs) with ``--pixels grey --augment 1``: every training digit scaled, shifted and rotated at random at
every step, never mirrored. Without the transforms: 86.50% (binarised, 58 epochs slowed by denormals) and
87.71% with ``--pixels grey`` (109 epochs). ``--augment 0.5``: 96.64%.

With ``--hours`` the run stops before an epoch that would pass the limit (counted over resumed runs), and
the test set is read when a run ends; ``--resume`` takes the settings from the command line, so give the
same ones. See ``--help`` for every option.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pyro
import torch

from data_tools.dataset import labelled_subset
from pyro_adgm import ADGM, TrainConfig, Trainer, TrainingData
from pyro_adgm.config import BATCH_MEANS, unlabelled_weight_from_text
from pyro_adgm.evaluation import classification_report, predict_proba
from pyro_adgm.metrics_file import read_metrics, training_seconds

#: ``../shared/data`` seen from the repository root, wherever the script is started from
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASS_NAMES = tuple(str(k) for k in range(10))
TRAIN_SIZE = 50_000  # the first 50,000 training images; the last 10,000 are the validation set


def load_mnist(root: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST from ``root/MNIST/raw`` (no download): train images uint8 (60000, 28, 28), labels int64 (60000,),
    then the same for the 10,000 test images."""
    from torchvision.datasets import MNIST

    root = Path(root)
    if not (root / "MNIST" / "raw").is_dir():
        raise SystemExit(f"{root / 'MNIST' / 'raw'}: no MNIST here; pass --data-root DIR (the folder holding MNIST/)")
    train, test = MNIST(root=str(root), train=True, download=False), MNIST(root=str(root), train=False, download=False)
    return train.data, train.targets.long(), test.data, test.targets.long()


def mnist_training_data(images: torch.Tensor, labels: torch.Tensor, labels_per_class: int, *, seed: int,
                        train_size: int = TRAIN_SIZE, val_size: int = 10_000) -> TrainingData:  # fmt: skip
    """The paper's split: ``labels_per_class`` labelled images per class drawn (seeded) from the first
    ``train_size`` images, the rest of those unlabelled, the next ``val_size`` images for validation."""
    labels_np = labels.numpy()
    candidates = np.arange(train_size)
    labelled = labelled_subset(labels_np, candidates, labels_per_class, CLASS_NAMES, seed=seed)
    unlabelled = np.setdiff1d(candidates, labelled)
    val = np.arange(train_size, train_size + val_size)
    return TrainingData(
        labelled_images=images[labelled],
        labelled_labels=labels[labelled],
        unlabelled_images=images[unlabelled],
        val_images=images[val],
        val_labels=labels[val],
        class_names=CLASS_NAMES,
        description={"data": "MNIST", "labels_per_class": labels_per_class, "train_size": train_size, "val_size": val_size},
    )


def build_model(*, a_dim: int = 100, z_dim: int = 100, hidden: tuple[int, ...] = (500, 500), batch_norm: bool = True,
                pixels: str = "binarised") -> ADGM:  # fmt: skip
    """The paper's MNIST networks: MLPs (two hidden layers of 500), Bernoulli p(x|z,y), no dropout; batch norm
    after the first layer of the networks that read x unless ``batch_norm`` is False. ``pixels="grey"``: the
    Bernoulli cross-entropy of grey levels (``likelihood="bernoulli-grey"``) instead of binarised pixels."""
    likelihood = {"binarised": "bernoulli", "grey": "bernoulli-grey"}[pixels]
    return ADGM(num_classes=10, image_size=28, architecture="mlp", likelihood=likelihood, a_dim=a_dim, z_dim=z_dim,
                hidden=hidden, dropout=0.0, batch_norm=batch_norm)  # fmt: skip


def training_config(args: argparse.Namespace, epochs: int) -> TrainConfig:
    """The trainer's settings for the parsed options: no augmentation unless ``--augment P`` (then each training image is
    scaled/shifted/rotated with probability P, never mirrored); pixels binarised at every step unless
    ``--pixels grey``."""
    return TrainConfig(task="mnist", labels_per_class=args.labels_per_class, epochs=epochs, batch_size=args.batch_size,
                       warmup_epochs=args.warmup_epochs, beta=args.beta, unlabelled_weight=args.unlabelled_weight,
                       lr=args.lr, device=args.device, seed=args.seed, augment="device" if args.augment > 0 else "none",
                       augment_probability=args.augment if args.augment > 0 else TrainConfig.augment_probability,
                       augment_flip=False, binarize=args.pixels == "binarised",
                       max_seconds=args.hours * 3600 if args.hours else None)  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="folder holding MNIST/raw")
    parser.add_argument("--out", type=Path, default=Path("runs/mnist-100labels"), help="run directory")
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=100, help="passes over the unlabelled images")
    parser.add_argument("--batch-size", type=int, default=100, help="images per step, labelled and unlabelled each")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--beta", type=float, default=0.1, help="weight of the classification term, alpha = beta * N / N_l")
    parser.add_argument("--hours", type=float, default=None,
                        help="stop before an epoch that would take the training time past this (over resumes too)")
    parser.add_argument("--unlabelled-weight", default=BATCH_MEANS,
                        help="the unlabelled term's weight: a number (1: J^alpha, each image counting once), or batch-means: "
                             "N_l / N_u, so that a step's unlabelled batch weighs as much as its labelled batch (the authors' code)")
    parser.add_argument("--a-dim", type=int, default=100, help="size of the auxiliary variable a")
    parser.add_argument("--z-dim", type=int, default=100, help="size of the latent variable z")
    parser.add_argument("--no-batch-norm", action="store_true", help="no batch norm in the networks' first layer")
    parser.add_argument("--hidden", type=int, nargs="+", default=[500, 500], help="widths of each MLP's hidden layers")
    parser.add_argument("--pixels", choices=("binarised", "grey"), default="binarised",
                        help="binarised: x ~ Bernoulli(grey level) at every step (the paper's); grey: the Bernoulli "
                             "cross-entropy of the grey levels themselves (as in Pyro's SS-VAE tutorial)")
    parser.add_argument("--augment", type=float, default=0.0,
                        help="the chance that a training image is scaled/shifted/rotated at random (never mirrored); 0: none")
    parser.add_argument("--warmup-epochs", type=float, default=0.0, help="KL warm-up 0 -> 1 over this many epochs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the labelled subset and the training")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--skip-test", action="store_true", help="do not read the test set (for tuning runs)")
    parser.add_argument("--quick", action="store_true", help="a few steps on 1,000 images, small networks")
    args = parser.parse_args(argv)
    if not 0.0 <= args.augment <= 1.0:
        parser.error(f"--augment: expected a probability in [0, 1], got {args.augment:g}")
    try:
        args.unlabelled_weight = unlabelled_weight_from_text(args.unlabelled_weight)
    except ValueError as error:
        parser.error(f"--unlabelled-weight: {error}")
    return args


def main(argv: list[str] | None = None) -> dict:
    """Train, then print and return {"test_error", "test_accuracy", "val_accuracy", "best_epoch", "epochs",
    "seconds"} (errors and accuracies as fractions; seconds: the training epochs' time, from metrics.csv)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)
    images, labels, test_images, test_labels = load_mnist(args.data_root)
    if args.quick:
        data = mnist_training_data(images, labels, args.labels_per_class, seed=args.seed, train_size=1000, val_size=500)
        test_images, test_labels = test_images[:500], test_labels[:500]
        model = build_model(a_dim=8, z_dim=8, hidden=(64, 64), batch_norm=not args.no_batch_norm, pixels=args.pixels)
        epochs = 1
    else:
        data = mnist_training_data(images, labels, args.labels_per_class, seed=args.seed)
        model = build_model(a_dim=args.a_dim, z_dim=args.z_dim, hidden=tuple(args.hidden), batch_norm=not args.no_batch_norm,
                            pixels=args.pixels)  # fmt: skip
        epochs = args.epochs
    config = training_config(args, epochs)
    resume = args.resume and (args.out / "last.pt").exists()
    if not resume and (args.out / "last.pt").exists():
        raise SystemExit(f"{args.out}: already holds a run; continue it with --resume or choose another --out")
    trainer = Trainer(model, data, config, args.out)
    report = trainer.fit(resume=resume)
    seconds = training_seconds(read_metrics(args.out))  # every epoch, over resumed runs too
    if args.skip_test:
        print(f"validation accuracy {100 * report['accuracy']:.2f}% (best epoch {report['best_epoch']}); test not read")
        return {"val_accuracy": report["accuracy"], "best_epoch": report["best_epoch"], "seconds": round(seconds, 1)}
    # the test set, once, with the best-validation checkpoint (fit() has loaded it)
    probs = predict_proba(model, test_images, device=trainer.device)
    test = classification_report(probs, test_labels.numpy(), CLASS_NAMES)
    result = {"test_error": 1 - test["accuracy"], "test_accuracy": test["accuracy"], "val_accuracy": report["accuracy"],
              "best_epoch": report["best_epoch"], "epochs": report["epochs"], "seconds": round(seconds, 1)}  # fmt: skip
    (args.out / "test.json").write_text(json.dumps({**result, "report": test}, indent=2))
    print(f"MNIST, {args.labels_per_class * 10} labels: test error {100 * result['test_error']:.2f}% "
          f"(validation accuracy {100 * result['val_accuracy']:.2f}%, best epoch {result['best_epoch']} of "
          f"{result['epochs']}, {seconds / 60:.1f} min)")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
