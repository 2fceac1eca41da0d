"""The `pyro-adgm` command line: parses options, calls the library, prints results."""

from __future__ import annotations

import csv
import logging
import sys

import click

from cli.errors import one_line_errors
from cli.prepare import prepare
from pyro_adgm import runs
from pyro_adgm.augment import BACKENDS
from pyro_adgm.model import CLASS_PRIORS, LABEL_WEIGHTS
from pyro_adgm.runs import DEMO_DEFAULTS
from pyro_adgm.training import LABELLED_WEIGHTINGS, LR_SCHEDULES, METHODS, TrainConfig


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def app(verbose):
    """Semi-supervised chest X-ray classification with the Auxiliary Deep Generative Model.

    \b
    Example:
      pyro-adgm train --task 2class --labels 50 --epochs 4
    """
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")


app.add_command(prepare)


# train


@app.command()
@click.option("--task", default="2class", show_default=True, help="2class (normal / abnormal) or 3class (normal / opacity / not-normal).")
@click.option("--labels", "labels_per_class", type=click.IntRange(min=1), default=50, show_default=True, help="Labelled training images per class.")
@click.option("--data", type=click.Path(), default=None, help="Prepared dataset folder (`pyro-adgm prepare ...`); the built-in demo phantoms when omitted.")
@click.option("--demo-images", type=click.IntRange(min=30), default=DEMO_DEFAULTS["n_images"], show_default=True, help="Demo data only: number of phantoms.")
@click.option("--demo-size", type=click.IntRange(16, 256), default=DEMO_DEFAULTS["image_size"], show_default=True, help="Demo data only: image side in pixels.")
@click.option("--method", type=click.Choice(METHODS), default="adgm", show_default=True, help="adgm, or the supervised baseline: q(y|a,x) on the labelled images alone.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Default: the paper's 100 (2class) / 200 (3class).")
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainConfig.batch_size, show_default=True)
@click.option("--image-size", type=click.IntRange(16, 256), default=None, help="Resize images to this side, 16 to 256 (default: the dataset's).")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=TrainConfig.warmup_epochs, show_default=True, help="KL weight rises 0 -> 1 over this many epochs.")
@click.option("--unlabelled-warmup-epochs", type=click.FloatRange(min=0), default=None, help="The unlabelled term's weight rises 0 -> 1 over this many epochs (default: as --warmup-epochs; 0: off).")
@click.option("--unlabelled-weight", type=click.FloatRange(min=0, min_open=True), default=TrainConfig.unlabelled_weight, show_default=True, help="The weight the unlabelled term's ramp ends at (1: the paper's J^alpha).")
@click.option("--beta", type=click.FloatRange(min=0), default=TrainConfig.beta, show_default=True, help="alpha = beta * (N_l + N_u) / N_l.")
@click.option("--labelled-weighting", type=click.Choice(LABELLED_WEIGHTINGS), default=TrainConfig.labelled_weighting, show_default=True, help="bound: each labelled image counts once in J^alpha; balanced: each step's labelled batch weighs as much as its unlabelled batch.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=TrainConfig.lr, show_default=True)
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=TrainConfig.lr_schedule, show_default=True, help="constant (the paper's); cosine: decay to 0 over the run's epochs; warmup-cosine: full rate through the warm-up, then the cosine.")
@click.option("--likelihood", type=click.Choice(runs.TRAINABLE_LIKELIHOODS), default=runs.DEFAULT_LIKELIHOOD, show_default=True, help="p(x|z,y): discretized-logistic (a probability for each of the 256 grey levels, so the bound is <= 0), gaussian (the paper's density on [0, 1]), or bernoulli-grey (the cross-entropy of grey levels, as many M2 implementations on MNIST).")
@click.option("--class-prior", default=None, metavar="|".join(CLASS_PRIORS) + "|NAME=P,...", help="p(y): fixed uniform; learned from the unlabelled images (empirical Bayes); or fixed at known class shares, e.g. normal=0.26,abnormal=0.74 (the prevalence where the images come from). Default: uniform (the paper's).")
@click.option("--label-weights", type=click.Choice(LABEL_WEIGHTS), default="equal", show_default=True, help="prior: each labelled image's classification term times K * p(y), fitting q(y|a,x) to the class shares of p(y) rather than the labelled set's equal shares (all 1 under a uniform p(y)); equal: the paper's.")
@click.option("--class-prior-lr", type=click.FloatRange(min=0, min_open=True), default=TrainConfig.class_prior_lr, show_default=True, help="Adam's rate for a learned p(y).")
@click.option("--weight-average-decay", type=click.FloatRange(0, 1, max_open=True), default=TrainConfig.weight_average_decay, show_default=True, help="Evaluate and save a moving average of the weights with this per-step decay (0: the raw weights).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu or cuda[:N].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the label draw, the initialisation and the noise.")
@click.option("--augment", type=click.Choice(BACKENDS), default="device", show_default=True, help="Random flips and affine transforms, per image.")
@click.option("--augment-probability", type=click.FloatRange(0, 1), default=TrainConfig.augment_probability, show_default=True, help="The chance that a training image is transformed (else used as stored).")
@click.option("--augment-flip/--no-augment-flip", default=TrainConfig.augment_flip, show_default=True, help="Mirror images left-right as part of the transform (off for images a mirror changes, such as text or digits).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Run directory (default: runs/TASK-METHOD-Nlabels-seedS).")
@click.option("--tensorboard", is_flag=True, help='Also write each epoch\'s metrics as TensorBoard scalars under RUN/tensorboard (pip install "pyro-adgm[tensorboard]").')
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None, help="Continue this run directory where it stopped (other options but --epochs are taken from it).")
@one_line_errors
def train(task, labels_per_class, data, demo_images, demo_size, method, epochs, batch_size, image_size, warmup_epochs,
          unlabelled_warmup_epochs, unlabelled_weight, beta, labelled_weighting, lr, lr_schedule, likelihood, class_prior, label_weights,
          class_prior_lr, weight_average_decay, device, seed, augment, augment_probability, augment_flip, out_dir, tensorboard, resume_dir):  # fmt: skip
    """Train an ADGM (or the supervised baseline) and write a run directory.

    \b
    Examples:
      pyro-adgm train --task 2class --labels 50 --epochs 4            # demo data, about a minute on a CPU
      pyro-adgm train --task 3class --labels 4000 --data data/rsna225 --device cuda
      pyro-adgm train --resume runs/2class-adgm-50labels-seed0
    """
    if resume_dir is not None:
        report, run_dir = runs.resume(resume_dir, epochs=epochs)
    else:
        config = TrainConfig(task=task, labels_per_class=labels_per_class, epochs=epochs, batch_size=batch_size,
                             warmup_epochs=warmup_epochs, unlabelled_warmup_epochs=unlabelled_warmup_epochs,
                             unlabelled_weight=unlabelled_weight, beta=beta, lr=lr, lr_schedule=lr_schedule, device=device, seed=seed, augment=augment,
                             augment_probability=augment_probability, augment_flip=augment_flip,
                             method=method, labelled_weighting=labelled_weighting,
                             weight_average_decay=weight_average_decay or None, class_prior_lr=class_prior_lr,
                             tensorboard=tensorboard)  # fmt: skip
        demo = {"n_images": demo_images, "image_size": demo_size, "seed": DEMO_DEFAULTS["seed"]}
        report, run_dir = runs.train(config, data=data, demo=demo, image_size=image_size, run_dir=out_dir,
                                     model_options=runs.model_options_for(method, class_prior, label_weights, likelihood))  # fmt: skip
    click.echo(format_report(report))
    click.echo(f"run directory: {run_dir}")


