"""Compose README's picture, ``docs/overview.png``: generated X-rays per class beside the accuracy-against-labels plot.

Left: for each class y of a trained checkpoint, ``--n`` images of p(x|z,y) (its mean) for the same draws of
z ~ p(z), one row per class (``examples/conditional_generation.py`` draws the same grid). Right:
``benchmarks/results/accuracy_vs_labels.png`` as committed (BENCHMARKS.md, "The learned-p(y) sweep").

Run from the repository root::

    pyro-adgm prepare medmnist ../shared/data/pneumoniamnist/pneumoniamnist_28.npz --out data/pneumoniamnist
    pyro-adgm train --task 2class --labels 100 --data data/pneumoniamnist --epochs 12 --warmup-epochs 8 --device cpu --out runs/pmnist-100
    python docs/figure.py --checkpoint runs/pmnist-100/best.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from pyro_adgm import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CURVE = ROOT / "benchmarks" / "results" / "accuracy_vs_labels.png"


def sample_rows(checkpoint: Path, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """(K, n, S, S) generated images in [0, 1], z shared across the rows, and the class names."""
    model, state = load_model(checkpoint, "cpu")
    pyro.set_rng_seed(seed)
    z = torch.randn(n, model.z_dim)
    rows = torch.stack([model.generate(k, z=z)[:, 0] for k in range(model.num_classes)])
    return rows, list(state["class_names"])


def compose(checkpoint: Path, out: Path, n: int = 6, seed: int = 0) -> Path:
    rows, names = sample_rows(checkpoint, n, seed)
    curve = plt.imread(CURVE)
    figure = plt.figure(figsize=(8.4, 3.1), dpi=100)
    # square cells: the rows' height follows from the width of the left half
    cell = 0.47 * 8.4 / (n + 1.6) / 3.1
    top = 0.5 + cell * len(names) / 2
    grid = figure.add_gridspec(len(names), n + 1, left=0.01, right=0.48, top=top, bottom=top - cell * len(names),
                               wspace=0.04, hspace=0.04, width_ratios=[1.6] + [1] * n)  # fmt: skip
    for k, name in enumerate(names):
        label = figure.add_subplot(grid[k, 0])
        label.text(0.9, 0.5, name, ha="right", va="center", fontsize=10)
        label.axis("off")
        for j in range(n):
            axis = figure.add_subplot(grid[k, j + 1])
            axis.imshow(rows[k, j].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axis.axis("off")
    figure.text(0.28, top + 0.05, "drawn from p(x|z,y), one row per class y", ha="center", fontsize=10)
    right = figure.add_axes((0.5, 0.0, 0.5, 1.0))
    right.imshow(curve)
    right.axis("off")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="best.pt of a PneumoniaMNIST run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "overview.png")
    parser.add_argument("--n", type=int, default=6, help="images per class")
    parser.add_argument("--seed", type=int, default=0, help="seed of z ~ p(z)")
    args = parser.parse_args(argv)
    path = compose(args.checkpoint, args.out, args.n, args.seed)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return path


if __name__ == "__main__":
    main()
