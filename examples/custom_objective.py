"""A training method of your own, without touching the trainer: the ADGM plus a consistency term on unlabelled images.

:class:`ConsistencyObjective` extends the library's :class:`~pyro_adgm.objectives.ADGMObjective`. Each step it
draws a second, strong view of every unlabelled image of the batch (a larger affine warp than the trainer's, a
contrast change and a cut-out square), and asks q(y|a,x) on it to agree with q(y|a,x) on the trainer's (weak) view,
whose prediction is held fixed (no gradient), as FixMatch does (Sohn et al. 2020): with ``--targets hard`` the
target is the weak view's most probable class where that probability reaches ``--threshold`` (no target
otherwise); with ``--targets soft`` it is the weak view's whole distribution. The term is a cross-entropy, added to
the ADGM's program as a factor, so that the same ``SVI`` step optimises J^alpha plus

    lambda * ramp * alpha * N_l * mean over the unlabelled batch of CE(target, q(y|a,x_strong)),

i.e. the unlabelled batch's mean consistency loss weighs ``lambda`` (``--consistency-weight``) times as much as
the labelled images' classification term, ramped in with the unlabelled term. ``register_objective`` makes it the
method ``adgm-consistency``; the trainer's loop, checkpoints, resume and ``metrics.csv`` (which gains a
``consistency_loss`` column: the epoch's mean, before the weight) are the library's.

Run from the repository root::

    python examples/custom_objective.py --quick --out runs/consistency-quick      # demo phantoms, tiny (the tests' mode)
    python examples/custom_objective.py --measure --out runs/consistency           # PneumoniaMNIST, 10 and 100 labels

``--measure`` trains the ADGM and the ADGM with the consistency term on PneumoniaMNIST (``../shared/data/
pneumoniamnist/pneumoniamnist_28.npz``, prepared once into ``OUT/prepared``) at 10 and 100 labels per class, seeds
0 to 2, 12 epochs with an 8-epoch warm-up (the label sweep's schedule, BENCHMARKS.md), model selection on ``val``,
the best checkpoint evaluated once on ``test``; it writes ``OUT/consistency.csv`` (one row per run) and
``OUT/consistency_summary.csv`` (mean and sd over the seeds, and of the paired differences on each seed, method
``adgm-consistency - adgm``). Resumable: finished runs are read back. A run took
220 to 310 s on one CPU thread (two processes on 2 cores), so the 12 runs take about an hour on one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI

from data_tools.errors import InputError
from pyro_adgm.augment import AugmentSettings, DeviceAugment
from pyro_adgm.evaluation import to_float_images
from pyro_adgm.label_curve import paired_differences, run_label_curve, summarise, write_rows
from pyro_adgm.objectives import ADGMObjective, Batch, linear_ramp, register_objective

METHOD = "adgm-consistency"
DEFAULT_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist_28.npz"
STRONG = AugmentSettings(scale=(0.75, 1.25), translate=0.125, rotate=30.0, probability=1.0)


class ConsistencyObjective(ADGMObjective):
    """The ADGM's J^alpha plus a weighted consistency cross-entropy between two views of each unlabelled image."""

    columns = ("consistency_loss",)

    def __init__(self, model, config, sizes, *, weight: float = 1.0, targets: str = "hard", threshold: float = 0.95):
        super().__init__(model, config, sizes)
        if targets not in ("hard", "soft"):
            raise InputError(f"targets: expected hard or soft, got {targets!r}")
        self.weight, self.targets, self.threshold = weight, targets, threshold
        self.strong = DeviceAugment(dataclasses.replace(STRONG, flip=config.augment_flip))
        self.svi = SVI(self.program, self.guide, self.optimizer, self.elbo)
        self.total, self.steps = 0.0, 0

    def strong_view(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S) -> float (B, 1, S, S): warped, contrast and brightness changed, a square cut out."""
        x = self.strong(to_float_images(images))
        b, size = x.shape[0], x.shape[-1]
        contrast, brightness = torch.rand(2, b, 1, 1, 1, device=x.device)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * (0.7 + 0.6 * contrast) + mean + 0.2 * (brightness - 0.5)).clamp(0, 1)
        side = max(1, size // 4)
        corner = torch.randint(0, size - side + 1, (2, b, 1, 1), device=x.device)
        rows, cols = torch.arange(size, device=x.device).view(1, size, 1), torch.arange(size, device=x.device).view(1, 1, size)
        inside = (rows >= corner[0]) & (rows < corner[0] + side) & (cols >= corner[1]) & (cols < corner[1] + side)
        return torch.where(inside[:, None], torch.full_like(x, 0.5), x)

    def consistency(self, x_weak: torch.Tensor, x_strong: torch.Tensor) -> torch.Tensor:
        """Per image (B,): the cross-entropy of q(y|a,x_strong), a ~ q(a|x_strong), against the fixed target of
        q(y|a,x_weak) at a = the mean of q(a|x_weak) (0 where a hard target falls short of the threshold)."""
        model = self.model
        with torch.no_grad():
            a_weak, _ = model.aux_encoder(x_weak)
            weak = model.classifier(x_weak, a=a_weak).softmax(-1)
        a_loc, a_scale = model.aux_encoder(x_strong)
        log_q = model.classifier(x_strong, a=a_loc + a_scale * torch.randn_like(a_loc)).log_softmax(-1)
        if self.targets == "soft":
            return -(weak * log_q).sum(-1)
        confidence, label = weak.max(-1)
        return F.nll_loss(log_q, label, reduction="none") * (confidence >= self.threshold).to(log_q.dtype)

    def program(self, x_l, y_l, x_u, *, x_strong=None, consistency_weight=0.0, **kwargs):
        """The consistency term as a factor (its weight already in ``consistency_weight``; first, as it depends on no
        enumerated y), then the ADGM's program."""
        if x_strong is not None:
            per_image = self.consistency(x_u, x_strong)
            self.total, self.steps = self.total + float(per_image.detach().mean()), self.steps + 1
            if consistency_weight > 0:
                pyro.factor("consistency", -consistency_weight * self.alpha * self.sizes.labelled * per_image.mean())
        self.model.semi_supervised_model(x_l, y_l, x_u, **kwargs)

    def guide(self, x_l, y_l, x_u, *, x_strong=None, consistency_weight=0.0, **kwargs):
        self.model.semi_supervised_guide(x_l, y_l, x_u, **kwargs)

    def step(self, batch: Batch, progress: float) -> float:
        kl_weight, unlabelled_weight = self.weights(progress)
        weight = self.weight * linear_ramp(progress, self.config.resolved_unlabelled_warmup())
        x_strong = self.strong_view(batch.unlabelled_images) if batch.unlabelled_images is not None else None
        loss = self.svi.step(batch.x_labelled, batch.y_labelled, batch.x_unlabelled, x_strong=x_strong,
                             consistency_weight=weight, **self.program_arguments(kl_weight, unlabelled_weight))  # fmt: skip
        return loss / self.images

    def train_metrics(self, progress: float) -> dict:
        mean = self.total / self.steps if self.steps else math.nan
        self.total, self.steps = 0.0, 0
        return {**super().train_metrics(progress), "consistency_loss": mean}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--consistency-weight", type=float, default=1.0, help="lambda: the term's weight against the classification term")
    parser.add_argument("--targets", choices=("hard", "soft"), default="hard", help="the weak view's confident class, or its distribution")
    parser.add_argument("--threshold", type=float, default=0.95, help="the confidence a hard target needs")
    parser.add_argument("--npz", type=Path, default=DEFAULT_NPZ, help="PneumoniaMNIST (--measure)")
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 100], help="labelled images per class (--measure)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="(--measure)")
    parser.add_argument("--epochs", type=int, default=12, help="(--measure)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("runs/consistency"))
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="demo phantoms at 28x28, small networks, one epoch, 3 labels per class")
    mode.add_argument("--measure", action="store_true", help="PneumoniaMNIST at --labels, both methods, --seeds; writes the CSVs")
    args = parser.parse_args(argv)
    if not (args.consistency_weight >= 0 and 0 <= args.threshold <= 1):
        parser.error("--consistency-weight: expected a number >= 0; --threshold: a probability")
    return args


