"""TensorBoard event files beside ``metrics.csv``: each epoch's numeric metrics as scalars, to watch a run live.

Needs the optional ``tensorboard`` package (``pip install "pyro-adgm[tensorboard]"``); ``metrics.csv`` stays the
record that training, resuming and the benchmarks read.
"""

from __future__ import annotations

import math
from pathlib import Path

from data_tools.errors import InputError


class EpochScalars:
    """Writes one epoch's metrics row ({column: value}) under ``run_dir/tensorboard`` as scalars at step = epoch."""

    def __init__(self, run_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError('tensorboard: the package is not installed; pip install "pyro-adgm[tensorboard]"') from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def write(self, row: dict) -> None:
        epoch = int(row["epoch"])
        for name, value in row.items():
            if name == "epoch" or isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            self.writer.add_scalar(name, value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