# evaluate / sample / predict


@app.command()
@click.option("--checkpoint", type=click.Path(), required=True, help="best.pt or last.pt of a run.")
@click.option("--data", type=click.Path(), default=None, help="Prepared dataset (default: the one the checkpoint was trained on).")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Where to write evaluation-SPLIT.json and confusion-SPLIT.png (default: next to the checkpoint).")
@click.option("--device", default="auto", show_default=True)
@one_line_errors
def evaluate(checkpoint, data, split, out_dir, device):
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on a split.

    \b
    Example:
      pyro-adgm evaluate --checkpoint runs/2class-adgm-50labels-seed0/best.pt --split val
    """
    report = runs.evaluate(checkpoint, data=data, split=split, out_dir=out_dir, device=device)
    click.echo(format_report(report))


@app.command()
@click.option("--checkpoint", type=click.Path(), required=True)
@click.option("--class", "class_name", required=True, help="2class: normal, abnormal; 3class: normal, opacity, not-normal.")
@click.option("--n", type=click.IntRange(min=1), default=16, show_default=True, help="Number of images.")
@click.option("--out", type=click.Path(dir_okay=False), default="samples.png", show_default=True, help="PNG file to write.")
@click.option("--seed", type=int, default=None, help="Seed for z ~ p(z).")
@click.option("--device", default="auto", show_default=True)
@one_line_errors
def sample(checkpoint, class_name, n, out, seed, device):
    """Draw X-rays of one class from p(x|z,y), z ~ p(z), as a PNG grid.

    \b
    Example:
      pyro-adgm sample --checkpoint runs/3class-adgm-4000labels-seed0/best.pt --class opacity --n 16 --out opacity.png
    """
    path = runs.sample(checkpoint, class_name, n=n, out=out, seed=seed, device=device)
    click.echo(f"wrote {n} images of class {class_name} to {path}")


@app.command()
@click.option("--checkpoint", type=click.Path(), required=True)
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None, help="Write the CSV to this file (replaced whole, never half-written) instead of standard output.")
@click.option("--device", default="auto", show_default=True)
@one_line_errors
def predict(checkpoint, files, out_file, device):
    """Class probabilities for DICOM/PNG/JPEG files, as CSV on standard output or in --out FILE.

    FILES are image files or folders; a folder stands for the .dcm/.dicom/.png/.jpg/.jpeg files directly in it
    (not in its sub-folders), in sorted order. Columns: file, predicted, p_<class> per class.

    \b
    Examples:
      pyro-adgm predict --checkpoint runs/2class-adgm-50labels-seed0/best.pt scan1.dcm scan2.png > predictions.csv
      pyro-adgm predict --checkpoint runs/2class-adgm-50labels-seed0/best.pt scans/ --out predictions.csv
    """
    import os
    import uuid
    from pathlib import Path

    from data_tools.errors import InputError
    from data_tools.image_paths import expand_image_arguments

    paths = expand_image_arguments(files)
    if out_file is not None and not Path(out_file).resolve().parent.is_dir():
        raise InputError(f"--out {out_file}: folder {Path(out_file).resolve().parent} does not exist")
    rows = runs.predict(checkpoint, paths, device=device)
    if out_file is None:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return
    out = Path(out_file)
    # A temporary sibling renamed into place: a reader sees the old file or the whole new one.
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "x", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    click.echo(f"wrote {len(rows)} predictions to {out}")


def format_report(report: dict) -> str:
    """A plain-text table of a classification report."""
    names = report["class_names"]
    lines = [f"{report.get('split', 'val')} accuracy: {report['accuracy']:.4f} on {report['n']} images"
             + (f", ROC AUC {report['roc_auc']:.4f}" if report.get("roc_auc") is not None else "")]  # fmt: skip
    width = max(len(n) for n in names) + 2
    lines.append("per-class accuracy: " + ", ".join(
        f"{n} {a:.3f}" if a is not None else f"{n} n/a" for n, a in report["per_class_accuracy"].items()))  # fmt: skip
    lines.append("confusion matrix (rows true, columns predicted):")
    lines.append(" " * width + "".join(f"{n:>{width}}" for n in names))
    for name, row in zip(names, report["confusion_matrix"]):
        lines.append(f"{name:<{width}}" + "".join(f"{c:>{width}}" for c in row))
    return "\n".join(lines)
