"""The settings of a training run: :class:`TrainConfig`, and the files that hold them.

Every setting is documented once, in :class:`TrainConfig`'s docstring; the command line builds its ``train``
options (name, type, default, choices, help) from the fields that are not marked ``metadata={"cli": False}``,
and the others are set in a ``--config`` file or from Python. A config file is a run's own ``config.json`` (its
``train`` section) or a hand-written TOML or JSON file of settings (flat, or under a ``train`` table).
"""

from __future__ import annotations

import functools
import json
import math
import os
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from data_tools.dataset import MAX_SEED
from data_tools.demo import DEMO_IMAGE_SIZE, DEMO_N_IMAGES, check_demo_settings
from data_tools.errors import InputError
from pyro_adgm.augment import BACKENDS
from pyro_adgm.model import CLASS_PRIORS, LABEL_WEIGHTS
from pyro_adgm.precision import PRECISIONS

try:
    import tomllib
except ImportError:  # Python 3.10: JSON config files only
    tomllib = None

#: the format of the config.json a run writes (a run's config.json without it predates the version)
CONFIG_VERSION = 2
#: the last commit with the settings retired when the options were folded (RETIRED)
RETIRED_AT = "ec68456"
#: settings that no longer exist; the commit named by RETIRED_AT still has them
RETIRED = ("labelled_weighting", "lr_schedule", "variant")
PAPER_EPOCHS = {"2class": 100, "3class": 200}
DEMO_DEFAULTS = {"n_images": DEMO_N_IMAGES, "image_size": DEMO_IMAGE_SIZE, "seed": 0}
#: the ADGM keyword arguments that ``architecture`` may set
ARCHITECTURE_KEYS = ("architecture", "a_dim", "z_dim", "channels", "hidden", "batch_norm", "in_channels")
#: the likelihoods p(x|z,y) a run from grey-level images can be given
TRAINABLE_LIKELIHOODS = ("gaussian", "discretized-logistic")
DEFAULT_LIKELIHOOD = "gaussian"
#: how log p(x|z,y) enters the training objective: summed over the pixels (the bound) or averaged over them
LIKELIHOOD_REDUCTIONS = ("sum", "mean")
#: unlabelled_weight N_l / N_u: each step's labelled and unlabelled batch means weigh alike (the paper's code)
BATCH_MEANS = "batch-means"



def registered_methods() -> tuple[str, ...]:
    """The names of the objectives a run can train: the built-in adgm and supervised, and any registered with
    :func:`pyro_adgm.objectives.register_objective`."""
    from pyro_adgm.objectives import OBJECTIVES

    return tuple(OBJECTIVES)




def unlabelled_weight_from_text(text: str) -> float | str:
    """A command line's unlabelled weight: the word batch-means, or a number (ValueError otherwise)."""
    if text == BATCH_MEANS:
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected {BATCH_MEANS} or a number, got {text!r}") from None


def config_only(default, **metadata):
    """A field that the command line does not offer (set it in a ``--config`` file or from Python)."""
    if callable(default):
        return field(default_factory=default, metadata={"cli": False, **metadata})
    return field(default=default, metadata={"cli": False, **metadata})


