"""Shapes under enumeration, the batch-norm rule, and the model's queries."""

import pyro
import pytest
import torch
from conftest import SMALL_MODEL
from pyro import poutine

from pyro_adgm.layers import GroupedBatchNorm2d, conv_geometry
from pyro_adgm.model import ADGM

MLP_SIZES = {"a_dim": 4, "z_dim": 4, "hidden": (16,)}


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("image_size", [28, 64])
def test_enumeration_shapes(num_classes, image_size):
    model = ADGM(num_classes=num_classes, image_size=image_size, **SMALL_MODEL)
    x = torch.rand(5, 1, image_size, image_size)
    guide = poutine.trace(poutine.enum(model.guide, first_available_dim=-2)).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide)).get_trace(x)
    k = num_classes
    assert guide.nodes["a"]["value"].shape == (5, 8)
    assert guide.nodes["y"]["value"].shape == (k, 1, k)
    assert guide.nodes["z"]["value"].shape == (k, 5, 8)
    assert model_trace.nodes["x"]["fn"].batch_shape == (k, 5)
    assert model_trace.nodes["a"]["fn"].batch_shape == (k, 5)
    labelled = poutine.trace(model.guide).get_trace(x, torch.arange(5) % k)
    assert labelled.nodes["z"]["value"].shape == (5, 8)


def test_trunks_see_x_once_and_batch_norm_never_sees_enumeration():
    """One unlabelled ELBO evaluation: each trunk on x runs once on the 4 images, and only those trunks hold batch
    norm; the decoder, which sees the K enumerated classes, normalises with group norm (per sample)."""
    from pyro_adgm.layers import ConvTrunk

    model = ADGM(num_classes=3, image_size=28, **SMALL_MODEL).train()
    trunk_calls, batch_norms, group_norms = {}, [], []
    for module in model.modules():
        if isinstance(module, ConvTrunk):
            module.register_forward_hook(lambda m, inputs, out: trunk_calls.setdefault(id(m), []).append(inputs[0].shape))
        elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.register_forward_hook(lambda m, inputs, out: batch_norms.append(inputs[0].shape))
        elif isinstance(module, torch.nn.GroupNorm):
            module.register_forward_hook(lambda m, inputs, out: group_norms.append(inputs[0].shape))
    pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, torch.rand(4, 1, 28, 28))
    assert len(trunk_calls) == 4  # q(a|x), q(y|a,x), q(z|a,y,x), p(a|z,y,x)
    assert all(shapes == [(4, 1, 28, 28)] for shapes in trunk_calls.values())
    assert batch_norms and all(shape[0] == 4 for shape in batch_norms)
    assert group_norms and all(shape[0] == 3 * 4 for shape in group_norms)


def decoder_outputs(model, z, y):
    with torch.no_grad():
        return model.image_decoder(z=z, y=torch.nn.functional.one_hot(y, model.num_classes).float())


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_decoder_output_of_one_image_does_not_depend_on_its_batch(norm):
    """Training mode, dropout off: redrawing the other seven images' z changes nothing for the first image with
    group norm; the per-class batch norm that it replaced makes the first image's p(x|z,y) move."""
    torch.manual_seed(0)
    model = ADGM(num_classes=2, image_size=28, **{**SMALL_MODEL, "dropout": 0.0}, decoder_norm=norm).train()
    z = torch.randn(8, model.z_dim)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    first = decoder_outputs(model, z, y)[0]
    other = torch.cat([z[:1], torch.randn(7, model.z_dim) * 3])
    changed = (decoder_outputs(model, other, y)[0] - first).abs().max().item()
    if norm == "group":
        assert changed < 1e-5
        # the same z under the other class gives another image: y reaches p(x|z,y)
        assert (decoder_outputs(model, z, 1 - y)[0] - first).abs().max().item() > 1e-3
    else:
        assert changed > 1e-2


def test_grouped_batch_norm_equals_batch_norm_per_group():
    torch.manual_seed(0)
    grouped = GroupedBatchNorm2d(3)
    with torch.no_grad():
        grouped.weight.uniform_(0.5, 1.5)
        grouped.bias.uniform_(-1, 1)
    x = torch.randn(2, 6, 3, 5, 5) * torch.tensor([1.0, 4.0]).view(2, 1, 1, 1, 1)
    out = grouped(x.reshape(12, 3, 5, 5), groups=2).reshape(2, 6, 3, 5, 5)
    for g in range(2):
        plain = torch.nn.BatchNorm2d(3)
        plain.load_state_dict({k: v for k, v in grouped.state_dict().items() if k != "num_batches_tracked"}, strict=False)
        plain.running_mean.zero_(), plain.running_var.fill_(1)
        torch.testing.assert_close(out[g], plain(x[g]))
    # running statistics: the mean of the two groups' updates
    assert torch.allclose(grouped.running_mean, 0.1 * x.mean(dim=(1, 3, 4)).mean(0), atol=1e-6)


@pytest.mark.parametrize("size", [28, 64, 225, 256])
def test_decoder_restores_exact_size(size):
    model = ADGM(num_classes=2, image_size=size, **SMALL_MODEL)
    images = model.generate(1, 2)
    assert images.shape == (2, 1, size, size)
    assert images.min() >= 0 and images.max() <= 1
    assert conv_geometry(225) == [225, 113, 57, 29, 15, 8]


def test_classify_returns_probabilities_and_restores_mode():
    model = ADGM(num_classes=3, image_size=28, **SMALL_MODEL).train()
    x = torch.rand(6, 1, 28, 28)
    for samples in (0, 4):
        probs = model.classify(x, num_samples=samples)
        assert probs.shape == (6, 3)
        torch.testing.assert_close(probs.sum(1), torch.ones(6))
    assert model.training


def test_gaussian_scale_can_go_far_below_one():
    model = ADGM(num_classes=2, image_size=28, **SMALL_MODEL)
    raw = torch.full((1, 2, 28, 28), -20.0)
    assert model.likelihood(raw).base_dist.scale.max() < 1e-2


def test_grey_bernoulli_is_the_cross_entropy_of_grey_levels_and_bernoulli_rejects_them():
    raw, x = torch.randn(3, 1, 4, 4), torch.rand(3, 1, 4, 4)
    grey = ADGM(num_classes=2, image_size=28, architecture="mlp", likelihood="bernoulli-grey", **MLP_SIZES).likelihood
    expected = -torch.nn.functional.binary_cross_entropy_with_logits(raw, x, reduction="none").sum((1, 2, 3))
    torch.testing.assert_close(grey(raw).log_prob(x), expected)
    binary = ADGM(num_classes=2, image_size=28, architecture="mlp", likelihood="bernoulli", **MLP_SIZES).likelihood
    with pytest.raises(ValueError):
        binary(raw).log_prob(x)  # grey levels are not a Bernoulli's support
    torch.testing.assert_close(binary(raw).log_prob(x.round()), grey(raw).log_prob(x.round()))


def test_swapped_network_is_used():
    class ConstantClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor([5.0, 0.0]))

        def forward(self, x, a):
            return self.bias.expand(a.shape[:-1] + (2,))

    model = ADGM(num_classes=2, image_size=28, networks={"classifier": ConstantClassifier()}, **SMALL_MODEL)
    probs = model.classify(torch.rand(3, 1, 28, 28))
    assert (probs[:, 0] > 0.99).all()
    pyro.clear_param_store()
    loss = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(model.model, model.guide, torch.rand(3, 1, 28, 28))
    assert torch.isfinite(torch.tensor(loss))
