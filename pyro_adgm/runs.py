"""Whole jobs, as the CLI runs them and as a script can call them: train, resume, evaluate, sample, predict.

These functions join the data tools (prepared datasets, the demo phantoms) to the model and trainer; the CLI
only parses options and prints what they return. :func:`train` and :func:`resume` run under torchrun as they do
alone: started by ``torchrun --nproc-per-node N``, each process joins the run's process group for the training
(:func:`process_group`) and leaves it at the end, whether the run ends well or not.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyro
import torch
import torch.nn.functional as F

from data_tools.dataset import MAX_SEED, PreparedDataset, labelled_subset
from data_tools.demo import make_demo_dataset
from data_tools.errors import InputError
from pyro_adgm import distributed
from pyro_adgm.checkpoint import atomic_write_json, check_run_contents, load_checkpoint
from pyro_adgm.config import (  # noqa: F401  (DEFAULT_LIKELIHOOD, TRAINABLE_LIKELIHOODS, parse_known_prior: their old home)
    DEFAULT_LIKELIHOOD,
    DEMO_DEFAULTS,
    TRAINABLE_LIKELIHOODS,
    model_options_for,
    parse_known_prior,
    resolve_known_prior,
)
from pyro_adgm.evaluation import classification_report, predict_proba
from pyro_adgm.model import ADGM
from pyro_adgm.plots import plot_confusion, save_image_grid
from pyro_adgm.training import TrainConfig, Trainer, TrainingData, resolve_device

logger = logging.getLogger(__name__)
#: the name :func:`checkpoint_split` gives a run's unlabelled training images (their labels hidden in training)
UNLABELLED = "unlabelled"
#: the splits a checkpoint can be evaluated on
EVALUATION_SPLITS = ("val", "test", UNLABELLED)



# data


def open_dataset(data: str | Path | None, demo: dict | None = None) -> PreparedDataset:
    """A prepared dataset folder, or the demo phantoms (``demo`` settings) when ``data`` is None."""
    if data is None:
        settings = {**DEMO_DEFAULTS, **(demo or {})}
        return make_demo_dataset(settings["n_images"], settings["image_size"], seed=settings["seed"])
    return PreparedDataset.load(data)


def load_images(dataset: PreparedDataset, rows: np.ndarray, image_size: int | None = None, chunk: int = 1024) -> torch.Tensor:
    """Rows of the dataset as a uint8 tensor (n, S, S), resized (anti-aliased) when ``image_size`` differs."""
    rows = np.asarray(rows, dtype=np.int64)
    size = image_size or dataset.image_size
    out = torch.empty((len(rows), size, size), dtype=torch.uint8)
    for start in range(0, len(rows), chunk):
        part = torch.from_numpy(np.asarray(dataset.images[rows[start : start + chunk]]))
        if size != dataset.image_size:
            resized = F.interpolate(part[:, None].float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            part = resized[:, 0].round().clamp(0, 255).to(torch.uint8)
        out[start : start + len(part)] = part
    return out


def split_rows(dataset: PreparedDataset, labels: np.ndarray, split: str) -> np.ndarray:
    rows = dataset.split_indices(split)
    return rows[labels[rows] >= 0]


def labelled_and_unlabelled_rows(dataset: PreparedDataset, labels: np.ndarray, class_names: Sequence[str],
                                 labels_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The training split's rows drawn as labelled (``labels_per_class`` per class, seeded) and the rest, the
    unlabelled rows (with the images that have no label in the task), both sorted int64."""
    train_rows = dataset.split_indices("train")
    labelled = labelled_subset(labels, train_rows[labels[train_rows] >= 0], labels_per_class, class_names, seed=seed)
    return labelled, np.setdiff1d(train_rows, labelled)


def build_training_data(dataset: PreparedDataset, task: str, labels_per_class: int, *, seed: int,
                        image_size: int | None = None, description: dict | None = None) -> TrainingData:  # fmt: skip
    """Labelled subset (``labels_per_class`` per class, seeded, training split only), the rest of the training
    split unlabelled, and the validation split."""
    labels, class_names = dataset.task_labels(task)
    val_rows = split_rows(dataset, labels, "val")
    if len(val_rows) == 0:
        raise InputError(f"{dataset.name}: no validation images for task {task!r} (prepare it with a validation fraction)")
    labelled, unlabelled = labelled_and_unlabelled_rows(dataset, labels, class_names, labels_per_class, seed)
    return TrainingData(
        labelled_images=load_images(dataset, labelled, image_size),
        labelled_labels=torch.from_numpy(labels[labelled]),
        unlabelled_images=load_images(dataset, unlabelled, image_size),
        val_images=load_images(dataset, val_rows, image_size),
        val_labels=torch.from_numpy(labels[val_rows]),
        class_names=class_names,
        description=description or {},
    )


