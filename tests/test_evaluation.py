"""Evaluation helpers against hand-worked cases."""

import numpy as np
import pyro
import pytest
import torch

from pyro_adgm.evaluation import adjust_to_class_shares, best_threshold_accuracy, without_detail
from pyro_adgm.model import ADGM


def test_best_threshold_accuracy_finds_the_best_cut():
    # scores 0.9, 0.8, 0.3, 0.2 for labels 1, 0, 1, 0: the best cut (after the first) gets 3 of 4 right
    assert best_threshold_accuracy(np.array([0.9, 0.8, 0.3, 0.2]), np.array([1, 0, 1, 0])) == 0.75
    assert best_threshold_accuracy(np.array([0.9, 0.8, 0.3, 0.2]), np.array([1, 1, 0, 0])) == 1.0


def test_adjust_to_class_shares_reweights_by_the_ratio_of_shares():
    probs = np.array([[0.5, 0.5], [0.8, 0.2], [0.1, 0.9]])
    adjusted = adjust_to_class_shares(probs, trained_prior=[0.5, 0.5], shares=[0.25, 0.75])
    # (0.5 * 0.5, 0.5 * 1.5) -> (0.25, 0.75); (0.8 * 0.5, 0.2 * 1.5) = (0.4, 0.3) -> (4/7, 3/7)
    np.testing.assert_allclose(adjusted[0], [0.25, 0.75])
    np.testing.assert_allclose(adjusted[1], [4 / 7, 3 / 7])
    np.testing.assert_allclose(adjusted.sum(1), 1.0)
    # the same shares as in training change nothing
    np.testing.assert_allclose(adjust_to_class_shares(probs, [0.3, 0.7], [0.3, 0.7]), probs)
    assert adjusted[1].argmax() == 0 and adjust_to_class_shares(probs, [0.5, 0.5], [0.1, 0.9])[1].argmax() == 1
    assert adjusted.shape == probs.shape and pytest.approx(1.0) == adjusted[2].sum()


def test_adjust_to_class_shares_takes_a_learned_prior_straight_from_the_model():
    model = ADGM(num_classes=2, image_size=28, architecture="mlp", a_dim=4, z_dim=4, hidden=(8,), learn_class_prior=True)
    with torch.no_grad():
        model.class_prior_logits.copy_(torch.tensor([0.25, 0.75]).log())
    prior = model.prior_probs()
    assert prior.requires_grad  # a parameter's softmax: np.asarray alone would refuse it
    probs = np.array([[0.8, 0.2]])
    # ratios (0.5 / 0.25, 0.5 / 0.75) = (2, 2/3): (1.6, 2/15) -> (12/13, 1/13)
    np.testing.assert_allclose(adjust_to_class_shares(probs, prior, [0.5, 0.5]), [[12 / 13, 1 / 13]], rtol=1e-6)


def test_class_bounds_are_the_elbo_that_pyro_computes_for_each_label():
    """Each column is the bound of the image with that label: against Pyro's Trace_ELBO of the labelled
    programs, each an average over 3,000 draws (a missing or mis-signed term moves them by many nats)."""
    from pyro.infer import Trace_ELBO

    from pyro_adgm.evaluation import class_bounds

    torch.manual_seed(0)
    model = ADGM(num_classes=3, image_size=16, a_dim=4, z_dim=4, architecture="mlp", hidden=(16,))
    images = torch.randint(0, 256, (2, 16, 16), dtype=torch.uint8)
    state = torch.random.get_rng_state()
    bounds = class_bounds(model, images, samples=3000, batch_size=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded on its own
    assert np.array_equal(bounds, class_bounds(model, images, samples=3000, batch_size=1))
    x = images.float().div(255).unsqueeze(1)
    model.eval()
    with torch.no_grad():
        for i in range(2):
            for k in range(3):
                copies, labels = x[i : i + 1].expand(3000, -1, -1, -1), torch.full((3000,), k)
                reference = -Trace_ELBO().loss(model.model, model.guide, copies, labels) / 3000
                assert abs(bounds[i, k] - reference) < 0.5, (i, k, bounds[i, k], reference)


def test_class_bound_terms_split_the_bound_by_site():
    """The terms sum to class_bounds; log p(y) is the uniform prior's; each term is the pair of Pyro sites it
    names, checked against log densities computed by hand from the networks' outputs for one draw."""
    from pyro_adgm.evaluation import class_bound_terms, class_bounds

    torch.manual_seed(0)
    model = ADGM(num_classes=3, image_size=16, a_dim=4, z_dim=4, architecture="mlp", hidden=(16,))
    images = torch.randint(0, 256, (5, 16, 16), dtype=torch.uint8)
    terms = class_bound_terms(model, images, samples=2, batch_size=3)
    assert set(terms) == {"pixels", "aux", "latent", "prior"}
    assert all(t.shape == (5, 3) for t in terms.values())
    np.testing.assert_allclose(sum(terms.values()), class_bounds(model, images, samples=2, batch_size=3), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(terms["prior"], np.log(1 / 3), rtol=1e-6)
    assert terms["latent"].max() < 0.5 and terms["pixels"].std() > 0  # minus a KL, up to the noise of 2 draws
    # one draw: the draws of a and z replayed, each term's densities computed from the networks' outputs
    one = class_bound_terms(model, images[:2], samples=1, seed=3)
    x = images[:2].float().div(255).unsqueeze(1)
    normal = torch.distributions.Normal
    with model.evaluating(), torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        labels = torch.zeros(2, dtype=torch.long)
        a = pyro.poutine.trace(model.guide).get_trace(x, labels).nodes["a"]["value"]
        noise_seed = int(torch.randint(2**62, ()))
        for k in range(3):
            torch.manual_seed(noise_seed)
            z = pyro.poutine.trace(pyro.poutine.condition(model.guide, data={"a": a})).get_trace(x, labels + k).nodes["z"]["value"]
            y = model.one_hot(labels + k)
            a_loc, a_scale = model.aux_decoder(x, z=z, y=y)
            q_a_loc, q_a_scale = model.aux_encoder(x)
            z_loc, z_scale = model.latent_encoder(x, a=a, y=y)
            pixels = model.likelihood(model.image_decoder(z=z, y=y)).log_prob(x)
            aux = normal(a_loc, a_scale).log_prob(a).sum(-1) - normal(q_a_loc, q_a_scale).log_prob(a).sum(-1)
            latent = normal(0.0, 1.0).log_prob(z).sum(-1) - normal(z_loc, z_scale).log_prob(z).sum(-1)
            for name, value in (("pixels", pixels), ("aux", aux), ("latent", latent)):
                np.testing.assert_allclose(one[name][:, k], value.numpy(), rtol=1e-5, atol=1e-4, err_msg=name)


def test_without_detail_keeps_coarse_structure_and_removes_fine():
    coarse = torch.zeros(1, 1, 8, 8)
    coarse[..., :, 4:] = 1.0  # two halves: survives averaging to 2x2
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]).remainder(2).float().view(1, 1, 8, 8)
    assert torch.equal(without_detail(checker, 8), checker)
    assert torch.allclose(without_detail(checker, 4), torch.full_like(checker, 0.5))  # finer than 4 pixels: gone
    smooth = without_detail(coarse, 2)
    assert smooth[..., :, 0].max() < 0.5 < smooth[..., :, 7].min()
