"""Training: SVI with TraceEnum_ELBO over paired labelled/unlabelled batches, KL warm-up, checkpoints, resume.

One optimiser step draws an unlabelled batch and a labelled batch and maximises the semi-supervised objective
J^alpha of :class:`~pyro_adgm.model.ADGM` (alpha = beta * (N_l + N_u) / N_l); ``labelled_weighting="balanced"``
weighs the labelled batch like the unlabelled one instead. An epoch is one pass over the
unlabelled images (ceil(N_u / batch) steps); the labelled images are cycled through in a fresh order each
pass. The ``supervised`` method trains only q(a|x) and q(y|a,x) on the labelled images with the same networks,
augmentation, optimiser, number of steps and model selection, as a baseline (its cross-entropy weighted by
K * p(y) per image like the ADGM's classification term when the model's labels are prior-weighted: all 1 under
its uniform p(y), K times the shares of a known p(y) otherwise).

A run directory holds ``config.json``, ``metrics.csv`` (one row per epoch), ``last.pt`` and ``best.pt``
(best validation accuracy; the weights evaluated are a moving average of the trained ones unless
``weight_average_decay`` is None), all written atomically, and at the end ``report.json``, ``confusion.png`` and
``curves.png``. :meth:`Trainer.fit` continues from ``last.pt`` when asked to resume.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer import SVI, TraceEnum_ELBO
from tqdm.auto import tqdm

from data_tools.errors import InputError
from pyro_adgm.augment import AugmentSettings, make_augment
from pyro_adgm.averaging import WeightAverage
from pyro_adgm.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
from pyro_adgm.evaluation import classification_report, predict_proba, to_float_images
from pyro_adgm.likelihoods import bits_per_dim
from pyro_adgm.model import ADGM, PRIOR_PARAMETER
from pyro_adgm.plots import plot_confusion, plot_curves
from pyro_adgm.tensorboard_log import EpochScalars

logger = logging.getLogger(__name__)

METRIC_COLUMNS = ("epoch", "train_loss", "labelled_bound", "unlabelled_bound", "labelled_bits_per_dim", "unlabelled_bits_per_dim",
                  "classification_loss", "kl_weight",
                  "unlabelled_weight", "train_accuracy", "val_accuracy", "seconds", "class_prior")  # fmt: skip
METHODS = ("adgm", "supervised")
LABELLED_WEIGHTINGS = ("bound", "balanced")
LR_SCHEDULES = ("constant", "cosine", "warmup-cosine")
PAPER_EPOCHS = {"2class": 100, "3class": 200}

# labelled-only programs (the supervised baseline, or no unlabelled data) have nothing to enumerate
warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites configured for enumeration")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch, the step and the last good checkpoint."""


