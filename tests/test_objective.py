"""The Pyro objective against an independent computation written with torch.distributions."""

import pyro
import pytest
import torch
import torch.distributions as td
import torch.nn.functional as F
from pyro.infer import TraceEnum_ELBO

from pyro_adgm.model import ADGM


def small_model(num_classes=3, image_size=28, training=False, **options):
    """eval mode, or training mode with dropout off: deterministic networks either way, so only a and z carry
    noise (in training mode the trunks' batch norm uses the batch's statistics, the same in both computations)."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    if training:
        options["dropout"] = 0.0
    model = ADGM(num_classes=num_classes, image_size=image_size, a_dim=5, z_dim=4, channels=(4, 8, 8, 8, 8), hidden=(16,),
                 **options)  # fmt: skip
    return model.double().train(training)


def pyro_loss(model, x, y=None, **kwargs):
    pyro.set_rng_seed(123)
    return TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, x, y, **kwargs)


def image_log_prob(model, z, y_onehot, x):
    raw = model.image_decoder(z=z, y=y_onehot)
    loc, raw_scale = raw.chunk(2, dim=-3)
    if model.config["likelihood"] == "gaussian":
        return td.Independent(td.Normal(torch.sigmoid(loc), F.softplus(raw_scale) + 1e-3), 3).log_prob(x)
    # the discretised logistic written out: the logistic CDF's mass on each level's bin, the edge bins open-ended
    cdf = td.TransformedDistribution(td.Uniform(torch.zeros(()), torch.ones(()), validate_args=False),
                                     [td.SigmoidTransform().inv, td.AffineTransform(loc + 0.5, F.softplus(raw_scale) + 1e-4)]).cdf  # fmt: skip
    level = (x * 255).round()
    upper = torch.where(level == 255, torch.ones_like(loc), cdf(((level + 0.5) / 255).expand_as(loc)))
    lower = torch.where(level == 0, torch.zeros_like(loc), cdf(((level - 0.5) / 255).expand_as(loc)))
    return (upper - lower).log().sum((-3, -2, -1))


def oracle_terms(model, x, y=None, kl_weight=1.0):
    """Per-example ELBO terms with the same noise as Pyro's guide: a drawn first, then one z noise shared by all classes."""
    pyro.set_rng_seed(123)
    batch, k = x.shape[0], model.num_classes
    a_loc, a_scale = model.aux_encoder(x)
    q_a = td.Independent(td.Normal(a_loc, a_scale), 1)
    a = q_a.rsample()
    classes = torch.arange(k) if y is None else None
    y_onehot = (F.one_hot(classes, k).double()[:, None, :].expand(k, batch, k) if y is None else F.one_hot(y, k).double())
    z_loc, z_scale = model.latent_encoder(x, a=a, y=y_onehot)
    q_z = td.Independent(td.Normal(z_loc, z_scale), 1)
    z = z_loc + z_scale * torch.empty(batch, model.z_dim, dtype=torch.double).normal_()  # one noise for all classes
    p_z = td.Independent(td.Normal(torch.zeros_like(z), torch.ones_like(z)), 1)
    p_a_loc, p_a_scale = model.aux_decoder(x, z=z, y=y_onehot)
    p_a = td.Independent(td.Normal(p_a_loc, p_a_scale), 1)
    log_p_y = (y_onehot * model.prior_probs().log()).sum(-1)
    recon = image_log_prob(model, z, y_onehot, x) + log_p_y
    kl_part = p_z.log_prob(z) + p_a.log_prob(a) - q_z.log_prob(z) - q_a.log_prob(a)
    bound = recon + kl_weight * kl_part  # (B,) labelled, (K, B) unlabelled
    log_q_y = model.classifier(x, a=a).log_softmax(-1)  # (B, K)
    return bound, log_q_y


MODES = [("discretized-logistic", False), ("discretized-logistic", True), ("gaussian", False)]  # (likelihood, training)


def grey_images(*shape):
    """8-bit images as the trainer feeds them: levels k / 255, with black and white pixels (the edge bins)."""
    return torch.randint(0, 256, shape).double().div(255).index_fill(-1, torch.tensor([0]), 0.0).index_fill(-1, torch.tensor([1]), 1.0)