@dataclass
class TrainConfig:
    """Settings of one training run. Defaults are the paper's (Adam 1e-4, betas (0.9, 0.999), weight decay 1e-5,
    dropout 0.2, a fixed uniform p(y), a Gaussian p(x|z,y)) but for the KL warm-up and the weight decay. The model
    settings (dropout to architecture) are what :func:`pyro_adgm.runs.train` builds the model from; a
    :class:`~pyro_adgm.training.Trainer` given a model of its own records that model under config.json's ``model``.

    Attributes:
        data: Prepared dataset folder (`pyro-adgm prepare ...`); none: the built-in demo phantoms.
        task: 2class (normal / abnormal) or 3class (normal / opacity / not-normal), or another task of the dataset.
        labels_per_class: Labelled training images per class, drawn (seeded) from the training split.
        image_size: Resize images to this side, 16 to 256 (default: the dataset's).
        demo: The demo phantoms when there is no data: n_images, image_size and seed (missing keys: 3000, 48, 0).
        method: adgm, or the supervised baseline: q(a|x) and q(y|a,x) trained on the labelled images alone, with
            the same networks, augmentation, optimiser, number of steps and model selection.
        epochs: Passes over the unlabelled images (default: the paper's 100 for 2class, 200 otherwise).
        batch_size: Images per step, labelled and unlabelled each.
        beta: Weight of the labels against modelling the unlabelled images: alpha = beta * (N_l + N_u) / N_l.
        warmup_epochs: The KL weight rises 0 -> 1 over this many epochs, step by step (the paper's: 100, its whole 2class run).
        unlabelled_warmup_epochs: The unlabelled term's weight rises 0 -> unlabelled_weight over this many epochs
            (none: as warmup_epochs; 0: full weight from the start). Without the ramp q(y|a,x) collapses to one
            class before the classification term can shape it (BENCHMARKS.md, "Classifier collapse").
        unlabelled_weight: The weight the unlabelled term's ramp ends at: batch-means (N_l / N_u, so that each step's
            labelled and unlabelled batch means weigh alike, as the paper's published code computes its loss) or a
            number (1: J^alpha as the paper's equation (10) writes it, each image counted once). At 1 the unlabelled
            bounds drowned the labels on the real RSNA images (2class, 25 labels per class: val 0.503 against 0.722)
            at a gain of 4.0 val points on PneumoniaMNIST at 10 labels (BENCHMARKS.md, "How much the labels weigh").
        lr: Adam's learning rate, constant.
        weight_decay: Per-step weight decay: each weight times (1 - lr * weight_decay) (AdamW).
        decoupled_weight_decay: True: AdamW, the same shrinkage for both methods whatever the loss's scale. False:
            Adam's decay added to the gradient, which the ADGM's data-set-sized loss drowns.
        betas: Adam's moment decays.
        class_prior_lr: Adam's rate for a learned p(y) (class_prior learned), whose 2 to 3 logits would hardly
            move at lr.
        weight_average_decay: Evaluate and checkpoint a moving average of the weights with this per-step decay
            (none: the raw weights); it keeps validation accuracy from swinging between epochs (BENCHMARKS.md,
            "Stability").
        dropout: Dropout probability after each layer of the networks.
        likelihood: p(x|z,y): gaussian (the paper's density on [0, 1]) or discretized-logistic (a probability for
            each of the 256 grey levels; 6.2 points less accurate on PneumoniaMNIST's val at 10 labels per class,
            BENCHMARKS.md, "Ablation of the root fixes").
        likelihood_reduction: How log p(x|z,y) enters the training objective: sum (over the pixels, the bound) or
            mean (over the pixel values, divided by C * S * S, as the paper's published code computes it). The
            bounds reported in metrics.csv are the sums either way (BENCHMARKS.md, "The pixel term averaged").
        decoder_norm: Normalisation inside the convolutional p(x|z,y), which sees the enumerated y: group (per
            sample) or batch (statistics per enumerated class, so that an image's p(x|z,y) depends on its batch).
        class_prior: p(y): uniform (fixed, the paper's), learned (from the unlabelled images, empirical Bayes), or
            fixed at known class shares, e.g. normal=0.26,abnormal=0.74. A learned p(y) with label_weights prior
            can starve a class (BENCHMARKS.md, "Ablation of the root fixes").
        label_weights: equal (the paper's) or prior: each labelled image's classification term times K * p(y),
            fitting q(y|a,x) to the class shares of p(y) rather than the labelled set's equal shares (every weight
            is 1 under a uniform p(y)); the supervised baseline's cross-entropy is weighted alike.
        architecture: Further ADGM keyword arguments for the networks: architecture (conv or mlp), a_dim, z_dim,
            channels, hidden, batch_norm, in_channels (none given: the chest X-ray networks).
        augment: Random flips and affine transforms drawn per image: device (on the training device), imgaug
            (CPU, the imgaug extra) or none.
        augment_probability: The chance that a training image is transformed (else used as stored, as at
            evaluation; BENCHMARKS.md, "Every training image was transformed").
        augment_flip: Mirror images left-right as part of the transform (false for digits or text).
        binarize: Train on x ~ Bernoulli(pixel) at every step (for a Bernoulli likelihood); bounds use x > 0.5.
        device: auto (CUDA when present), cpu or cuda[:N]. Under torchrun each process takes the GPU of its local rank.
        precision: fp32, or bf16: the networks' convolutions and matrix products in bfloat16 under autocast (a GPU
            with bfloat16, or the CPU); the densities, the ELBO and the gradients stay float32.
        seed: Seeds the label draw, the initialisation and the noise.
        tensorboard: Also write each epoch's metrics as TensorBoard scalars under RUN/tensorboard (pip install
            "pyro-adgm[tensorboard]").
        max_seconds: Stop before an epoch that would take the training time (summed over resumed runs) past this.
        eval_batch_size: Images per batch when evaluating.
        diagnostics_size: Images per epoch on which the labelled and unlabelled bounds are reported.
    """

    data: str | None = None
    task: str = "2class"
    labels_per_class: int = field(default=50, metadata={"flag": "--labels", "min": 1})
    image_size: int | None = field(default=None, metadata={"min": 16, "max": 256})
    demo: dict = config_only(lambda: dict(DEMO_DEFAULTS))
    method: str = field(default="adgm", metadata={"choices": registered_methods})
    epochs: int | None = field(default=None, metadata={"min": 1})
    batch_size: int = field(default=32, metadata={"min": 1})
    beta: float = field(default=1.0, metadata={"min": 0.0})
    warmup_epochs: float = field(default=10.0, metadata={"min": 0.0})
    unlabelled_warmup_epochs: float | None = config_only(None, min=0.0)
    unlabelled_weight: float | str = config_only(BATCH_MEANS, above=0.0, named=(BATCH_MEANS,))
    lr: float = field(default=1e-4, metadata={"above": 0.0})
    weight_decay: float = config_only(1e-5, min=0.0)
    decoupled_weight_decay: bool = config_only(True)
    betas: tuple[float, float] = config_only((0.9, 0.999))
    class_prior_lr: float = config_only(1e-2, above=0.0)
    weight_average_decay: float | None = config_only(0.999, above=0.0, below=1.0)
    dropout: float = config_only(0.2, min=0.0, below=1.0)
    likelihood: str = config_only(DEFAULT_LIKELIHOOD, choices=TRAINABLE_LIKELIHOODS)
    likelihood_reduction: str = config_only("sum", choices=LIKELIHOOD_REDUCTIONS)
    decoder_norm: str = config_only("group", choices=("group", "batch"))
    class_prior: str = config_only("uniform")
    label_weights: str = config_only("equal", choices=LABEL_WEIGHTS)
    architecture: dict = config_only(dict)
    augment: str = field(default="device", metadata={"choices": BACKENDS})
    augment_probability: float = config_only(0.5, min=0.0, max=1.0)
    augment_flip: bool = config_only(True)
    binarize: bool = config_only(False)
    device: str = "auto"
    precision: str = field(default="fp32", metadata={"choices": PRECISIONS})
    seed: int = field(default=0, metadata={"min": 0, "max": MAX_SEED})
    tensorboard: bool = False
    max_seconds: float | None = config_only(None, above=0.0, infinite=True)
    eval_batch_size: int = config_only(256, min=1)
    diagnostics_size: int = config_only(256, min=1)

    def __post_init__(self):
        hints = field_types()
        for f in fields(self):
            setattr(self, f.name, checked(f.name, getattr(self, f.name), hints[f.name], f.metadata))
        if self.data is not None and not self.data.strip():  # Path("") is the current folder
            raise InputError("data: expected a prepared dataset folder, got an empty path (leave it out for the demo phantoms)")
        self.demo = {**DEMO_DEFAULTS, **self.demo}
        self.architecture = {k: list(v) if isinstance(v, tuple) else v for k, v in self.architecture.items()}
        unknown = sorted(set(self.demo) - set(DEMO_DEFAULTS))
        if unknown:
            raise InputError(f"demo: unknown key {unknown[0]!r} (expected some of {', '.join(DEMO_DEFAULTS)})")
        check_demo_settings(self.demo["n_images"], self.demo["image_size"], self.demo["seed"])
        if not all(0 <= b < 1 for b in self.betas):
            raise InputError(f"betas: expected two numbers in [0, 1), got {list(self.betas)}")
        unknown = sorted(set(self.architecture) - set(ARCHITECTURE_KEYS))
        if unknown:
            raise InputError(f"architecture: unknown key {unknown[0]!r} (expected some of {', '.join(ARCHITECTURE_KEYS)})")
        model_options_for(self.method, self.class_prior, self.label_weights, self.likelihood)  # one-line errors

    def resolved_unlabelled_warmup(self) -> float:
        return self.warmup_epochs if self.unlabelled_warmup_epochs is None else self.unlabelled_warmup_epochs

    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else PAPER_EPOCHS.get(self.task, 200)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, values: dict, source: str | None = None) -> TrainConfig:
        """The config of ``values`` ({field: value}); an unknown or retired key, or a bad value, is an
        :class:`InputError` naming the setting (and ``source``, the file it came from)."""
        where = f"{source}: " if source else ""
        for key in values:
            if key in RETIRED:
                raise InputError(f"{where}setting {key!r} was retired (the last commit with it: {RETIRED_AT})")
            if key not in cls.__dataclass_fields__:
                raise InputError(f"{where}unknown setting {key!r}")
        try:
            return cls(**values)
        except InputError as error:
            raise InputError(f"{where}{error}") from None


