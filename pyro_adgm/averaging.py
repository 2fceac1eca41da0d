"""An exponential moving average of a module's weights, used to evaluate and checkpoint a steadier model.

Stochastic-gradient training of a semi-supervised model moves the classifier around from step to step, so its
validation accuracy can swing by several points between epochs (BENCHMARKS.md, "Stability"). Evaluating the
average of the recent weights (Polyak averaging) removes most of that noise without changing the training
itself: the optimiser keeps stepping the raw weights and the average follows them.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class WeightAverage:
    """shadow <- d * shadow + (1 - d) * current after every optimiser step, for every floating-point parameter
    and buffer (batch-norm running statistics too), with ``d = min(decay, (1 + n) / (10 + n))`` after ``n``
    updates so that the average is not held back by the initial weights in short runs.

    ``decay`` is per step: the average covers about ``1 / (1 - decay)`` recent steps.
    """

    def __init__(self, module: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight-average decay: expected a number in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {name: value.detach().clone() for name, value in module.state_dict().items() if value.is_floating_point()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average toward ``module``'s current weights (call after each optimiser step)."""
        self.updates += 1
        weight = 1.0 - self.current_decay()
        current = module.state_dict()
        names = list(self.shadow)
        torch._foreach_lerp_([self.shadow[n] for n in names], [current[n].detach() for n in names], weight)

    @contextlib.contextmanager
    def applied(self, module: nn.Module):
        """Within the block, ``module`` holds the averaged weights; its own are put back afterwards."""
        saved = {name: value.detach().clone() for name, value in module.state_dict().items() if name in self.shadow}
        module.load_state_dict(self.shadow, strict=False)
        try:
            yield module
        finally:
            module.load_state_dict(saved, strict=False)

    def averaged_state_dict(self, module: nn.Module) -> dict:
        """``module.state_dict()`` with the averaged values in place of the floating-point entries."""
        return {name: self.shadow.get(name, value).detach().clone() for name, value in module.state_dict().items()}

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``updates`` and ``shadow`` (which must name exactly this average's entries)."""
        missing, unexpected = set(self.shadow) - set(state["shadow"]), set(state["shadow"]) - set(self.shadow)
        if missing or unexpected:
            raise ValueError(f"weight average: saved entries do not match the model (missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]})")  # fmt: skip
        self.updates = int(state["updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
