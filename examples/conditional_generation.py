"""Class-conditional samples from a trained ADGM, one row per class (as in Fig. 7 of Cerri & Fraccaro).

For each class y the model draws z ~ p(z) and shows the mean of p(x|z,y); the same n draws of z are used in
every row, so a column holds one "style" rendered as each class. The grid is one PNG, classes top to bottom in
the checkpoint's order.

Run from the repository root::

    python examples/conditional_generation.py --checkpoint runs/rsna-3class/best.pt --n 8 --out samples.png
    python examples/conditional_generation.py --quick --out samples.png   # trains a tiny demo checkpoint first
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pyro
import torch

from pyro_adgm import TrainConfig, load_model, train
from pyro_adgm.plots import save_image_grid


def generate_grid(model, n: int) -> torch.Tensor:
    """(K * n, C, S, S) in [0, 1]: n images per class, rows of the grid in class order, z shared across rows."""
    z = torch.randn(n, model.z_dim, device=model.class_prior.device, dtype=model.class_prior.dtype)
    return torch.cat([model.generate(k, z=z) for k in range(model.num_classes)])


def tiny_checkpoint(out_dir: Path) -> Path:
    """Train a small model on 150 demo phantoms (28x28, 3 classes) for two epochs; return its best.pt."""
    config = TrainConfig(task="3class", labels_per_class=5, epochs=2, batch_size=16, warmup_epochs=2, device="cpu")
    small = {"a_dim": 8, "z_dim": 8, "channels": (8, 16, 32, 32, 32), "hidden": (32,)}
    _, run_dir = train(config, demo={"n_images": 150, "image_size": 28, "seed": 0}, run_dir=out_dir, model_options=small)
    return run_dir / "best.pt"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="best.pt or last.pt of a run")
    parser.add_argument("--n", type=int, default=8, help="images per class")
    parser.add_argument("--out", type=Path, default=Path("samples.png"), help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed for z ~ p(z)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="without --checkpoint: train a tiny demo model first")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    """Write the grid; print and return its path."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    checkpoint = args.checkpoint
    if checkpoint is None:
        if not args.quick:
            raise SystemExit("--checkpoint: expected a checkpoint file (or --quick to train a tiny one)")
        checkpoint = tiny_checkpoint(args.out.parent / "tiny-demo-run")
    model, state = load_model(checkpoint, args.device)
    pyro.set_rng_seed(args.seed)
    save_image_grid(generate_grid(model, args.n), args.out, nrow=args.n)
    print(f"{args.out}: {args.n} samples per class, rows {', '.join(state['class_names'])} (from {checkpoint})")
    return args.out


if __name__ == "__main__":
    main()
