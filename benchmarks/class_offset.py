"""A 2class ADGM's class-wide offset in the bound, and how much its decoder's means vary with z.

For each checkpoint given, on the run's unlabelled training images (the images its unlabelled term trains on):
the margin ELBO(x, class 1) - ELBO(x, class 0) in nats (:func:`pyro_adgm.evaluation.class_bound_terms`,
``--samples`` draws of a and z), its mean and sd over the images, its pixel term's mean, and the share of images
whose margin favours class 1. A mean far from 0 against a small sd is an offset that the bound adds to every
image, which the unlabelled term passes on to q(y|a,x) as a push towards one class; ``q_share_1`` is q's mean
probability of class 1 on the same images. ``z_sd``: the pixel sd, across ``--draws`` draws of z, of the means of
p(x|z,y) (:meth:`ADGM.generate`), averaged over the pixels and both classes, in [0, 1] intensity: how much the
decoder uses its latents.

Writes ``OUT/class_offset.csv`` (one row per checkpoint, rewritten whole).

    OMP_NUM_THREADS=1 python benchmarks/class_offset.py runs/rsna-1500-pa/2class/adgm-100labels-seed1/last.pt --out benchmarks/results
    python benchmarks/class_offset.py --quick --out /tmp/class-offset    # a 1-epoch demo run; a test runs it
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bound_classifier import quick_run  # noqa: E402

from data_tools.errors import InputError  # noqa: E402
from pyro_adgm import runs  # noqa: E402
from pyro_adgm.evaluation import class_bound_terms, predict_proba  # noqa: E402
from pyro_adgm.label_curve import write_rows  # noqa: E402

COLUMNS = ("checkpoint", "images", "margin_mean", "margin_sd", "pixels_margin_mean", "share_1", "q_share_1", "z_sd")


def measure(checkpoint: Path, samples: int, draws: int) -> dict:
    """One row of ``OUT/class_offset.csv`` for a 2class checkpoint (see the module docstring)."""
    model, state = runs.load_model(checkpoint, device="cpu")
    if model.num_classes != 2:
        raise InputError(f"{checkpoint}: a {model.num_classes}-class model; expected a 2class one")
    images, _, _, _ = runs.checkpoint_split(state, runs.UNLABELLED, model.image_size)
    terms = class_bound_terms(model, images, samples=samples)
    margin = sum(terms.values())
    margin = margin[:, 1] - margin[:, 0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        z_sd = sum(float(model.generate(k, n=draws).std(0).mean()) for k in (0, 1)) / 2
    return {"checkpoint": str(checkpoint), "images": len(margin), "margin_mean": float(margin.mean()),
            "margin_sd": float(margin.std()), "pixels_margin_mean": float((terms["pixels"][:, 1] - terms["pixels"][:, 0]).mean()),
            "share_1": float((margin > 0).mean()), "q_share_1": float(predict_proba(model, images)[:, 1].mean()), "z_sd": z_sd}  # fmt: skip


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", type=Path, nargs="*", help="best.pt or last.pt of 2class ADGM runs")
    parser.add_argument("--samples", type=int, default=2, help="draws of a and z per image for the bound")
    parser.add_argument("--draws", type=int, default=32, help="draws of z per class for z_sd")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoints = [quick_run(Path(tempfile.mkdtemp(dir=args.out))) / "last.pt"] if args.quick else args.checkpoints
    if not checkpoints:
        parser.error("give checkpoints (or --quick)")
    rows = [measure(checkpoint, args.samples, args.draws) for checkpoint in checkpoints]
    write_rows(rows, args.out / "class_offset.csv", COLUMNS)
    for row in rows:
        print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