@functools.cache
def field_types() -> dict:
    return typing.get_type_hints(TrainConfig)


def setting_help() -> dict[str, str]:
    """{field: its text in :class:`TrainConfig`'s docstring, on one line}."""
    text = TrainConfig.__doc__.split("Attributes:\n", 1)[1]
    helps: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if line.startswith(" " * 8) and not line.startswith(" " * 12) and ": " in stripped:
            name, stripped = stripped.split(": ", 1)
            helps[name] = stripped
        elif name is not None:
            helps[name] += " " + stripped
    return helps


def checked(name: str, value, hint, metadata) -> object:
    """``value`` as the field ``name`` of type ``hint`` holds it (ints as floats where a float is expected, lists as
    tuples); an :class:`InputError` naming the setting when it has another type or lies outside its range."""
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    if isinstance(value, str) and value in metadata.get("named", ()):
        return value
    base = next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) is not tuple else hint
    if typing.get_origin(base) is tuple:
        if not isinstance(value, list | tuple) or len(value) != 2 or not all(_is_number(v) for v in value):
            raise InputError(f"{name}: expected two numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if base is str and isinstance(value, os.PathLike):
        value = os.fspath(value)
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}[base]
    if metadata.get("named"):
        expected += " or " + " or ".join(metadata["named"])
    if (base is bool and not isinstance(value, bool)) or (base is int and (isinstance(value, bool) or not isinstance(value, int))):
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    if (base is float and not _is_number(value)) or (base in (str, dict) and not isinstance(value, base)):
        raise InputError(f"{name}: expected {expected}, got {value!r}")
    value = float(value) if base is float else value
    if base is float and not math.isfinite(value) and not (value == math.inf and metadata.get("infinite")):
        raise InputError(f"{name}: expected a finite number, got {value!r}")
    choices = metadata.get("choices")
    choices = choices() if callable(choices) else choices
    if choices is not None and value not in choices:
        raise InputError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    limits = {"min": (lambda v, b: v >= b, "at least"), "max": (lambda v, b: v <= b, "at most"),
              "above": (lambda v, b: v > b, "above"), "below": (lambda v, b: v < b, "below")}  # fmt: skip
    for key, (ok, words) in limits.items():
        if key in metadata and not ok(value, metadata[key]):
            raise InputError(f"{name}: expected a value {words} {metadata[key]:g}, got {value!r}")
    return value


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# p(y) and the likelihood as ADGM keyword arguments