def settings_record(args: argparse.Namespace, out: Path) -> None:
    """Write the term's settings to ``out/consistency.json``, or refuse a folder whose runs had others."""
    settings = {"consistency_weight": args.consistency_weight, "targets": args.targets, "threshold": args.threshold}
    path = out / "consistency.json"
    if path.exists() and json.loads(path.read_text()) != settings:
        raise InputError(f"{path}: the runs in {out} had the consistency settings {path.read_text().strip()}; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    """Train both methods (quick or measured); return the summary rows (method, labels_per_class, mean and sd)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    register_objective(METHOD, functools.partial(ConsistencyObjective, weight=args.consistency_weight, targets=args.targets,
                                                 threshold=args.threshold))  # fmt: skip
    settings_record(args, args.out)
    common = {"methods": ("adgm", METHOD), "task": "2class", "out_dir": args.out}
    if args.quick:
        rows = run_label_curve([3], [0], data=None, demo={"n_images": 120, "image_size": 28, "seed": 0}, epochs=1,
                               evaluate_split="test", model_options={"a_dim": 8, "z_dim": 8, "channels": (8, 16), "hidden": (32,)},
                               config_overrides={"batch_size": 16, "warmup_epochs": 1, "device": "cpu"}, **common)  # fmt: skip
    else:
        from data_tools.medmnist import prepare_medmnist

        if not args.npz.exists():
            raise SystemExit(f"{args.npz}: PneumoniaMNIST file not found (see ../shared/data/README.md)")
        prepared = args.out / "prepared"
        if not (prepared / "meta.json").exists():
            prepare_medmnist(args.npz, prepared)
        rows = run_label_curve(args.labels, args.seeds, data=prepared, epochs=args.epochs, evaluate_split="test",
                               config_overrides={"warmup_epochs": 8.0, "device": args.device}, **common)  # fmt: skip
    write_rows(rows, args.out / "consistency.csv")
    summary = summarise(rows)
    write_rows(summary + paired_differences(rows, METHOD, "adgm"), args.out / "consistency_summary.csv", columns=list(summary[0]))
    for s in summary:
        print(f"{s['method']:<18} {s['labels_per_class']:>4} labels/class: val {s['val_accuracy_mean']:.3f}, "
              f"test {s['test_accuracy_mean'] if s['test_accuracy_mean'] is not None else float('nan'):.3f} ({s['runs']} runs)")  # fmt: skip
    return summary


if __name__ == "__main__":
    main()
