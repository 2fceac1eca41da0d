"""What a training method optimises: objectives that the trainer's loop calls once per optimiser step.

The loop (:class:`pyro_adgm.training.Trainer`) draws the batches, keeps the weight average, evaluates,
checkpoints and writes ``metrics.csv``; an :class:`Objective` owns its optimiser and takes one step on a
:class:`Batch`. Two are built in:

- ``adgm``: :class:`ADGMObjective`, the semi-supervised J^alpha of :class:`~pyro_adgm.model.ADGM` (alpha =
  beta * (N_l + N_u) / N_l), by ``pyro.infer.SVI`` with ``TraceEnum_ELBO`` and Pyro's Adam or AdamW inside
  :class:`~pyro_adgm.distributed.DataParallelOptim` (the gradients averaged across the ranks of a torchrun run,
  one multi-tensor step per settings), with the KL weight and the unlabelled term's weight ramped up over the
  warm-up; each step runs in :func:`~pyro_adgm.precision.step_context` (``precision``; the distribution checks
  on for the first step of the process only);
- ``supervised``: :class:`SupervisedObjective`, the cross-entropy of q(y|a,x) on the labelled images alone
  (a drawn from q(a|x)), weighted by K * p(y) per image when the model's labels are prior-weighted, as the
  ADGM's classification term is; a torch Adam or AdamW over q(a|x) and q(y|a,x), the gradients averaged
  across ranks before it steps.

In a distributed run each rank's batch is its shard of the step's global batch and the plates keep the data
set's sizes (N_l, N_u), so the loss a step returns is the rank's own full-data-scale estimate.

A script adds a method without touching the loop: subclass :class:`Objective` (or :class:`ADGMObjective`),
``register_objective("name", TheClass)`` and train with ``TrainConfig(method="name")``
(``examples/custom_objective.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pyro
import torch
from pyro.infer import SVI, TraceEnum_ELBO

from data_tools.errors import InputError
from pyro_adgm import distributed
from pyro_adgm.config import BATCH_MEANS, TrainConfig
from pyro_adgm.distributed import DataParallelOptim
from pyro_adgm.evaluation import to_float_images
from pyro_adgm.likelihoods import bits_per_dim
from pyro_adgm.model import ADGM, PRIOR_PARAMETER
from pyro_adgm.precision import autocast, step_context


@dataclass
class Batch:
    """One step's images. x: augmented float (B, C, S, S) in [0, 1]; y: int64 (B,). ``unlabelled_images``: the
    uint8 (B, S, S) images ``x_unlabelled`` was made from, for objectives that draw views of their own.
    ``labelled_index``, ``unlabelled_index``: int64 (B,), the images' positions in the run's
    :class:`~pyro_adgm.training.TrainingData` (``labelled_images``, ``unlabelled_images``), for objectives that
    look up something of their own per image (a covariate, a stored prediction). The unlabelled fields are None
    for objectives that do not use unlabelled images, or where there are none."""

    x_labelled: torch.Tensor
    y_labelled: torch.Tensor
    x_unlabelled: torch.Tensor | None = None
    unlabelled_images: torch.Tensor | None = None
    labelled_index: torch.Tensor | None = None
    unlabelled_index: torch.Tensor | None = None


@dataclass(frozen=True)
class DataSizes:
    """N_l and N_u: the labelled and unlabelled training images of the run."""

    labelled: int
    unlabelled: int


def linear_ramp(progress: float, epochs: float) -> float:
    """A weight rising linearly 0 -> 1 over ``epochs`` epochs, at ``progress`` epochs of training done (fractional:
    after step s of epoch e, e + (s + 1) / steps); 1 throughout when ``epochs`` <= 0."""
    if epochs <= 0:
        return 1.0
    return min(1.0, progress / epochs)


class Objective:
    """The interface the trainer's loop calls. ``uses_unlabelled``: whether batches carry unlabelled images.
    ``columns``: ``metrics.csv`` columns beyond the trainer's, filled from :meth:`train_metrics` or :meth:`epoch_metrics`."""

    uses_unlabelled = True
    columns: tuple[str, ...] = ()

    def __init__(self, model: ADGM, config: TrainConfig, sizes: DataSizes):
        self.model, self.config, self.sizes = model, config, sizes
        self.device = next(model.parameters()).device  # the trainer moves the model to its device first
        try:
            autocast(config.precision, self.device)  # bf16 where the device has none: refused before the first step
        except ValueError as error:
            raise InputError(str(error)) from None

    def step(self, batch: Batch, progress: float) -> float:
        """One optimiser step on ``batch`` at ``progress`` epochs (see :func:`linear_ramp`); the loss per image."""
        raise NotImplementedError

    def train_metrics(self, progress: float) -> dict:
        """What the objective reports of an epoch's training, asked after its last step (at ``progress``): the
        ADGM's weights at that step, say, or a mean the objective kept over the epoch's steps."""
        return {}

    def epoch_metrics(self, data) -> dict:
        """Metrics of the evaluated weights after an epoch (eval mode is the objective's to set), from
        :class:`~pyro_adgm.training.TrainingData`."""
        return {}

    def describe(self) -> str:
        return ""

    def state_dict(self) -> dict:
        """The optimiser's state (and any of the objective's own), for the checkpoint."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


def resolved_unlabelled_weight(setting: float | str, sizes: DataSizes) -> float:
    """The unlabelled term's final weight: ``setting`` itself, or N_l / N_u for ``batch-means`` (1 without
    unlabelled images, where the term is absent)."""
    if setting == BATCH_MEANS:
        return sizes.labelled / sizes.unlabelled if sizes.unlabelled else 1.0
    return float(setting)


class ADGMObjective(Objective):
    """J^alpha over a labelled and an unlabelled batch, each plate sized to the images it stands for, by SVI."""

    def __init__(self, model: ADGM, config: TrainConfig, sizes: DataSizes):
        super().__init__(model, config, sizes)
        self.alpha = config.beta * (sizes.labelled + sizes.unlabelled) / sizes.labelled
        self.images = sizes.labelled + sizes.unlabelled  # the images a step's loss stands for
        self.unlabelled_weight = resolved_unlabelled_weight(config.unlabelled_weight, sizes)
        pixel_values = model.in_channels * model.image_size**2
        self.likelihood_weight = 1.0 / pixel_values if config.likelihood_reduction == "mean" else 1.0
        pyro.clear_param_store()
        optimizer = (pyro.optim.AdamW if config.decoupled_weight_decay else pyro.optim.Adam)(self.optimizer_settings)
        self.optimizer = DataParallelOptim(optimizer)  # the ranks of the run the trainer's process joined, if any
        self.elbo = TraceEnum_ELBO(max_plate_nesting=1)
        self.svi = SVI(model.semi_supervised_model, model.semi_supervised_guide, self.optimizer, self.elbo)
        self.validated = False  # whether a step has run with the distribution checks on

    def optimizer_settings(self, param_name: str) -> dict:
        """Adam's or AdamW's settings for one parameter (Pyro asks with names such as ``adgm.classifier.head.0.weight``):
        a learned p(y) has its own rate and no weight decay."""
        prior = param_name.endswith(PRIOR_PARAMETER)
        return {"lr": self.config.class_prior_lr if prior else self.config.lr, "betas": tuple(self.config.betas),
                "weight_decay": 0.0 if prior else self.config.weight_decay}  # fmt: skip

    def weights(self, progress: float) -> tuple[float, float]:
        """The KL weight and the unlabelled term's weight (its ramp times the resolved ``unlabelled_weight``) at ``progress``."""
        cfg = self.config
        return linear_ramp(progress, cfg.warmup_epochs), self.unlabelled_weight * linear_ramp(progress, cfg.resolved_unlabelled_warmup())

    def train_metrics(self, progress: float) -> dict:
        kl_weight, unlabelled_weight = self.weights(progress)
        return {"kl_weight": kl_weight, "unlabelled_weight": unlabelled_weight if self.sizes.unlabelled else math.nan}

    def program_arguments(self, kl_weight: float, unlabelled_weight: float) -> dict:
        """The keyword arguments of :meth:`ADGM.semi_supervised_model` for one step: the plate sizes (the images
        each batch stands for), the step's weights, alpha and the weight of log p(x|z,y) (``likelihood_reduction``)."""
        return {"labelled_size": self.sizes.labelled, "unlabelled_size": self.sizes.unlabelled, "kl_weight": kl_weight,
                "alpha": self.alpha, "unlabelled_weight": unlabelled_weight, "likelihood_weight": self.likelihood_weight}  # fmt: skip

    def step(self, batch: Batch, progress: float) -> float:
        kwargs = self.program_arguments(*self.weights(progress))
        with step_context(self.config.precision, self.device, validate=not self.validated):
            loss = self.svi.step(batch.x_labelled, batch.y_labelled, batch.x_unlabelled, **kwargs) / self.images
        self.validated = True
        return loss

    def bound_per_image(self, images: torch.Tensor, labels: torch.Tensor | None) -> float:
        """The ELBO (KL weight 1, no alpha term) in nats per image on up to ``diagnostics_size`` images, eval mode."""
        cfg = self.config
        n = min(len(images), cfg.diagnostics_size)
        if n == 0:
            return float("nan")
        total = 0.0
        with self.model.evaluating():
            for start in range(0, n, cfg.eval_batch_size):
                x = to_float_images(images[start : min(n, start + cfg.eval_batch_size)])
                x = (x > 0.5).to(x.dtype) if cfg.binarize else x
                y = None if labels is None else labels[start : start + len(x)]
                total += self.elbo.loss(self.model.model, self.model.guide, x, y)
        return -total / n

    def epoch_metrics(self, data) -> dict:
        """The labelled and unlabelled bounds, in nats per image and bits per dimension."""
        row = {"labelled_bound": self.bound_per_image(data.labelled_images, data.labelled_labels),
               "unlabelled_bound": self.bound_per_image(data.unlabelled_images, None)}  # fmt: skip
        dims = self.model.in_channels * self.model.image_size**2
        for part in ("labelled", "unlabelled"):
            row[f"{part}_bits_per_dim"] = bits_per_dim(row[f"{part}_bound"], dims, self.model.likelihood.discrete)
        return row

    def describe(self) -> str:
        return f"alpha {self.alpha:.4g}"

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.get_state()}  # Pyro's format, whatever the number of processes

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.set_state(state["optimizer"])  # before the first step