def parse_known_prior(text: str) -> dict[str, float] | None:
    """A known p(y) written as ``NAME=P,NAME=P`` (``normal=0.26,abnormal=0.74``) -> {name: p}; None when ``text``
    is not of that form (``"uniform"``, ``"learned"``). Checked against the task's classes by
    :func:`resolve_known_prior`."""
    if "=" not in text:
        return None
    shares: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        not_a_pair = InputError(f"class prior: expected NAME=PROBABILITY pairs such as normal=0.26,abnormal=0.74, got {part.strip()!r}")
        if not name:
            raise not_a_pair
        if name in shares:
            raise InputError(f"class prior: {name!r} given twice")
        try:
            shares[name] = float(value)
        except ValueError:
            raise not_a_pair from None
        if not 0.0 < shares[name] < 1.0:
            raise InputError(f"class prior: the share of {name!r} must lie strictly between 0 and 1, got {value.strip()}")
    return shares


def resolve_known_prior(shares: dict[str, float], class_names) -> list[float]:
    """{name: p} -> p(y) in the order of ``class_names``: every class named once, the shares summing to 1."""
    unknown, missing = sorted(set(shares) - set(class_names)), [name for name in class_names if name not in shares]
    if unknown or missing:
        raise InputError(f"class prior: expected a share for each of {', '.join(class_names)}"
                         + (f"; unknown: {', '.join(unknown)}" if unknown else "") + (f"; missing: {', '.join(missing)}" if missing else ""))  # fmt: skip
    total = sum(shares.values())
    if abs(total - 1.0) > 1e-3:
        raise InputError(f"class prior: the shares must sum to 1, they sum to {total:g}")
    return [shares[name] / total for name in class_names]