@dataclass
class TrainConfig:
    """Settings of one training run; defaults are the paper's (Adam 1e-4, betas (0.9, 0.999), decay 1e-5) but
    for the warm-up, which is a tenth of the paper's 2class run instead of all of it, and the weight decay, which
    is decoupled (AdamW) so that it means the same for both methods."""

    task: str = "2class"
    labels_per_class: int = 50
    epochs: int | None = None  # None: 100 for 2class, 200 otherwise
    batch_size: int = 32
    # the KL weight rises 0 -> 1 over this many epochs; after it the objective is J^alpha at full weight
    warmup_epochs: float = 10.0
    # the unlabelled term's weight rises 0 -> 1 over this many epochs (None: as warmup_epochs; 0: weight 1 from
    # the start). Without it the enumerated q(y|a,x) collapses to one class before the classification term can
    # shape it (BENCHMARKS.md, "Classifier collapse"); after the ramp the objective is J^alpha (with
    # labelled_weighting "bound"; "balanced" weighs the labelled part more, below).
    unlabelled_warmup_epochs: float | None = None
    # the weight the unlabelled term's ramp ends at (1: J^alpha). Below 1 the unlabelled images count as that
    # fraction of themselves for the whole run after the ramp (BENCHMARKS.md, "A smaller unlabelled weight").
    unlabelled_weight: float = 1.0
    beta: float = 1.0
    # "balanced": a step's labelled batch is scaled by N_u / B_l, so that it weighs as much as the unlabelled
    # batch (N_u / B_u) and each labelled image counts N_u / N_l times, its alpha * log q(y|a,x) term too, as in
    # the ADGM and M2 authors' code (a mean over each batch per step). "bound": each labelled image counts once
    # in J^alpha (the labelled batch is scaled by N_l / B_l). Balanced learned MNIST faster and held
    # PneumoniaMNIST's validation accuracy steadier, but at 10 labels per class its test accuracy was lower
    # (BENCHMARKS.md, "MNIST", "Stability" and "Labels per class"), so bound stays the default.
    labelled_weighting: str = "bound"
    lr: float = 1e-4
    # "constant": the paper's. "cosine": lr * (1 + cos(pi * t / T)) / 2 over the run's T epochs, set every step;
    # on PneumoniaMNIST it kept validation accuracy nearer its best after the warm-up, but a 4-epoch run lost 14
    # points with it (BENCHMARKS.md, "Stability"). "warmup-cosine": the full rate during the warm-up (the longer
    # of the KL and unlabelled ones), then the cosine over the epochs left (it did not reduce the drift). Resuming
    # with more epochs stretches the rest of the schedule.
    lr_schedule: str = "constant"
    # Adam's rate for the logits of a learned class prior (``ADGM(learn_class_prior=True)``), scaled by the same
    # schedule: at lr its 2 to 3 numbers would move a few hundredths of a logit per epoch
    class_prior_lr: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-5
    # True: AdamW, every step multiplies each weight by (1 - lr * weight_decay), whatever the loss's scale, for
    # both methods alike. False: Adam's decay added to the gradient, which the ADGM's data-set-sized loss drowns
    # while the baseline's mean cross-entropy feels it (kept to measure against)
    decoupled_weight_decay: bool = True
    device: str = "auto"
    seed: int = 0
    augment: str = "device"
    # the chance that a training image is flipped/transformed (else it is used as stored); see augment.py
    augment_probability: float = 0.5
    # mirror images left-right as part of the transform (chest X-rays); False for images whose meaning a
    # mirror changes (digits)
    augment_flip: bool = True
    binarize: bool = False  # train on x ~ Bernoulli(pixel) (for a Bernoulli likelihood); bounds use x > 0.5
    method: str = "adgm"
    # evaluate and checkpoint an exponential moving average of the weights (per-step decay; None: the raw
    # weights). It keeps validation accuracy from swinging between epochs (BENCHMARKS.md, "Stability").
    weight_average_decay: float | None = 0.999
    eval_batch_size: int = 256
    # stop before an epoch that would take the run's training time (summed over resumed runs) past this
    max_seconds: float | None = None
    # also write each epoch's metrics as TensorBoard scalars under run_dir/tensorboard (needs the tensorboard extra)
    tensorboard: bool = False
    diagnostics_size: int = 256  # images per epoch on which the labelled/unlabelled bounds are reported

    def resolved_unlabelled_warmup(self) -> float:
        return self.warmup_epochs if self.unlabelled_warmup_epochs is None else self.unlabelled_warmup_epochs

    def resolved_epochs(self) -> int:
        return self.epochs if self.epochs is not None else PAPER_EPOCHS.get(self.task, 200)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        values = dict(values)
        # settings saved before these fields existed ran with what is now the non-default choice
        values.setdefault("labelled_weighting", "bound")
        values.setdefault("weight_average_decay", None)
        values.setdefault("lr_schedule", "constant")
        values.setdefault("augment_probability", 1.0)
        values.setdefault("decoupled_weight_decay", False)
        values["betas"] = tuple(values.get("betas", (0.9, 0.999)))
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


