"""Figures of a run: confusion matrix, training curves and sample grids, written atomically as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from pyro_adgm.checkpoint import atomic_write_bytes  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def plot_confusion(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str = "") -> None:
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(class_names), 1.2 + 1.0 * len(class_names)))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="black" if count < matrix.max() / 2 else "white")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    save_figure(fig, path)


def plot_curves(rows: Sequence[dict], path: Path) -> None:
    """Accuracy, bounds and KL weight per epoch from the rows of ``metrics.csv``."""

    def column(name):
        return [float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows]

    epochs = column("epoch")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, column("train_accuracy"), label="train (labelled)")
    axes[0].plot(epochs, column("val_accuracy"), label="validation")
    axes[0].set_title("accuracy")
    axes[1].plot(epochs, column("labelled_bound"), label="labelled")
    axes[1].plot(epochs, column("unlabelled_bound"), label="unlabelled")
    axes[1].set_title("ELBO (nats per image)")
    axes[2].plot(epochs, column("classification_loss"), label="classification loss")
    axes[2].plot(epochs, column("kl_weight"), label="KL weight")
    axes[2].plot(epochs, column("unlabelled_weight"), label="unlabelled weight")
    axes[2].set_title("classification loss, warm-up weights")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
    save_figure(fig, path)


def plot_run(run_dir: Path, report: dict, rows: Sequence[dict], class_names: Sequence[str]) -> None:
    """A finished run's figures: ``confusion.png`` of its validation ``report`` and ``curves.png`` of its
    ``metrics.csv`` ``rows``."""
    run_dir = Path(run_dir)
    plot_confusion(report["confusion_matrix"], class_names, run_dir / "confusion.png",
                   title=f"validation, epoch {report['best_epoch']}: accuracy {report['accuracy']:.3f}")  # fmt: skip
    plot_curves(rows, run_dir / "curves.png")


def save_image_grid(images: torch.Tensor, path: Path, nrow: int | None = None) -> None:
    """images: (N, C, S, S) float in [0, 1] -> one PNG grid."""
    from PIL import Image

    nrow = nrow or int(np.ceil(np.sqrt(images.shape[0])))
    grid = make_grid(images.detach().cpu().float().clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    array = (grid[0] * 255).round().to(torch.uint8).numpy()
    image_format = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")  # grid.jpg: a JPEG
    atomic_write_bytes(path, lambda tmp: Image.fromarray(array).save(tmp, format=image_format))