# training


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.task}-{config.method}-{config.labels_per_class}labels-seed{config.seed}"


def with_model_options(config: TrainConfig, options: dict, class_names: Sequence[str]) -> TrainConfig:
    """``config`` with ADGM keyword arguments (as :func:`model_options_for` gives them, or network sizes) moved
    into its settings, so that its ``config.json`` says what was built."""
    options = dict(options)
    changes = {key: options.pop(key) for key in ("dropout", "likelihood", "decoder_norm") if key in options}
    if "learn_class_prior" in options or "class_prior" in options:
        learned, shares = options.pop("learn_class_prior", False), options.pop("class_prior", None)
        if learned and shares is not None:
            raise InputError("model options: a learned p(y) starts uniform when a run builds the model; pass model=ADGM(...) to start it elsewhere")
        if shares is not None and not isinstance(shares, dict):
            shares = dict(zip(class_names, shares))
        changes["class_prior"] = "learned" if learned else "uniform" if shares is None else ",".join(f"{k}={v!r}" for k, v in shares.items())
    if "prior_weighted_labels" in options:
        changes["label_weights"] = "prior" if options.pop("prior_weighted_labels") else "equal"
    if options:
        changes["architecture"] = {**config.architecture, **options}
    return replace(config, **changes) if changes else config


def build_model(config: TrainConfig, class_names: Sequence[str], image_size: int) -> ADGM:
    """The ADGM that ``config``'s model settings describe, for the task's classes and image size."""
    options = {**config.architecture, "dropout": config.dropout, "decoder_norm": config.decoder_norm,
               **model_options_for(config.method, config.class_prior, config.label_weights, config.likelihood)}  # fmt: skip
    if isinstance(options.get("class_prior"), dict):
        options["class_prior"] = resolve_known_prior(options["class_prior"], class_names)
    try:
        return ADGM(num_classes=len(class_names), image_size=image_size, **options)
    except (ValueError, TypeError) as error:
        raise InputError(f"model: {error}") from None


def prepare_trainer(config: TrainConfig, *, data: str | Path | None = None, demo: dict | None = None,
                    image_size: int | None = None, run_dir: str | Path | None = None,
                    model_options: dict | None = None, model: ADGM | None = None,
                    world: distributed.World | None = None) -> Trainer:  # fmt: skip
    """Build data, model and trainer for a run (seeded: the same config gives the same run).

    ``data``, ``demo`` and ``image_size`` replace the config's settings of those names; ``model_options``:
    further :class:`ADGM` keyword arguments, taken into the config's settings (:func:`with_model_options`);
    ``model``: a model built already (its architecture is not checked against the config's); ``world``: this
    process's place in a distributed run (default: the process group joined, if any)."""
    given = {"data": data, "demo": demo, "image_size": image_size}
    config = replace(config, **{k: v for k, v in given.items() if v is not None})
    if config.data is not None:  # absolute in the checkpoints, so that a resume from another folder reads the same data
        config = replace(config, data=str(Path(config.data).resolve()))
    resolve_device(config.device)  # a bad device fails before any data is read
    pyro.set_rng_seed(config.seed)
    dataset = open_dataset(config.data, config.demo)
    size = config.image_size or dataset.image_size
    description = {"data": config.data,
                   "demo": config.demo if config.data is None else None, "image_size": size,
                   "preprocessing": dataset.meta.get("preprocessing")}  # fmt: skip
    training_data = build_training_data(dataset, config.task, config.labels_per_class, seed=config.seed,
                                        image_size=size, description=description)  # fmt: skip
    if model is None:
        config = with_model_options(config, model_options or {}, training_data.class_names)
        model = build_model(config, training_data.class_names, size)
    elif model.num_classes != len(training_data.class_names) or model.image_size != size:
        raise InputError(f"model: built for {model.num_classes} classes at {model.image_size}px, data has "
                         f"{len(training_data.class_names)} classes at {size}px")  # fmt: skip
    return Trainer(model, training_data, config, run_dir or default_run_dir(config), world=world)


@contextlib.contextmanager
def process_group(device: str = "auto"):
    """Yield this process's :class:`~pyro_adgm.distributed.World` for a run on ``device``: under torchrun, the
    process group its environment describes, joined here and left on exit (also after an error); alone, a world
    of one process. A process group the caller joined already is used as it is, and left to the caller."""
    if distributed.current_world().distributed:
        yield distributed.current_world()
        return
    world = distributed.init(resolve_device(device))
    try:
        yield world
    finally:
        distributed.shutdown()


