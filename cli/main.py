"""The `pyro-adgm` command line: parses options, calls the library, prints results."""

from __future__ import annotations

import logging
import typing
from dataclasses import fields, replace

import click
from click.core import ParameterSource

from cli.errors import one_line_errors
from cli.prepare import prepare
from data_tools.errors import InputError
from pyro_adgm import distributed, runs
from pyro_adgm.config import TrainConfig, default_of, field_types, load_config, setting_help


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def app(verbose):
    """Semi-supervised chest X-ray classification with the Auxiliary Deep Generative Model.

    \b
    Example:
      pyro-adgm train --task 2class --labels 50 --epochs 4
    """
    # under torchrun only rank 0 tells how the run goes; the others log warnings and errors
    level = logging.DEBUG if verbose else logging.INFO if distributed.environment_rank() == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s")


app.add_command(prepare)


# train

#: the train options that are not TrainConfig settings: where the settings come from and where the run goes
NOT_SETTINGS = ("config_file", "out_dir", "resume_dir")


def setting_options(command):
    """Add an option for each :class:`TrainConfig` field that is not config-only: its name (or ``flag``), type,
    default and choices from the field, its help from the field's entry in TrainConfig's docstring."""
    helps, types = setting_help(), field_types()
    for f in reversed(fields(TrainConfig)):
        if not f.metadata.get("cli", True):
            continue
        kind = next((t for t in typing.get_args(types[f.name]) if t is not type(None)), types[f.name])
        choices = f.metadata.get("choices")
        choices = choices() if callable(choices) else choices
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        default = default_of(f.name)
        options = {"is_flag": True} if kind is bool else {"type": click.Choice(choices) if choices else kind}
        command = click.option(flag, f.name, default=default, show_default=default is not None, help=helps[f.name], **options)(command)
    return command


def config_of(config_file: str | None, given: dict) -> TrainConfig:
    """The settings of ``config_file`` (none: the defaults) with the options ``given`` over them; a bad option's
    one-line error names its flag."""
    base = load_config(config_file)
    try:
        return replace(base, **given)
    except InputError as error:
        name = str(error).split(":", 1)[0]
        if name not in given:
            raise
        flag = TrainConfig.__dataclass_fields__[name].metadata.get("flag", "--" + name.replace("_", "-"))
        raise InputError(f"{flag}{str(error)[len(name):]}") from None


@app.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Take the settings from this file, the options given over them: a run's config.json, or a TOML or JSON "
                   "file of TrainConfig settings (every one, the config-only ones too; see TrainConfig).")  # fmt: skip
@setting_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Run directory (default: runs/TASK-METHOD-Nlabels-seedS).")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False), default=None, help="Continue this run directory where it stopped, with its settings (--epochs may extend it).")
@one_line_errors
def train(config_file, out_dir, resume_dir, **settings):
    """Train an ADGM (or the supervised baseline) and write a run directory.

    Under torchrun (torchrun --nproc-per-node N $(which pyro-adgm) train ...) each of the N processes trains on
    its shard of every step's N x --batch-size images and rank 0 writes the run directory.

    \b
    Examples:
      pyro-adgm train --task 2class --labels 50 --epochs 4            # demo data, about a minute on a CPU
      pyro-adgm train --task 3class --labels 4000 --data data/rsna225 --device cuda
      torchrun --nproc-per-node 4 $(which pyro-adgm) train --task 3class --labels 4000 --data data/rsna225 --device cuda
      pyro-adgm train --config runs/rsna-3class/config.json --seed 1 --out runs/rsna-3class-seed1
      pyro-adgm train --resume runs/2class-adgm-50labels-seed0 --epochs 150
    """
    context = click.get_current_context()
    given = {name: value for name, value in settings.items() if context.get_parameter_source(name) is not ParameterSource.DEFAULT}
    if resume_dir is not None and (config_file is not None or out_dir is not None or set(given) - {"epochs"}):
        raise InputError("--resume: a run continues with the settings it was started with; only --epochs may be given with it")
    with distributed.sigterm_as_failure():  # under torchrun: stopped because another process failed, in one line
        if resume_dir is not None:
            epochs = config_of(None, given).epochs if given else None  # a bad --epochs named by its flag
            report, run_dir = runs.resume(resume_dir, epochs=epochs)
        else:
            report, run_dir = runs.train(config_of(config_file, given), run_dir=out_dir)
    if distributed.environment_rank() == 0:  # once per run, under torchrun too
        click.echo(format_report(report))
        click.echo(f"run directory: {run_dir}")


# evaluate / sample / predict


@app.command()
@click.option("--checkpoint", type=click.Path(), required=True, help="best.pt or last.pt of a run.")
@click.option("--data", type=click.Path(), default=None, help="Prepared dataset (default: the one the checkpoint was trained on).")
@click.option("--split", type=click.Choice(runs.EVALUATION_SPLITS), default="val", show_default=True,
              help="unlabelled: the training images the run drew no label for, scored against their hidden labels.")
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
    from data_tools.image_paths import expand_image_arguments
    from pyro_adgm.checkpoint import atomic_write_text

    rows = runs.predict(checkpoint, expand_image_arguments(files), device=device)
    text = runs.predictions_csv(rows)
    if out_file is None:
        click.echo(text, nl=False)
        return
    atomic_write_text(out_file, text)  # a reader sees the old file or the whole new one
    click.echo(f"wrote {len(rows)} predictions to {out_file}")


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
