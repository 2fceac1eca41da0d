"""A run's ``metrics.csv``: one row per epoch, rewritten whole (atomically) after each epoch.

Columns: the trainer's (:data:`METRIC_COLUMNS`), then any its objective adds. Numbers are written with 6
significant digits; a quantity a method does not have (the bounds of the supervised baseline) is ``nan``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from pyro_adgm.checkpoint import atomic_write_text

METRIC_COLUMNS = ("epoch", "train_loss", "labelled_bound", "unlabelled_bound", "labelled_bits_per_dim", "unlabelled_bits_per_dim",
                  "classification_loss", "kl_weight",
                  "unlabelled_weight", "train_accuracy", "val_accuracy", "seconds", "class_prior")  # fmt: skip


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of ``run_dir/metrics.csv`` as written (strings); [] when there is none."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_metrics(run_dir: str | Path, rows: Sequence[dict], columns: Sequence[str] = METRIC_COLUMNS) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(run_dir) / "metrics.csv", buffer.getvalue())


def formatted(row: dict) -> dict:
    """An epoch's row as it is written: floats with 6 significant digits."""
    return {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}


def training_seconds(rows: Sequence[dict]) -> float:
    """The training time of the epochs in ``rows`` (over resumed runs too)."""
    return sum(float(row["seconds"]) for row in rows)


def epoch_summary(row: dict) -> str:
    """The log line of an epoch's ``metrics.csv`` row; the bound, the KL weight and p(y) only where the objective
    has them (not for the supervised baseline, whose row holds NaN there)."""

    def measured(name: str) -> bool:
        value = row.get(name)
        return value is not None and not (isinstance(value, float) and math.isnan(value))

    parts = [f"epoch {row['epoch']}: loss {row['train_loss']:.4g}"]
    if measured("unlabelled_bound"):
        parts.append(f"bound {row['unlabelled_bound']:.5g} nats/image ({row['unlabelled_bits_per_dim']:.4f} bits/dim)")
    parts.append(f"train acc {row['train_accuracy']:.3f}, val acc {row['val_accuracy']:.3f}")
    if measured("kl_weight"):
        parts.append(f"KL weight {row['kl_weight']:.3f}, p(y) {row['class_prior']}")
    parts.append(f"{row['seconds']:.1f}s")
    return ", ".join(parts)