def train(config: TrainConfig, **kwargs) -> tuple[dict, Path]:
    """Train a new run; returns the validation report of the best checkpoint and the run directory.

    Keyword arguments as :func:`prepare_trainer`. A run directory that already holds a run is refused. Under
    torchrun every process returns rank 0's report.
    """
    run_dir = Path(kwargs.pop("run_dir", None) or default_run_dir(config))
    if (run_dir / "last.pt").exists():  # checked before any data is read (and before rank 0 can write one)
        raise InputError(f"{run_dir}: already holds a run; resume it or choose another run directory")
    with process_group(config.device) as world:
        trainer = prepare_trainer(config, run_dir=run_dir, world=world, **kwargs)
        return trainer.fit(), trainer.run_dir


def resume(run_dir: str | Path, *, epochs: int | None = None, max_seconds: float | None = None,
           model: ADGM | None = None) -> tuple[dict, Path]:  # fmt: skip
    """Continue the run in ``run_dir`` from its last checkpoint (optionally to a new number of epochs, or with
    a new limit on the training time in seconds, counted over the whole run; ``math.inf`` lifts it).

    ``model``: the same architecture built again, needed when the run's model has custom networks. A run resumes
    with any number of processes (under torchrun), whatever number it was started with."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run directory not found")
    if not (run_dir / "config.json").is_file():
        raise InputError(f"{run_dir}: no config.json; expected a run directory written by `pyro-adgm train`")
    if not (run_dir / "last.pt").is_file():
        raise InputError(f"{run_dir}: no last.pt yet; the run finished no epoch, start it again instead")
    state = check_run_contents(load_checkpoint(run_dir / "last.pt", resume=True), run_dir / "last.pt")
    # last.pt holds the settings of the latest resume (a new number of epochs); config.json is rewritten from them
    config = TrainConfig.from_dict(state["train_config"], source=str(run_dir / "last.pt"))
    recorded = state.get("data", {}).get("data")
    if config.data is not None and not Path(config.data).is_absolute() and recorded:
        config = replace(config, data=recorded)  # a checkpoint holding the path as given: the absolute one it recorded
    config = replace(config, **{k: v for k, v in (("epochs", epochs), ("max_seconds", max_seconds)) if v is not None})
    saved = dict(state["model_config"])
    if saved.pop("custom_networks", None) and model is None:
        raise InputError(f"{run_dir}: the model has custom networks; resume it from Python with resume(run_dir, model=...)")
    with process_group(config.device) as world:
        model = model if model is not None else model_of_checkpoint(saved, run_dir / "last.pt")
        trainer = prepare_trainer(config, run_dir=run_dir, model=model, world=world)
        return trainer.fit(resume=True), run_dir


# using a checkpoint


def load_model(checkpoint: str | Path, device: str = "auto", *, model: ADGM | None = None) -> tuple[ADGM, dict]:
    """The model of a checkpoint, in eval mode on ``device``, and the checkpoint's other contents.

    ``model``: the architecture built again, into which the weights are loaded (needed for custom networks)."""
    state = check_run_contents(load_checkpoint(checkpoint), checkpoint)
    config = dict(state["model_config"])
    if config.pop("custom_networks", None) and model is None:
        raise InputError(f"{checkpoint}: the model has custom networks; pass model=... built the same way")
    model = model_of_checkpoint(config, checkpoint) if model is None else model
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as error:
        raise InputError(f"{checkpoint}: weights do not fit the model ({str(error).splitlines()[0]})") from None
    return model.to(resolve_device(device)).eval(), state


def model_of_checkpoint(model_config: dict, checkpoint: str | Path) -> ADGM:
    """The model a checkpoint's ``model_config`` describes; a config that builds none is an :class:`InputError`."""
    try:
        return ADGM.from_config(model_config)
    except (TypeError, ValueError) as error:
        raise InputError(f"{checkpoint}: model_config does not describe a model ({error})") from None


def class_index(state: dict, class_name: str, checkpoint: str | Path) -> int:
    names = list(state["class_names"])
    if class_name not in names:
        raise InputError(f"class {class_name!r}: {checkpoint} has classes {', '.join(names)}")
    return names.index(class_name)


def checkpoint_split(state: dict, split: str, image_size: int, *,
                     data: str | Path | None = None) -> tuple[torch.Tensor, np.ndarray, list[str], str]:  # fmt: skip
    """A split of the data a checkpoint (``state``, from :func:`load_model`) was trained on, or of ``data``:
    uint8 images (n, S, S) at ``image_size``, labels (n,) of the checkpoint's task, its class names and the
    dataset's name. A dataset whose task has other classes, or an empty split, is an :class:`InputError`.

    ``split`` names a split of the dataset (train, val, test) or is ``unlabelled``: the training images that the
    run drew no label for (its own draw, from its labels per class and seed), with their hidden labels, the
    set on which semi-supervised methods report their transductive accuracy."""
    description = state.get("data", {})
    recorded = description.get("data")
    if data is None and recorded is not None and not Path(recorded).exists():
        raise InputError(f"{recorded}: the dataset this checkpoint was trained on is not there (moved or deleted); pass --data FOLDER")
    dataset = open_dataset(data, None) if data is not None else open_dataset(recorded, description.get("demo"))
    task = state["train_config"]["task"]
    labels, class_names = dataset.task_labels(task)
    if list(class_names) != list(state["class_names"]):
        raise InputError(f"{dataset.name}: task {task!r} has classes {list(class_names)}, the checkpoint {list(state['class_names'])}")
    rows = checkpoint_split_rows(state, split, dataset, labels, class_names)
    if len(rows) == 0:
        raise InputError(f"{dataset.name}: the {split!r} split holds no images")
    return load_images(dataset, rows, image_size), labels[rows], list(class_names), dataset.name


