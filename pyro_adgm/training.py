"""Training: one loop for every method, which calls the run's objective (:mod:`pyro_adgm.objectives`) each step.

A step draws a labelled batch and, for an objective that uses them, an unlabelled batch, and hands them to
:meth:`Objective.step <pyro_adgm.objectives.Objective.step>`, which takes one optimiser step. An epoch is one pass
over the unlabelled images (ceil(N_u / batch) steps, for every method); the labelled images are cycled through in
a fresh order each pass. After each epoch the evaluated weights (a moving average of the trained ones unless
``weight_average_decay`` is None) are scored on the labelled and validation images.

A run directory holds ``config.json``, ``metrics.csv`` (:mod:`pyro_adgm.metrics_file`), ``last.pt`` and ``best.pt``
(best validation accuracy; :mod:`pyro_adgm.checkpoint`), all written atomically, and at the end ``report.json``,
``confusion.png`` and ``curves.png`` (:mod:`pyro_adgm.plots`). :meth:`Trainer.fit` continues from ``last.pt`` when
asked to resume. Under torchrun (:mod:`pyro_adgm.distributed`) each of the N ranks takes its shard of every step's
N x B images (one seeded order on all), the objective's optimiser averages the gradients, an epoch is
ceil(N_u / (N x B)) steps and each rank's noise is seeded per epoch (a run resumes exactly at the same N); after
an epoch the batch-norm statistics are averaged and rank 0 alone evaluates and writes the run directory (its
weight average keeps rank 0's batch-norm statistics); its checkpoints resume at any N.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from data_tools.errors import InputError
from pyro_adgm import distributed
from pyro_adgm.augment import AugmentSettings, make_augment
from pyro_adgm.averaging import WeightAverage
from pyro_adgm.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from pyro_adgm.config import CONFIG_VERSION, TrainConfig
from pyro_adgm.device import resolve_device, training_environment
from pyro_adgm.distributed import PeerFailure, World
from pyro_adgm.evaluation import classification_report, predict_proba, to_float_images
from pyro_adgm.metrics_file import METRIC_COLUMNS, epoch_summary, formatted, read_metrics, training_seconds, write_metrics
from pyro_adgm.model import ADGM
from pyro_adgm.objectives import Batch, DataSizes, make_objective
from pyro_adgm.plots import plot_run
from pyro_adgm.tensorboard_log import EpochScalars

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch, the step and the last good checkpoint."""


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