@dataclass
class TrainingData:
    """Images as uint8 tensors (N, S, S); labels int64 (N,). Only the labelled subset carries labels."""

    labelled_images: torch.Tensor
    labelled_labels: torch.Tensor
    unlabelled_images: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    class_names: tuple[str, ...]
    description: dict = field(default_factory=dict)  # where the data came from, for config.json

    def to(self, device: torch.device) -> TrainingData:
        moved = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in self.__dict__.items()}
        return TrainingData(**moved)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r}: CUDA is not available (use cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None


def kl_warmup_weight(epoch: int, step: int, steps_per_epoch: int, warmup_epochs: float) -> float:
    """Linear warm-up 0 -> 1 over ``warmup_epochs``, updated every step (weight after ``step`` + 1 steps).

    Used for the KL weight and for the weight of the unlabelled term."""
    if warmup_epochs <= 0:
        return 1.0
    return min(1.0, (epoch + (step + 1) / steps_per_epoch) / warmup_epochs)


def lr_factor(schedule: str, epoch: int, step: int, steps_per_epoch: int, epochs: int, warmup_epochs: float = 0.0) -> float:
    """The learning rate of step ``step`` of epoch ``epoch`` (both from 0) as a fraction of the base rate.

    "constant": 1. "cosine": (1 + cos(pi * t / T)) / 2 with t the epochs done before the step (fractional) and
    T = ``epochs``, so the first step gets the full rate and the rate falls towards 0 at the end of the run.
    "warmup-cosine": 1 until ``warmup_epochs``, then the cosine over the epochs left (a run that ends within its
    warm-up keeps the full rate throughout)."""
    if schedule == "constant":
        return 1.0
    start = warmup_epochs if schedule == "warmup-cosine" else 0.0
    done = epoch + step / steps_per_epoch
    if done <= start or epochs <= start:
        return 1.0
    progress = (done - start) / (epochs - start)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


class Trainer:
    """Fits an :class:`ADGM` to :class:`TrainingData`, writing the run directory as it goes."""

    def __init__(self, model: ADGM, data: TrainingData, config: TrainConfig, run_dir: str | Path, *, extra_config: dict | None = None):
        if config.method not in METHODS:
            raise InputError(f"method: expected one of {', '.join(METHODS)}, got {config.method!r}")
        if config.labelled_weighting not in LABELLED_WEIGHTINGS:
            raise InputError(f"labelled_weighting: expected one of {', '.join(LABELLED_WEIGHTINGS)}, "
                             f"got {config.labelled_weighting!r}")  # fmt: skip
        if config.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"lr_schedule: expected one of {', '.join(LR_SCHEDULES)}, got {config.lr_schedule!r}")
        if not (math.isfinite(config.unlabelled_weight) and config.unlabelled_weight > 0):
            raise InputError(f"unlabelled_weight: expected a positive number, got {config.unlabelled_weight}")
        self.config = config
        self.device = resolve_device(config.device)
        if self.device.type == "cpu":
            # weights and Adam moments of inputs that never fire (image borders) decay into denormal floats, which
            # x86 CPUs process many times slower: a long MNIST run slowed from 66 to 195 s per epoch, and steps
            # from its checkpoint ran 3.1 times faster with denormals flushed to zero (BENCHMARKS.md, "Denormals").
            # This is process-wide: torch.set_flush_denormal(False) undoes it.
            torch.set_flush_denormal(True)
        self.model = model.to(self.device)
        self.data = data.to(self.device)
        self.run_dir = Path(run_dir)
        self.extra_config = extra_config or {}
        self.augment = make_augment(config.augment, AugmentSettings(flip=config.augment_flip, probability=config.augment_probability))
        n_l, n_u = len(data.labelled_labels), len(data.unlabelled_images)
        if n_l == 0:
            raise InputError("labelled set: expected at least one labelled image")
        if len(data.val_labels) == 0:
            raise InputError("validation set: expected at least one image (it selects the best checkpoint)")
        if config.method == "supervised" and model.class_prior_logits is not None:
            raise InputError("class prior: a learned p(y) is trained by the unlabelled term, which the supervised "
                             "baseline does not have; use a fixed class prior (--class-prior uniform) with it")  # fmt: skip
        self.alpha = config.beta * (n_l + n_u) / n_l
        self.use_unlabelled = config.method == "adgm" and n_u > 0
        # the number of images a step's labelled batch stands for (the labelled plate's size)
        if config.weight_average_decay is not None and not 0.0 < config.weight_average_decay < 1.0:
            raise InputError(f"weight_average_decay: expected a number in (0, 1) or None, got {config.weight_average_decay}")
        self.labelled_scale_size = n_u if config.labelled_weighting == "balanced" and self.use_unlabelled else n_l
        # the supervised baseline takes as many steps as the ADGM: one pass over the unlabelled images
        self.steps_per_epoch = math.ceil((n_u if n_u > 0 else n_l) / config.batch_size)
        self.epoch = 0
        self.best_val_accuracy = -1.0
        self.best_epoch = 0
        pyro.clear_param_store()
        if config.method == "adgm":
            self.optimizer = (pyro.optim.AdamW if config.decoupled_weight_decay else pyro.optim.Adam)(self._optim_args)
            self.elbo = TraceEnum_ELBO(max_plate_nesting=1)
            self.svi = SVI(self.model.semi_supervised_model, self.model.semi_supervised_guide, self.optimizer, self.elbo)
        else:
            params = list(self.model.aux_encoder.parameters()) + list(self.model.classifier.parameters())
            optimizer = torch.optim.AdamW if config.decoupled_weight_decay else torch.optim.Adam
            self.optimizer = optimizer(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
        decay = config.weight_average_decay
        self.average = WeightAverage(self.model, decay) if decay is not None else None

    # state

    def state(self) -> dict:
        optimizer_state = self.optimizer.get_state() if self.config.method == "adgm" else self.optimizer.state_dict()
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        # model_state holds the weights that are evaluated (the average, when one is kept), so every reader of a
        # checkpoint gets those; the raw weights and the average travel beside them for an exact resume
        averaged = self.average is not None
        # (the average itself is model_state's floating-point entries, not stored twice)
        extra = {"train_model_state": self.model.state_dict(),
                 "average_state": {"decay": self.average.decay, "updates": self.average.updates}} if averaged else {}  # fmt: skip
        return {
            "epoch": self.epoch,
            "model_state": self.average.averaged_state_dict(self.model) if averaged else self.model.state_dict(),
            **extra,
            "optimizer_state": optimizer_state,
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "rng": rng,
            "model_config": self.model.config,
            "train_config": self.config.to_dict(),
            "class_names": list(self.data.class_names),
            "data": self.data.description,
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state.get("train_model_state", state["model_state"]))
        if self.average is not None:
            if "average_state" in state:
                shadow = {name: state["model_state"][name] for name in self.average.shadow}
                self.average.load_state_dict({"updates": state["average_state"]["updates"], "shadow": shadow})
            else:  # a checkpoint written without an average: start it from these weights
                self.average = WeightAverage(self.model, self.average.decay)
        if self.config.method == "adgm":
            self.optimizer.set_state(state["optimizer_state"])
        else:
            self.optimizer.load_state_dict(state["optimizer_state"])
        self.epoch = int(state["epoch"])
        self.best_val_accuracy = float(state["best_val_accuracy"])
        self.best_epoch = int(state["best_epoch"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def resume(self) -> None:
        """Continue from ``last.pt`` of the run directory; drop metric rows written after it."""
        self.load_state(load_checkpoint(self.run_dir / "last.pt"))  # on the CPU: RNG states must stay there
        rows = [r for r in self.read_metrics() if int(r["epoch"]) <= self.epoch]
        self.write_metrics(rows)
        logger.info("resuming %s after epoch %d", self.run_dir, self.epoch)

    # metrics file

    def read_metrics(self) -> list[dict]:
        path = self.run_dir / "metrics.csv"
        if not path.exists():
            return []
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))

    def write_metrics(self, rows: Sequence[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.run_dir / "metrics.csv", buffer.getvalue())

    # one epoch

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S) -> augmented float (B, 1, S, S), binarised at random when ``binarize``."""
        x = self.augment(to_float_images(images))
        return torch.bernoulli(x.clamp(0, 1)) if self.config.binarize else x

    def _batches(self, generator: torch.Generator):
        """Yield (x_labelled, y_labelled, x_unlabelled) for each step of one epoch; x float (B, 1, S, S)."""
        cfg, data = self.config, self.data
        n_l, n_u = len(data.labelled_labels), len(data.unlabelled_images)
        order_u = torch.randperm(n_u, generator=generator).to(self.device) if self.use_unlabelled else None
        batch_l = min(cfg.batch_size, n_l)
        needed = self.steps_per_epoch * batch_l
        order_l = torch.cat([torch.randperm(n_l, generator=generator) for _ in range(math.ceil(needed / n_l))]).to(self.device)
        # nearly equal unlabelled batches (sizes differ by at most one), so no step gets a lone image
        chunks_u = order_u.tensor_split(self.steps_per_epoch) if order_u is not None else None
        for step in range(self.steps_per_epoch):
            idx_l = order_l[step * batch_l : (step + 1) * batch_l]
            x_l = self._inputs(data.labelled_images[idx_l])
            x_u = None
            if chunks_u is not None:
                x_u = self._inputs(data.unlabelled_images[chunks_u[step]])
            yield x_l, data.labelled_labels[idx_l], x_u

    def _base_lr(self, param_name: str) -> float:
        return self.config.class_prior_lr if param_name.endswith(PRIOR_PARAMETER) else self.config.lr

    def _optim_args(self, param_name: str) -> dict:
        """Adam's or AdamW's settings for one parameter (Pyro calls this with names such as
        ``adgm.classifier.head.0.weight``)."""
        prior = param_name.endswith(PRIOR_PARAMETER)
        return {"lr": self._base_lr(param_name), "betas": tuple(self.config.betas),
                "weight_decay": 0.0 if prior else self.config.weight_decay}  # fmt: skip

    def _set_lr(self, factor: float) -> None:
        """Set every parameter's rate to ``factor`` times its base rate."""
        # Pyro's Adam keeps one torch optimiser per parameter, created at the parameter's first step with the base
        # rate (the schedule's first) or, after a resume, with the rate saved in its state
        if self.config.method == "adgm":
            store = pyro.get_param_store()
            pairs = [(self._base_lr(store.param_name(p)), opt) for p, opt in self.optimizer.optim_objs.items()]
        else:
            pairs = [(self.config.lr, self.optimizer)]
        for base, optimizer in pairs:
            for group in optimizer.param_groups:
                group["lr"] = base * factor

    def step_arguments(self, kl_weight: float, unlabelled_weight: float = 1.0) -> dict:
        """The keyword arguments of :meth:`ADGM.semi_supervised_model` for one step: the plate sizes (the images
        each batch stands for), the weights of the step and alpha = beta * (N_l + N_u) / N_l."""
        return {"labelled_size": self.labelled_scale_size, "unlabelled_size": len(self.data.unlabelled_images),
                "kl_weight": kl_weight, "alpha": self.alpha, "unlabelled_weight": unlabelled_weight}  # fmt: skip

    def _step(self, x_l, y_l, x_u, kl_weight: float, unlabelled_weight: float = 1.0) -> float:
        if self.config.method == "adgm":
            return self.svi.step(x_l, y_l, x_u, **self.step_arguments(kl_weight, unlabelled_weight))
        self.model.train()
        a_loc, a_scale = self.model.aux_encoder(x_l)
        a = a_loc + a_scale * torch.randn_like(a_loc)
        loss = torch.nn.functional.cross_entropy(self.model.classifier(x_l, a=a), y_l, reduction="none")
        if self.model.prior_weighted_labels:  # K * pi_y per image, as in the ADGM's classification term
            loss = loss * (self.model.num_classes * self.model.prior_probs().detach()[y_l])
        loss = loss.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def train_epoch(self) -> dict:
        cfg = self.config
        self.model.train()
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.epoch)
        total, steps = 0.0, 0
        kl_weight = unlabelled_weight = 0.0
        n_total = self.labelled_scale_size + (len(self.data.unlabelled_images) if self.use_unlabelled else 0)
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{cfg.resolved_epochs()}", leave=False, disable=None)
        for step, (x_l, y_l, x_u) in enumerate(self._batches(generator)):
            kl_weight = kl_warmup_weight(self.epoch, step, self.steps_per_epoch, cfg.warmup_epochs)
            unlabelled_weight = cfg.unlabelled_weight * kl_warmup_weight(self.epoch, step, self.steps_per_epoch,
                                                                         cfg.resolved_unlabelled_warmup())
            loss = self._step(x_l, y_l, x_u, kl_weight, unlabelled_weight)
            if cfg.lr_schedule != "constant":
                # the rate of the next step, set now so that last.pt (whose optimiser state holds it) resumes exactly
                factor = lr_factor(cfg.lr_schedule, self.epoch, step + 1, self.steps_per_epoch, cfg.resolved_epochs(),
                                   max(cfg.warmup_epochs, cfg.resolved_unlabelled_warmup()))  # fmt: skip
                self._set_lr(factor)
            if not math.isfinite(loss):
                bar.close()
                last = self.run_dir / "last.pt"
                where = f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"
                raise TrainingDiverged(f"non-finite loss ({loss}) at epoch {self.epoch + 1}, step {step + 1}; {where}")
            if self.average is not None:
                self.average.update(self.model)
            per_image = loss / n_total if cfg.method == "adgm" else loss
            total += per_image
            steps += 1
            bar.set_postfix(loss=f"{total / steps:.4g}")
            bar.update()
        bar.close()
        return {"train_loss": total / max(steps, 1), "kl_weight": kl_weight,
                "unlabelled_weight": unlabelled_weight if self.use_unlabelled else float("nan")}  # fmt: skip

    # diagnostics

    def bound_per_image(self, images: torch.Tensor, labels: torch.Tensor | None) -> float:
        """The ELBO (KL weight 1, no alpha term) in nats per image on up to ``diagnostics_size`` images, eval mode."""
        n = min(len(images), self.config.diagnostics_size)
        if n == 0:
            return float("nan")
        total = 0.0
        with self.model.evaluating():
            for start in range(0, n, self.config.eval_batch_size):
                x = to_float_images(images[start : min(n, start + self.config.eval_batch_size)])
                x = (x > 0.5).to(x.dtype) if self.config.binarize else x
                y = None if labels is None else labels[start : start + len(x)]
                total += self.elbo.loss(self.model.model, self.model.guide, x, y)
        return -total / n

    def evaluated_weights(self):
        """A context in which the model holds the weights that are evaluated (the average, when kept)."""
        return self.average.applied(self.model) if self.average is not None else contextlib.nullcontext(self.model)

    def evaluate_epoch(self) -> dict:
        with self.evaluated_weights():
            return self._evaluate_epoch()

    def _evaluate_epoch(self) -> dict:
        data, cfg = self.data, self.config
        probs_l = predict_proba(self.model, data.labelled_images, batch_size=cfg.eval_batch_size, device=self.device)
        labels_l = data.labelled_labels.cpu().numpy()
        picked = probs_l[np.arange(len(labels_l)), labels_l]
        row = {
            "train_accuracy": float((probs_l.argmax(1) == labels_l).mean()),
            "classification_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
            "val_accuracy": self.validation_report()["accuracy"],
            "labelled_bound": float("nan"),
            "unlabelled_bound": float("nan"),
            "labelled_bits_per_dim": float("nan"),
            "unlabelled_bits_per_dim": float("nan"),
            "class_prior": " ".join(f"{p:.4f}" for p in self.model.prior_probs().tolist()),
        }
        if cfg.method == "adgm":
            row["labelled_bound"] = self.bound_per_image(data.labelled_images, data.labelled_labels)
            row["unlabelled_bound"] = self.bound_per_image(data.unlabelled_images, None)
            dims = self.model.in_channels * self.model.image_size**2
            for part in ("labelled", "unlabelled"):
                row[f"{part}_bits_per_dim"] = bits_per_dim(row[f"{part}_bound"], dims, self.model.likelihood.discrete)
        return row

    def validation_report(self) -> dict:
        probs = predict_proba(self.model, self.data.val_images, batch_size=self.config.eval_batch_size, device=self.device)
        return classification_report(probs, self.data.val_labels.cpu().numpy(), self.data.class_names)

    # the loop

    def fit(self, *, resume: bool = False) -> dict:
        """Train to ``epochs`` (continuing from ``last.pt`` when ``resume``); return the validation report of
        the best checkpoint, which is also loaded into the model."""
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        else:
            atomic_write_json(self.run_dir / "config.json", {"train": cfg.to_dict(), "model": self.model.config,
                                                             "class_names": list(self.data.class_names),
                                                             "data": self.data.description, **self.extra_config})  # fmt: skip
            self.write_metrics([])
        rows = self.read_metrics()
        scalars = EpochScalars(self.run_dir) if cfg.tensorboard else None
        logger.info(
            "training %s on %d labelled + %d unlabelled images (%d steps/epoch, alpha %.4g, device %s)",
            cfg.method, len(self.data.labelled_labels), len(self.data.unlabelled_images) if self.use_unlabelled else 0,
            self.steps_per_epoch, self.alpha, self.device,
        )  # fmt: skip
        while self.epoch < cfg.resolved_epochs():
            if self.out_of_time(rows):
                logger.info("stopping after epoch %d: the next epoch would pass max_seconds=%g", self.epoch, cfg.max_seconds)
                break
            start = time.perf_counter()
            row = self.train_epoch()
            row.update(self.evaluate_epoch())
            self.epoch += 1
            row.update(epoch=self.epoch, seconds=round(time.perf_counter() - start, 3))
            if scalars is not None:
                scalars.write(row)
            rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
            self.write_metrics(rows)
            improved = row["val_accuracy"] is not None and row["val_accuracy"] > self.best_val_accuracy
            if improved:
                self.best_val_accuracy, self.best_epoch = row["val_accuracy"], self.epoch
            state = self.state()
            if improved:
                save_checkpoint(self.run_dir / "best.pt", state)
            save_checkpoint(self.run_dir / "last.pt", state)
            logger.info(
                "epoch %d: loss %.4g, bound %.5g nats/image (%.4f bits/dim), train acc %.3f, val acc %.3f, KL weight %.3f, p(y) %s, %.1fs",
                self.epoch, row["train_loss"], row["unlabelled_bound"], row["unlabelled_bits_per_dim"], row["train_accuracy"],
                row["val_accuracy"] or float("nan"), row["kl_weight"], row["class_prior"], row["seconds"],
            )  # fmt: skip
        if scalars is not None:
            scalars.close()
        return self.finish(rows)

    def out_of_time(self, rows: Sequence[dict]) -> bool:
        """Whether another epoch (assumed as long as the last one) would pass ``max_seconds`` of training."""
        if self.config.max_seconds is None or not rows:
            return False
        spent = sum(float(row["seconds"]) for row in rows)
        return spent + float(rows[-1]["seconds"]) > self.config.max_seconds

    def finish(self, rows: Sequence[dict]) -> dict:
        """Load the best checkpoint's evaluated weights into the model and write ``report.json``,
        ``confusion.png`` and ``curves.png``. The trainer is done afterwards: to train on, resume from
        ``last.pt`` with a new trainer (the model no longer holds the raw weights of the last step)."""
        best = self.run_dir / "best.pt"
        if best.exists():
            self.model.load_state_dict(load_checkpoint(best, map_location=self.device)["model_state"])
            report = self.validation_report()
        else:
            with self.evaluated_weights():
                report = self.validation_report()
        report.update(split="val", checkpoint=str(best), best_epoch=self.best_epoch, epochs=self.epoch, method=self.config.method,
                      complete=self.epoch >= self.config.resolved_epochs())  # fmt: skip
        atomic_write_json(self.run_dir / "report.json", report)
        plot_confusion(report["confusion_matrix"], self.data.class_names, self.run_dir / "confusion.png",
                       title=f"validation, epoch {self.best_epoch}: accuracy {report['accuracy']:.3f}")  # fmt: skip
        plot_curves(rows, self.run_dir / "curves.png")
        return report