def checkpoint_split_rows(state: dict, split: str, dataset: PreparedDataset, labels: np.ndarray,
                          class_names: Sequence[str]) -> np.ndarray:  # fmt: skip
    """The dataset rows of :func:`checkpoint_split`'s images, in its order: ``split``'s rows with a label in the
    checkpoint's task (``labels``), or for ``unlabelled`` those of the run's unlabelled training images."""
    if split != UNLABELLED:
        return split_rows(dataset, labels, split)
    config = state["train_config"]
    _, rows = labelled_and_unlabelled_rows(dataset, labels, class_names, config["labels_per_class"], config["seed"])
    return rows[labels[rows] >= 0]


def evaluate(checkpoint: str | Path, *, data: str | Path | None = None, split: str = "val",
             out_dir: str | Path | None = None, device: str = "auto", model: ADGM | None = None) -> dict:  # fmt: skip
    """Accuracy, per-class accuracy, confusion matrix and ROC AUC of a checkpoint on a split.

    ``data`` defaults to the data the checkpoint was trained on. Writes ``evaluation-SPLIT.json`` and
    ``confusion-SPLIT.png`` to ``out_dir`` (default: the checkpoint's folder).
    """
    model, state = load_model(checkpoint, device, model=model)
    images, labels, class_names, name = checkpoint_split(state, split, model.image_size, data=data)
    probs = predict_proba(model, images, device=next(model.parameters()).device)
    report = classification_report(probs, labels, class_names)
    report.update(split=split, checkpoint=str(checkpoint), data=name)
    out_dir = Path(out_dir) if out_dir is not None else Path(checkpoint).parent
    atomic_write_json(out_dir / f"evaluation-{split}.json", report)
    plot_confusion(report["confusion_matrix"], class_names, out_dir / f"confusion-{split}.png",
                   title=f"{split}: accuracy {report['accuracy']:.3f}")  # fmt: skip
    return report


def sample(checkpoint: str | Path, class_name: str, *, n: int = 16, out: str | Path = "samples.png",
           seed: int | None = None, device: str = "auto", model: ADGM | None = None) -> Path:  # fmt: skip
    """Write a PNG grid of ``n`` generated X-rays of ``class_name``."""
    if n < 1:
        raise InputError(f"number of images: expected at least 1, got {n}")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed: expected an integer from 0 to {MAX_SEED}, got {seed}")
    model, state = load_model(checkpoint, device, model=model)
    label = class_index(state, class_name, checkpoint)
    if seed is not None:
        pyro.set_rng_seed(seed)
    images = model.generate(label, n)
    save_image_grid(images, Path(out))
    return Path(out)


def predict(checkpoint: str | Path, files: Sequence[str | Path], *, device: str = "auto", model: ADGM | None = None) -> list[dict]:
    """Class probabilities for each DICOM/PNG/JPEG file: rows {file, predicted, p_<class>...}.

    Files are squared (crop or pad) and windowed (VOI LUT or not) as the training data was prepared."""
    from data_tools.imaging import load_grayscale, to_uint8_square

    model, state = load_model(checkpoint, device, model=model)
    preprocessing = state.get("data", {}).get("preprocessing")
    preprocessing = preprocessing if isinstance(preprocessing, dict) else {}  # the demo's is a sentence
    mode, voi_lut = preprocessing.get("square", "crop"), bool(preprocessing.get("voi_lut", False))
    images = np.stack([to_uint8_square(load_grayscale(path, voi_lut=voi_lut), model.image_size, mode=mode) for path in files])
    probs = predict_proba(model, torch.from_numpy(images), device=next(model.parameters()).device)
    names = state["class_names"]
    return [
        {"file": str(path), "predicted": names[int(p.argmax())], **{f"p_{name}": float(p[k]) for k, name in enumerate(names)}}
        for path, p in zip(files, probs)
    ]


def predictions_csv(rows: list[dict]) -> str:
    """The rows of :func:`predict` as CSV text with a header line (columns file, predicted, p_<class>...)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()