class SupervisedObjective(Objective):
    """The cross-entropy of q(y|a,x) on the labelled batch, a ~ q(a|x); the same networks and optimiser settings."""

    uses_unlabelled = False

    def __init__(self, model: ADGM, config: TrainConfig, sizes: DataSizes):
        super().__init__(model, config, sizes)
        if model.class_prior_logits is not None:
            raise InputError("class prior: a learned p(y) is trained by the unlabelled term, which the supervised "
                             "baseline does not have; use a fixed class prior (class_prior uniform) with it")  # fmt: skip
        self.params = list(model.aux_encoder.parameters()) + list(model.classifier.parameters())
        optimizer = torch.optim.AdamW if config.decoupled_weight_decay else torch.optim.Adam
        self.optimizer = optimizer(self.params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean cross-entropy (times K * p(y) per image when the model's labels are prior-weighted)."""
        model = self.model
        a_loc, a_scale = model.aux_encoder(x)
        a = a_loc + a_scale * torch.randn_like(a_loc)
        loss = torch.nn.functional.cross_entropy(model.classifier(x, a=a), y, reduction="none")
        if model.prior_weighted_labels:  # K * pi_y per image, as in the ADGM's classification term
            loss = loss * (model.num_classes * model.prior_probs().detach()[y])
        return loss.mean()

    def step(self, batch: Batch, progress: float) -> float:
        self.model.train()
        with autocast(self.config.precision, self.device):
            loss = self.loss(batch.x_labelled, batch.y_labelled)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.all_reduce_gradients(self.params)  # the mean over the ranks (nothing in a run of one process)
        self.optimizer.step()
        return float(loss.detach())

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


#: method name -> the objective's class (or any callable (model, config, sizes) -> Objective)
OBJECTIVES: dict[str, Callable[[ADGM, TrainConfig, DataSizes], Objective]] = {"adgm": ADGMObjective, "supervised": SupervisedObjective}
BUILT_IN = tuple(OBJECTIVES)


def register_objective(name: str, factory: Callable[[ADGM, TrainConfig, DataSizes], Objective]) -> None:
    """Make ``TrainConfig(method=name)`` train with the objective ``factory(model, config, sizes)`` builds (a name
    registered again takes the new factory)."""
    if name in BUILT_IN:
        raise ValueError(f"objective {name!r}: the name of a built-in objective; choose another")
    OBJECTIVES[name] = factory


def make_objective(model: ADGM, config: TrainConfig, sizes: DataSizes) -> Objective:
    return OBJECTIVES[config.method](model, config, sizes)
