"""--precision bf16 (autocast), channels-last and the step context, on the CPU with the product's networks."""

import pyro
import pytest
import torch
from conftest import SMALL_MODEL
from pyro.infer import TraceEnum_ELBO

from pyro_adgm.model import ADGM
from pyro_adgm.precision import autocast, check_precision, step_context, to_channels_last

SIZE, BATCH = 28, 8
STEP = {"labelled_size": 100, "unlabelled_size": 200, "kl_weight": 0.5, "alpha": 21.0}


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    x_l, x_u = torch.rand(BATCH, 1, SIZE, SIZE, generator=generator), torch.rand(BATCH, 1, SIZE, SIZE, generator=generator)
    return x_l, torch.arange(BATCH) % 2, x_u


def loss_and_grads(model, x_l, y_l, x_u, context, seed=3):
    """One training step's loss (TraceEnum_ELBO, y summed out for the unlabelled batch) and its gradients."""
    model.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    with context:
        loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(model.semi_supervised_model, model.semi_supervised_guide,
                                                                        x_l, y_l, x_u, **STEP)  # fmt: skip
        loss.backward()
    return loss, {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("likelihood", ["gaussian", "discretized-logistic"])
def test_a_bf16_autocast_step_matches_fp32_within_bfloat16_rounding(likelihood):
    torch.manual_seed(0)
    model = ADGM(num_classes=2, image_size=SIZE, likelihood=likelihood, **SMALL_MODEL)
    fp32_loss, fp32_grads = loss_and_grads(model, *batch(), autocast("fp32", "cpu"))
    bf16_loss, bf16_grads = loss_and_grads(model, *batch(), autocast("bf16", "cpu"))
    # the same noise and dropout masks (same seed); only the networks' insides are rounded to bfloat16
    assert bf16_loss.dtype == torch.float32  # the ELBO's sums stay float32
    assert abs(bf16_loss.item() - fp32_loss.item()) <= 5e-3 * abs(fp32_loss.item())
    for name, grad in bf16_grads.items():
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
    flat = lambda grads: torch.cat([g.flatten() for g in grads.values()])  # noqa: E731
    assert (flat(bf16_grads) - flat(fp32_grads)).norm() <= 0.05 * flat(fp32_grads).norm()


def test_fp32_is_no_autocast_and_the_step_context_restores_validation():
    torch.manual_seed(0)
    model = ADGM(num_classes=2, image_size=SIZE, **SMALL_MODEL)
    plain_loss, plain_grads = loss_and_grads(model, *batch(), torch.enable_grad())
    assert pyro.infer.util.is_validation_enabled()
    with step_context("fp32", "cpu", validate=False):
        assert not pyro.infer.util.is_validation_enabled()
        assert not torch.distributions.Distribution._validate_args
    assert pyro.infer.util.is_validation_enabled() and torch.distributions.Distribution._validate_args
    fast_loss, fast_grads = loss_and_grads(model, *batch(), step_context("fp32", "cpu", validate=False))
    assert fast_loss.item() == plain_loss.item()  # the checks only read values: the step is the same
    for name in plain_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], rtol=0, atol=0)


def test_channels_last_changes_the_layout_not_the_maths():
    torch.manual_seed(0)
    model = ADGM(num_classes=2, image_size=SIZE, **SMALL_MODEL)
    other = ADGM(num_classes=2, image_size=SIZE, **SMALL_MODEL)
    other.load_state_dict(model.state_dict())
    to_channels_last(other)
    assert other.classifier.trunk.layers[4].weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.classifier.trunk.layers[4].weight.is_contiguous(memory_format=torch.channels_last)
    # eval mode: no dropout, whose masks a channels-last layout fills in another order (same distribution)
    model.eval(), other.eval()
    x_l, y_l, x_u = batch()
    loss, grads = loss_and_grads(model, x_l, y_l, x_u, torch.enable_grad())
    cl_loss, cl_grads = loss_and_grads(other, to_channels_last(x_l), y_l, to_channels_last(x_u), torch.enable_grad())
    assert cl_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    for name in grads:
        torch.testing.assert_close(cl_grads[name], grads[name], rtol=1e-4, atol=1e-4 * grads[name].abs().max().item())
    assert to_channels_last(x_l, enabled=False) is x_l and to_channels_last(y_l) is y_l


def test_unknown_precision_is_refused():
    assert check_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="precision: expected one of fp32, bf16, got 'fp16'"):
        autocast("fp16", "cpu")