@pytest.mark.parametrize("likelihood,training", MODES)
@pytest.mark.parametrize("num_classes", [2, 3])
def test_unlabelled_loss_equals_explicit_sum_over_classes(num_classes, likelihood, training):
    model = small_model(num_classes, likelihood=likelihood, training=training)
    x = grey_images(6, 1, 28, 28)
    with torch.no_grad():
        loss = pyro_loss(model, x, data_size=60)
        bound, log_q_y = oracle_terms(model, x)
        q_y = log_q_y.exp().T  # (K, B)
        # U(x) = sum_y q(y|a,x) L(x, y) + H[q(y|a,x)], with L the negative labelled bound
        per_example = -(q_y * bound).sum(0) - (-(q_y * log_q_y.T).sum(0))
        expected = per_example.sum() * 60 / 6
    assert loss == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("likelihood,training", MODES)
@pytest.mark.parametrize("alpha", [0.0, 7.5])
def test_labelled_loss_is_bound_plus_alpha_term(alpha, likelihood, training):
    model = small_model(3, likelihood=likelihood, training=training)
    x = grey_images(5, 1, 28, 28)
    y = torch.tensor([0, 2, 1, 1, 0])
    with torch.no_grad():
        loss = pyro_loss(model, x, y, data_size=20, alpha=alpha)
        bound, log_q_y = oracle_terms(model, x, y)
        cross_entropy = -log_q_y.gather(1, y[:, None]).squeeze(1)
        expected = (-bound + alpha * cross_entropy).sum() * 20 / 5
    assert loss == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("learn_class_prior", [True, False])
def test_prior_weighted_labels_weigh_each_classification_term_by_k_pi_y(learn_class_prior):
    prior = [0.6, 0.3, 0.1]
    model = small_model(3, class_prior=prior, learn_class_prior=learn_class_prior, prior_weighted_labels=True)
    x = torch.rand(5, 1, 28, 28, dtype=torch.double)
    y = torch.tensor([0, 2, 1, 1, 0])
    loss = pyro_loss(model, x, y, data_size=20, alpha=7.5)
    bound, log_q_y = oracle_terms(model, x, y)
    weights = 3 * torch.tensor(prior, dtype=torch.double)[y]  # 1.8, 0.3, 0.9, 0.9, 1.8
    cross_entropy = -log_q_y.gather(1, y[:, None]).squeeze(1)
    expected = (-bound + 7.5 * weights * cross_entropy).sum() * 20 / 5
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    unweighted = (-bound + 7.5 * cross_entropy).sum() * 20 / 5
    classification = (7.5 * cross_entropy).sum() * 20 / 5
    assert abs(expected.item() - unweighted.item()) > 0.05 * classification.item()  # the weights change the loss
    if learn_class_prior:  # the weights are constants: the labelled term still sends p(y) no gradient
        pyro.set_rng_seed(123)
        labelled = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model.model, model.guide, x, y,
                                                                           data_size=20, alpha=7.5)  # fmt: skip
        (grad,) = torch.autograd.grad(labelled, model.class_prior_logits, allow_unused=True)
        assert grad is None or torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("labelled", [True, False])
def test_kl_weight_scales_and_zero_removes_kl_terms(labelled):
    model = small_model(2)
    x = torch.rand(4, 1, 28, 28, dtype=torch.double)
    y = torch.tensor([0, 1, 1, 0]) if labelled else None
    with torch.no_grad():
        for weight in (0.0, 0.25):
            loss = pyro_loss(model, x, y, kl_weight=weight)
            bound, log_q_y = oracle_terms(model, x, y, kl_weight=weight)
            if labelled:
                expected = -bound.sum()
            else:
                q_y = log_q_y.exp().T
                expected = (-(q_y * bound).sum(0) + (q_y * log_q_y.T).sum(0)).sum()
            assert loss == pytest.approx(expected.item(), rel=1e-5)
        # with weight 0 the loss is reconstruction (and the y terms) only: it no longer moves with the KL terms
        recon_only = pyro_loss(model, x, y, kl_weight=0.0)
        full = pyro_loss(model, x, y, kl_weight=1.0)
        assert recon_only != pytest.approx(full, rel=1e-6)


