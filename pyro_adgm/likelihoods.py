"""Likelihoods p(x|z,y): turn the image decoder's raw output into a distribution over images.

Each likelihood has ``params_per_channel`` (raw channels per image channel), ``__call__(raw)`` (a Pyro
distribution whose event is the image (C, S, S)), ``image(raw)`` (the image that stands for p(x|z,y): its mean,
or for the discretised logistic its median level) and ``discrete`` (whether ``log_prob`` is a log-probability
of 8-bit levels, <= 0, rather than a density).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch.distributions import constraints

LEVELS = 256  # grey levels of an 8-bit image; x = level / 255 in [0, 1]


class DiscretizedLogistic(dist.TorchDistribution):
    """A logistic distribution over [0, 1] discretised to the 256 grey levels k / 255 (as in PixelCNN++).

    Level k gets the logistic's mass on [k/255 - 1/510, k/255 + 1/510]; level 0 also takes everything below and
    level 255 everything above, so the 256 probabilities sum to 1 and ``log_prob`` <= 0. A value is rounded to
    the nearest level first (augmented images are interpolated between levels). loc, scale: same shape, scale
    > 0, in units of [0, 1] intensity.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return DiscretizedLogistic(self.loc.expand(batch_shape), self.scale.expand(batch_shape), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        level = (value * (LEVELS - 1)).round().clamp(0, LEVELS - 1)
        half_bin = 0.5 / (LEVELS - 1)
        centred = level / (LEVELS - 1) - self.loc
        upper = (centred + half_bin) / self.scale  # the bin's edges in standard logistic units
        lower = (centred - half_bin) / self.scale
        # log(sigmoid(u) - sigmoid(l)) = logsigmoid(u) + logsigmoid(-l) + log(1 - exp(-(u - l))), stable for any u > l
        log_below_upper = torch.where(level < LEVELS - 1, F.logsigmoid(upper), 0.0)
        log_above_lower = torch.where(level > 0, F.logsigmoid(-lower), 0.0)
        interior = (level > 0) & (level < LEVELS - 1)
        log_width = torch.where(interior, torch.log(-torch.expm1(-(2 * half_bin) / self.scale)), 0.0)
        return log_below_upper + log_above_lower + log_width

    def sample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            x = self.loc.expand(shape) + self.scale.expand(shape) * (u.log() - (-u).log1p())
            return quantise(x)

    @property
    def mean(self) -> torch.Tensor:
        levels = torch.arange(LEVELS, dtype=self.loc.dtype, device=self.loc.device) / (LEVELS - 1)
        return (self.log_prob(levels.view((LEVELS,) + (1,) * self.loc.dim())).exp() * levels.view((LEVELS,) + (1,) * self.loc.dim())).sum(0)

    def median(self) -> torch.Tensor:
        """The median level: the logistic's median (loc) rounded to the nearest level, clamped to [0, 1]."""
        return quantise(self.loc)


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Intensities -> the nearest of the 256 levels k / 255, clamped to [0, 1]."""
    return (x * (LEVELS - 1)).round().clamp(0, LEVELS - 1) / (LEVELS - 1)


class DiscretizedLogisticLikelihood:
    """Per-pixel :class:`DiscretizedLogistic` over the 256 grey levels, a p(x|z,y) for 8-bit images.

    Raw parameters (..., 2*C, S, S): the first C channels are the location (offset by 0.5, so a raw 0 is mid
    grey), the last C the scale as softplus(.) + ``min_scale``. log p(x|z,y) <= 0, so the bound is at most 0
    nats and can be read in bits per dimension.
    """

    params_per_channel = 2
    discrete = True

    def __init__(self, min_scale: float = 1e-4):
        self.min_scale = min_scale

    def __call__(self, raw: torch.Tensor) -> dist.Distribution:
        loc, raw_scale = raw.chunk(2, dim=-3)
        return DiscretizedLogistic(loc + 0.5, F.softplus(raw_scale) + self.min_scale).to_event(3)

    def image(self, raw: torch.Tensor) -> torch.Tensor:
        return quantise(raw.chunk(2, dim=-3)[0] + 0.5)


class GaussianLikelihood:
    """Per-pixel Gaussian with a learned mean in [0, 1] and a learned scale.

    Raw parameters (..., 2*C, S, S): the first C channels give the mean through a sigmoid, the last C the
    scale as softplus(.) + ``min_scale``, so the standard deviation can go far below 1 (down to ``min_scale``)
    for pixels in [0, 1]. The distribution's event is the whole image (C, S, S).
    """

    params_per_channel = 2
    discrete = False

    def __init__(self, min_scale: float = 1e-3):
        self.min_scale = min_scale

    def __call__(self, raw: torch.Tensor) -> dist.Distribution:
        loc, raw_scale = raw.chunk(2, dim=-3)
        return dist.Normal(torch.sigmoid(loc), F.softplus(raw_scale) + self.min_scale).to_event(3)

    def image(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw.chunk(2, dim=-3)[0])


class BernoulliLikelihood:
    """Per-pixel Bernoulli from logits (..., C, S, S); data must be binary (binarise x before training)."""

    params_per_channel = 1
    discrete = True

    def __call__(self, raw: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=raw).to_event(3)

    def image(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw)


class GreyBernoulliLikelihood(BernoulliLikelihood):
    """Bernoulli log-probability (binary cross-entropy) of grey levels x in [0, 1], from logits (..., C, S, S).

    For x strictly between 0 and 1 this is not a normalised density, but it is the objective of many M2
    implementations (Pyro's SS-VAE tutorial among them) on MNIST's grey levels, trained without binarising.
    Draws from it are binary; :meth:`image` gives the grey-level image.
    """

    discrete = False

    def __call__(self, raw: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=raw, validate_args=False).to_event(3)


LIKELIHOODS = {"discretized-logistic": DiscretizedLogisticLikelihood, "gaussian": GaussianLikelihood,
               "bernoulli": BernoulliLikelihood, "bernoulli-grey": GreyBernoulliLikelihood}  # fmt: skip


def bits_per_dim(bound_nats: float, dims: int, discrete: bool) -> float:
    """A bound in nats per image -> bits per dimension (pixel). A density over [0, 1] (``discrete`` False) is
    turned into the probability of 8-bit levels by its bin width 1/255, the usual dequantisation reading."""
    bits = -bound_nats / (dims * math.log(2))
    return bits if discrete else bits + math.log2(LEVELS - 1)
