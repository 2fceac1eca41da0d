"""Likelihoods p(x|z,y): turn the image decoder's raw output into a distribution over images."""

from __future__ import annotations

import pyro.distributions as dist
import torch
import torch.nn.functional as F


class GaussianLikelihood:
    """Per-pixel Gaussian with a learned mean in [0, 1] and a learned scale.

    Raw parameters (..., 2*C, S, S): the first C channels give the mean through a sigmoid, the last C the
    scale as softplus(.) + ``min_scale``, so the standard deviation can go far below 1 (down to ``min_scale``)
    for pixels in [0, 1]. The distribution's event is the whole image (C, S, S).
    """

    params_per_channel = 2

    def __init__(self, min_scale: float = 1e-3):
        self.min_scale = min_scale

    def __call__(self, raw: torch.Tensor) -> dist.Distribution:
        loc, raw_scale = raw.chunk(2, dim=-3)
        return dist.Normal(torch.sigmoid(loc), F.softplus(raw_scale) + self.min_scale).to_event(3)

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw.chunk(2, dim=-3)[0])


class BernoulliLikelihood:
    """Per-pixel Bernoulli from logits (..., C, S, S); data must be binary (binarise x before training)."""

    params_per_channel = 1

    def __call__(self, raw: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=raw).to_event(3)

    def mean(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw)


class GreyBernoulliLikelihood(BernoulliLikelihood):
    """Bernoulli log-probability (binary cross-entropy) of grey levels x in [0, 1], from logits (..., C, S, S).

    For x strictly between 0 and 1 this is not a normalised density, but it is the objective of many M2
    implementations (Pyro's SS-VAE tutorial among them) on MNIST's grey levels, trained without binarising.
    Draws from it are binary; :meth:`mean` gives the grey-level image.
    """

    def __call__(self, raw: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=raw, validate_args=False).to_event(3)


LIKELIHOODS = {"gaussian": GaussianLikelihood, "bernoulli": BernoulliLikelihood, "bernoulli-grey": GreyBernoulliLikelihood}