def test_semi_supervised_step_is_sum_of_its_parts():
    model = small_model(2)
    xl, yl, xu = torch.rand(3, 1, 28, 28, dtype=torch.double), torch.tensor([1, 0, 1]), torch.rand(4, 1, 28, 28, dtype=torch.double)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    with torch.no_grad():
        pyro.set_rng_seed(5)
        both = elbo.loss(model.semi_supervised_model, model.semi_supervised_guide, xl, yl, xu,
                         labelled_size=30, unlabelled_size=400, alpha=3.0)  # fmt: skip
        pyro.set_rng_seed(5)  # only the guide draws noise, labelled part first: the same draws in the same order
        labelled = elbo.loss(model.model, model.guide, xl, yl, data_size=30, alpha=3.0)
        unlabelled = elbo.loss(model.model, model.guide, xu, data_size=400)
    assert both == pytest.approx(labelled + unlabelled, rel=1e-9)


@pytest.mark.parametrize("weight", [0.0, 0.3])
def test_unlabelled_weight_scales_only_the_unlabelled_term(weight):
    model = small_model(3)
    xl, yl, xu = torch.rand(3, 1, 28, 28, dtype=torch.double), torch.tensor([1, 0, 2]), torch.rand(4, 1, 28, 28, dtype=torch.double)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    with torch.no_grad():
        pyro.set_rng_seed(9)
        both = elbo.loss(model.semi_supervised_model, model.semi_supervised_guide, xl, yl, xu,
                         labelled_size=30, unlabelled_size=400, alpha=3.0, unlabelled_weight=weight)  # fmt: skip
        pyro.set_rng_seed(9)
        labelled = elbo.loss(model.model, model.guide, xl, yl, data_size=30, alpha=3.0)
        unlabelled = elbo.loss(model.model, model.guide, xu, data_size=400)
    assert both == pytest.approx(labelled + weight * unlabelled, rel=1e-9)


def test_learned_class_prior_is_in_the_bound_and_only_unlabelled_images_train_it():
    model = small_model(3, learn_class_prior=True)
    with torch.no_grad():
        model.class_prior_logits.copy_(torch.tensor([0.5, -1.0, 0.2], dtype=torch.double))
    pi = model.prior_probs().detach()
    assert pi.sum().item() == pytest.approx(1.0) and not torch.allclose(pi, torch.full((3,), 1 / 3, dtype=torch.double))
    x = torch.rand(6, 1, 28, 28, dtype=torch.double)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    elbo = TraceEnum_ELBO(max_plate_nesting=1)

    pyro.set_rng_seed(123)
    unlabelled = elbo.differentiable_loss(model.model, model.guide, x, data_size=60)
    (grad_u,) = torch.autograd.grad(unlabelled, model.class_prior_logits)
    bound, log_q_y = oracle_terms(model, x)  # log p(y) = log pi_y inside the bound
    q_y = log_q_y.exp().detach()
    expected = (-(q_y.T * bound).sum(0) + (q_y.T * log_q_y.T).sum(0)).sum() * 60 / 6
    assert unlabelled.item() == pytest.approx(expected.item(), rel=1e-5)
    # d(-sum_y q_y log pi_y)/d logits = pi - q per image: the prior moves toward the classes q(y|a,x) assigns
    torch.testing.assert_close(grad_u, ((pi - q_y).sum(0) * 60 / 6), rtol=1e-6, atol=1e-9)

    pyro.set_rng_seed(123)
    labelled = elbo.differentiable_loss(model.model, model.guide, x, y, data_size=60)
    bound_l, _ = oracle_terms(model, x, y)
    assert labelled.item() == pytest.approx(-(bound_l.sum() * 60 / 6).item(), rel=1e-5)
    (grad_l,) = torch.autograd.grad(labelled, model.class_prior_logits, allow_unused=True)
    assert grad_l is None or torch.count_nonzero(grad_l) == 0  # labels are drawn N per class: no say in pi


def test_batch_means_weighs_the_unlabelled_term_by_n_l_over_n_u():
    """The default unlabelled_weight, batch-means, ends the ramp at N_l / N_u: the step's labelled and unlabelled
    batch means then weigh alike. A number is taken as it is; without unlabelled images the weight is moot (1)."""
    from pyro_adgm.config import TrainConfig
    from pyro_adgm.objectives import DataSizes, resolved_unlabelled_weight

    assert TrainConfig().unlabelled_weight == "batch-means"
    assert resolved_unlabelled_weight("batch-means", DataSizes(30, 400)) == pytest.approx(30 / 400)
    assert resolved_unlabelled_weight(0.5, DataSizes(30, 400)) == 0.5
    assert resolved_unlabelled_weight("batch-means", DataSizes(30, 0)) == 1.0