class Trainer:
    """Fits a model to :class:`TrainingData` with the objective ``config.method`` names, writing the run directory.
    ``world``: this process's place in a torchrun run (default: the process group joined, else one process)."""

    def __init__(self, model: ADGM, data: TrainingData, config: TrainConfig, run_dir: str | Path, world: World | None = None):
        self.config, self.world = config, world if world is not None else distributed.current_world()
        self.device = distributed.device_for(resolve_device(config.device), self.world)
        self.model = model.to(self.device)
        self.data = data.to(self.device)
        self.run_dir = Path(run_dir)
        self.augment = make_augment(config.augment, AugmentSettings(flip=config.augment_flip, probability=config.augment_probability))
        n_l, n_u = len(data.labelled_labels), len(data.unlabelled_images)
        if n_l < self.world.world_size:
            raise InputError(f"labelled set: expected at least one labelled image per process, got {n_l} for {self.world.world_size}")
        if len(data.val_labels) == 0:
            raise InputError("validation set: expected at least one image (it selects the best checkpoint)")
        self.objective = make_objective(self.model, config, DataSizes(n_l, n_u))
        self.columns = (*METRIC_COLUMNS, *self.objective.columns)
        self.use_unlabelled = self.objective.uses_unlabelled and n_u > 0
        # every method takes as many steps as the ADGM: one pass over the unlabelled images, N x B per step
        self.steps_per_epoch = math.ceil((n_u if n_u > 0 else n_l) / (config.batch_size * self.world.world_size))
        self.epoch, self.best_val_accuracy, self.best_epoch = 0, -1.0, 0
        decay = config.weight_average_decay
        self.average = WeightAverage(self.model, decay) if decay is not None else None

    # state

    def state(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        # model_state holds the weights that are evaluated (the average, when one is kept), so every reader of a
        # checkpoint gets those; the raw weights and the average's step count travel beside them for an exact resume
        averaged = self.average is not None
        extra = {"train_model_state": self.model.state_dict(),
                 "average_state": {"decay": self.average.decay, "updates": self.average.updates}} if averaged else {}  # fmt: skip
        return {"epoch": self.epoch, "model_state": self.average.averaged_state_dict(self.model) if averaged else self.model.state_dict(),
                **extra, "objective_state": self.objective.state_dict(), "best_val_accuracy": self.best_val_accuracy,
                "best_epoch": self.best_epoch, "rng": rng, "model_config": self.model.config, "train_config": self.config.to_dict(),
                "class_names": list(self.data.class_names), "data": self.data.description}  # fmt: skip

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state.get("train_model_state", state["model_state"]))
        if self.average is not None:
            if "average_state" in state:
                shadow = {name: state["model_state"][name] for name in self.average.shadow}
                self.average.load_state_dict({"updates": state["average_state"]["updates"], "shadow": shadow})
            else:  # a checkpoint written without an average: start it from these weights
                self.average = WeightAverage(self.model, self.average.decay)
        self.objective.load_state_dict(state["objective_state"])
        self.epoch, self.best_epoch = int(state["epoch"]), int(state["best_epoch"])
        self.best_val_accuracy = float(state["best_val_accuracy"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def resume(self) -> None:
        """Continue from ``last.pt`` of the run directory; drop metric rows written after it."""
        self.load_state(load_checkpoint(self.run_dir / "last.pt", resume=True))  # on the CPU: RNG states must stay there
        if self.world.is_main:
            write_metrics(self.run_dir, [r for r in read_metrics(self.run_dir) if int(r["epoch"]) <= self.epoch], self.columns)
        logger.info("resuming %s after epoch %d", self.run_dir, self.epoch)
        if self.epoch >= self.config.resolved_epochs():
            logger.info("the run has its %d epochs already: nothing to train (a larger --epochs goes on)", self.config.resolved_epochs())

    # one epoch

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S) -> augmented float (B, 1, S, S), binarised at random when ``binarize``."""
        x = self.augment(to_float_images(images))
        return torch.bernoulli(x.clamp(0, 1)) if self.config.binarize else x

    def _batches(self, generator: torch.Generator):
        """Yield each step's :class:`Batch` of one epoch: this rank's shard of the step's global batch (all of it in
        a run of one process). ``generator`` must be seeded alike on every rank."""
        data, world = self.data, self.world
        n_l, n_u = len(data.labelled_labels), len(data.unlabelled_images)
        order_u = torch.randperm(n_u, generator=generator).to(self.device) if self.use_unlabelled else None
        batch_l = min(self.config.batch_size * world.world_size, n_l)
        needed = self.steps_per_epoch * batch_l
        order_l = torch.cat([torch.randperm(n_l, generator=generator) for _ in range(math.ceil(needed / n_l))]).to(self.device)
        # nearly equal unlabelled batches (sizes differ by at most one), so no step gets a lone image
        chunks_u = order_u.tensor_split(self.steps_per_epoch) if order_u is not None else None
        for step in range(self.steps_per_epoch):
            idx_l = distributed.shard(order_l[step * batch_l : (step + 1) * batch_l], world)
            batch = Batch(self._inputs(data.labelled_images[idx_l]), data.labelled_labels[idx_l], labelled_index=idx_l)
            if chunks_u is not None:
                batch.unlabelled_index = distributed.shard(chunks_u[step], world)
                batch.unlabelled_images = data.unlabelled_images[batch.unlabelled_index]
                batch.x_unlabelled = self._inputs(batch.unlabelled_images)
            yield batch

    def train_epoch(self) -> dict:
        """One pass: the mean loss per image over its steps (and ranks) and the objective's weights at its last step."""
        self.model.train()
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.epoch)  # the same on every rank
        if self.world.distributed:  # each rank's own noise
            pyro.set_rng_seed(distributed.rank_seed(self.config.seed, self.world.rank, self.epoch))
        total, progress = 0.0, float(self.epoch)
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{self.config.resolved_epochs()}", leave=False,
                   disable=None if self.world.is_main else True)  # fmt: skip
        for step, batch in enumerate(self._batches(generator)):
            progress = self.epoch + (step + 1) / self.steps_per_epoch
            loss = self.objective.step(batch, progress)
            if not math.isfinite(loss):
                bar.close()
                raise TrainingDiverged(f"non-finite loss ({loss}) at epoch {self.epoch + 1}, step {step + 1}; {self.last_good()}")
            if self.average is not None:
                self.average.update(self.model)
            total += loss
            bar.set_postfix(loss=f"{total / (step + 1):.4g}")
            bar.update()
        bar.close()
        loss = distributed.mean_across_ranks(total / self.steps_per_epoch, self.world)
        return {"train_loss": loss, **self.objective.train_metrics(progress)}

    def last_good(self) -> str:
        last = self.run_dir / "last.pt"
        return f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"

    def evaluated_weights(self):
        """A context in which the model holds the weights that are evaluated (the average, when kept)."""
        return self.average.applied(self.model) if self.average is not None else contextlib.nullcontext(self.model)

    def evaluate_epoch(self) -> dict:
        """Accuracy and classification loss on the labelled images, validation accuracy, p(y), and the objective's
        own metrics, all of the evaluated weights."""
        data, batch_size = self.data, self.config.eval_batch_size
        with self.evaluated_weights():
            probs_l = predict_proba(self.model, data.labelled_images, batch_size=batch_size, device=self.device)
            labels_l = data.labelled_labels.cpu().numpy()
            picked = probs_l[np.arange(len(labels_l)), labels_l]
            row = {"train_accuracy": float((probs_l.argmax(1) == labels_l).mean()),
                   "classification_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
                   "val_accuracy": self.validation_report()["accuracy"],
                   "class_prior": " ".join(f"{p:.4f}" for p in self.model.prior_probs().tolist())}  # fmt: skip
            return {**row, **self.objective.epoch_metrics(data)}

    def validation_report(self) -> dict:
        probs = predict_proba(self.model, self.data.val_images, batch_size=self.config.eval_batch_size, device=self.device)
        return classification_report(probs, self.data.val_labels.cpu().numpy(), self.data.class_names)

    # the loop

    def fit(self, *, resume: bool = False) -> dict:
        """Train to ``epochs`` (continuing from ``last.pt`` when ``resume``); return the validation report of
        the best checkpoint, which is also loaded into the model."""
        with training_environment(self.device):
            return self._fit(resume)

    def _fit(self, resume: bool) -> dict:
        cfg, main = self.config, self.world.is_main
        if resume:
            self.resume()
        if main:  # on a resume too: the settings it goes on with (a new --epochs), and a damaged file made whole
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / "config.json", {"version": CONFIG_VERSION, "train": cfg.to_dict(), "model": self.model.config,
                                                             "class_names": list(self.data.class_names), "data": self.data.description})  # fmt: skip
            if not resume:
                write_metrics(self.run_dir, [], self.columns)
        distributed.broadcast_module(self.model, self.world)  # every rank starts from rank 0's weights
        rows = read_metrics(self.run_dir) if main else []
        scalars = EpochScalars(self.run_dir) if cfg.tensorboard and main else None
        logger.info("training %s on %d labelled + %d unlabelled images (%d steps/epoch, %sdevice %s%s)", cfg.method,
                    len(self.data.labelled_labels), len(self.data.unlabelled_images) if self.use_unlabelled else 0, self.steps_per_epoch,
                    f"{self.objective.describe()}, " if self.objective.describe() else "", self.device,
                    f", rank {self.world.rank} of {self.world.world_size}" if self.world.distributed else "")  # fmt: skip
        try:
            while self.epoch < cfg.resolved_epochs():
                spent = training_seconds(rows) + float(rows[-1]["seconds"]) if main and rows else 0.0  # with the next epoch
                if distributed.from_main(cfg.max_seconds is not None and spent > cfg.max_seconds, self.world):  # decided on rank 0
                    logger.info("stopping after epoch %d: the next epoch (as long as the last) would pass max_seconds=%g", self.epoch, cfg.max_seconds)
                    break
                rows.append(self.run_epoch(rows, scalars))
        except PeerFailure as error:
            raise PeerFailure(f"{error}; {self.last_good()}") from None
        if scalars is not None:
            scalars.close()
        return distributed.from_main(self.finish(rows) if main else None, self.world)

    def run_epoch(self, rows: list[dict], scalars: EpochScalars | None) -> dict:
        """Train and evaluate one epoch, write its row (returned as written) and the checkpoints; in a distributed
        run the others wait while rank 0 evaluates and writes (their row has the training columns only)."""
        start = time.perf_counter()
        row = dict.fromkeys(self.columns, math.nan)
        row.update(self.train_epoch())
        distributed.average_buffers(self.model, self.world)
        self.epoch += 1
        if self.world.is_main:
            self.record_epoch(row, rows, scalars, start)
        distributed.barrier(self.world)
        return formatted(row)

    def record_epoch(self, row: dict, rows: list[dict], scalars: EpochScalars | None, start: float) -> None:
        row.update(self.evaluate_epoch())
        row.update(epoch=self.epoch, seconds=round(time.perf_counter() - start, 3))
        if scalars is not None:
            scalars.write(row)
        write_metrics(self.run_dir, [*rows, formatted(row)], self.columns)
        improved = row["val_accuracy"] > self.best_val_accuracy
        if improved:
            self.best_val_accuracy, self.best_epoch = row["val_accuracy"], self.epoch
        state = self.state()
        if improved:
            save_checkpoint(self.run_dir / "best.pt", state)
        save_checkpoint(self.run_dir / "last.pt", state)
        logger.info("%s", epoch_summary(row))

    def finish(self, rows: list[dict]) -> dict:
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
        plot_run(self.run_dir, report, rows, self.data.class_names)
        return report
