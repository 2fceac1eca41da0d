"""The likelihoods p(x|z,y): the discretised logistic is a distribution over the 256 grey levels."""

import math

import pytest
import torch

from pyro_adgm.likelihoods import LIKELIHOODS, DiscretizedLogistic, bits_per_dim, quantise

LEVELS = torch.arange(256, dtype=torch.double) / 255


@pytest.mark.parametrize("loc,scale", [(0.5, 0.1), (0.0, 1e-4), (1.0, 1e-3), (-0.3, 0.05), (0.37, 2e-3), (1.4, 0.5)])
def test_discretized_logistic_sums_to_one_over_the_levels(loc, scale):
    d = DiscretizedLogistic(torch.tensor(loc, dtype=torch.double), torch.tensor(scale, dtype=torch.double))
    log_p = d.log_prob(LEVELS)
    assert (log_p <= 0).all()
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_discretized_logistic_sums_to_one_in_float32_per_pixel():
    torch.manual_seed(0)
    loc, scale = torch.rand(4, 3) * 1.2 - 0.1, torch.rand(4, 3) * 0.2 + 1e-4
    log_p = DiscretizedLogistic(loc, scale).log_prob(LEVELS.float().view(256, 1, 1))
    assert torch.isfinite(log_p).all() and (log_p <= 0).all()
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(4, 3), atol=1e-5, rtol=0)


def test_values_between_levels_are_rounded_to_the_nearest_level():
    d = DiscretizedLogistic(torch.tensor(0.5), torch.tensor(0.05))
    assert d.log_prob(torch.tensor(100.4 / 255)) == d.log_prob(torch.tensor(100 / 255))
    assert d.log_prob(torch.tensor(-0.01)) == d.log_prob(torch.tensor(0.0))


def test_samples_are_levels_and_follow_the_probabilities():
    torch.manual_seed(0)
    d = DiscretizedLogistic(torch.tensor(0.3), torch.tensor(0.02))
    draws = d.sample((20000,))
    assert torch.equal(draws, quantise(draws))
    expected = (d.log_prob(LEVELS.float()).exp() * LEVELS.float()).sum()
    assert draws.mean().item() == pytest.approx(expected.item(), abs=2e-3)
    assert d.mean.item() == pytest.approx(expected.item(), abs=1e-6)


def test_likelihood_image_is_in_range_and_event_is_the_image():
    raw = torch.randn(3, 2, 2, 5, 5) * 3
    likelihood = LIKELIHOODS["discretized-logistic"]()
    dist = likelihood(raw)
    assert dist.batch_shape == (3, 2) and dist.event_shape == (1, 5, 5)
    image = likelihood.image(raw)
    assert image.shape == (3, 2, 1, 5, 5) and image.min() >= 0 and image.max() <= 1
    x = quantise(torch.rand(3, 2, 1, 5, 5))
    assert (dist.log_prob(x) <= 0).all()


def test_bits_per_dim():
    assert bits_per_dim(-100 * math.log(2), 100, discrete=True) == pytest.approx(1.0)
    # a density on [0, 1] is read through the bin width 1/255 of an 8-bit level
    assert bits_per_dim(0.0, 10, discrete=False) == pytest.approx(math.log2(255))