def model_options_for(method: str, class_prior: str | None = None, label_weights: str = "equal",
                      likelihood: str = DEFAULT_LIKELIHOOD) -> dict:  # fmt: skip
    """The :class:`~pyro_adgm.model.ADGM` keyword arguments of the settings ``class_prior``, ``label_weights`` and
    ``likelihood`` (see :class:`TrainConfig`; None: uniform). Known shares come back as ``"class_prior": {name: p}``,
    which the trainer's builder orders by the task's classes. The supervised baseline has no p(x|z,y): it takes
    the default likelihood alone."""
    class_prior = "uniform" if class_prior is None else class_prior
    if likelihood not in TRAINABLE_LIKELIHOODS:
        raise InputError(f"likelihood: expected one of {', '.join(TRAINABLE_LIKELIHOODS)}, got {likelihood!r}")
    if method == "supervised" and likelihood != DEFAULT_LIKELIHOOD:
        raise InputError(f"likelihood {likelihood!r}: the supervised baseline trains q(a|x) and q(y|a,x) only, it has no p(x|z,y)")
    if method == "supervised" and class_prior == "learned":
        raise InputError("class prior learned: a learned p(y) is trained by the unlabelled term, which the supervised baseline does not have")
    known = parse_known_prior(class_prior)
    if known is None and class_prior not in CLASS_PRIORS:
        raise InputError(f"class prior: expected one of {', '.join(CLASS_PRIORS)} or NAME=P,NAME=P shares, got {class_prior!r}")
    if label_weights not in LABEL_WEIGHTS:
        raise InputError(f"label weights: expected one of {', '.join(LABEL_WEIGHTS)}, got {label_weights!r}")
    options = {"learn_class_prior": class_prior == "learned", "prior_weighted_labels": label_weights == "prior", "likelihood": likelihood}
    return {**options, "class_prior": known} if known is not None else options


# config files


def read_config_file(path: str | Path) -> dict:
    """The settings {field: value} in ``path``: a run's ``config.json`` (its ``train`` section) or a hand-written
    TOML (``.toml``) or JSON file, flat or under a ``train`` table. Every key is checked by
    :meth:`TrainConfig.from_dict` when the config is made; a run's ``config.json`` written before its format had
    a version is an :class:`InputError` naming that."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    if path.suffix == ".toml" and tomllib is None:
        raise InputError(f"{path}: reading TOML needs Python 3.11 or later; write the settings as JSON")
    try:
        values = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise InputError(f"{path}: not a {kind} file ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a table of settings")
    if "model" in values and values.get("version") != CONFIG_VERSION:
        raise InputError(f"{path}: a run's config.json of version {values.get('version', 1)} (this version reads {CONFIG_VERSION}): "
                         f"its model settings are not train settings; re-run it at commit {RETIRED_AT} or write its settings in a file")  # fmt: skip
    if isinstance(values.get("train"), dict):
        records = set(values) - {"train", *RUN_RECORDS}
        if records:
            raise InputError(f"{path}: unknown section {sorted(records)[0]!r} (expected train)")
        values = values["train"]
    return values


#: the sections of a run's config.json beside ``train``: what the run was (not settings)
RUN_RECORDS = ("version", "model", "class_names", "data")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """The config of the file ``path`` (None: the defaults) with ``overrides`` ({field: value}) over it."""
    values = read_config_file(path) if path is not None else {}
    return TrainConfig.from_dict({**values, **(overrides or {})}, source=None if path is None else str(path))


def default_of(name: str):
    """The default value of the field ``name``."""
    f = TrainConfig.__dataclass_fields__[name]
    return f.default_factory() if f.default is MISSING else f.default
