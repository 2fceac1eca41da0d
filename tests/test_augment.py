"""Device augmentation: per-image parameters, exact flips, ranges, and the optional imgaug backend."""

import math

import pytest
import torch

from data_tools.errors import InputError
from pyro_adgm.augment import AugmentSettings, DeviceAugment, make_augment


def test_each_image_gets_its_own_transform():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 32, 32).expand(16, 1, 32, 32).contiguous()
    out = DeviceAugment(AugmentSettings(probability=1.0))(x)
    assert out.shape == x.shape
    distinct = {tuple(img.flatten()[:50].tolist()) for img in out}
    assert len(distinct) == 16


def test_flip_only_is_an_exact_mirror():
    torch.manual_seed(1)
    settings = AugmentSettings(flip=True, scale=(1.0, 1.0), translate=0.0, rotate=0.0, probability=1.0)
    x = torch.rand(64, 1, 16, 16)
    out = DeviceAugment(settings)(x)
    flipped = [torch.allclose(o, xi.flip(-1), atol=1e-5) for o, xi in zip(out, x)]
    same = [torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 16 < sum(flipped) < 48  # about half the images are flipped


@pytest.mark.parametrize("probability", [0.0, 0.5, 1.0])
def test_each_image_is_transformed_with_the_given_probability(probability):
    torch.manual_seed(3)
    x = torch.rand(2000, 1, 12, 12)
    out = DeviceAugment(AugmentSettings(probability=probability))(x)
    unchanged = sum(torch.equal(o, xi) for o, xi in zip(out, x)) / len(x)
    # a transformed image is never bit-identical here (scale is drawn from a continuous range)
    assert unchanged == pytest.approx(1.0 - probability, abs=0.04)


def test_augment_probability_outside_0_1_is_refused():
    with pytest.raises(InputError, match="augment probability: expected a number in \\[0, 1\\], got 1.5"):
        AugmentSettings(probability=1.5)


def test_matrix_parameters_stay_in_their_ranges():
    torch.manual_seed(2)
    theta = DeviceAugment(AugmentSettings(flip=False)).matrices(2000, torch.device("cpu"), torch.float64)
    linear = theta[:, :, :2]
    scale = 1 / torch.sqrt(torch.det(linear))  # the inverse map shrinks by 1/scale in each axis
    assert scale.min() >= 0.8 - 1e-6 and scale.max() <= 1.2 + 1e-6
    angle = torch.atan2(linear[:, 0, 1], linear[:, 0, 0])
    assert angle.abs().max() <= math.radians(15) + 1e-6
    shift = -torch.linalg.solve(linear, theta[:, :, 2:]).squeeze(-1)
    assert shift.abs().max() <= 0.1 + 1e-6  # 5% of the side is 0.1 in normalised coordinates


def test_none_backend_is_identity_and_unknown_is_refused():
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(make_augment("none")(x), x)
    with pytest.raises(InputError, match="augment: expected one of"):
        make_augment("fancy")


def test_imgaug_backend_when_installed():
    try:
        import imgaug  # noqa: F401
    except Exception as error:
        with pytest.raises(InputError, match="imgaug is not usable"):
            make_augment("imgaug")
        pytest.skip(f"imgaug not importable here ({type(error).__name__}); the optional extra pins numpy<2")
    out = make_augment("imgaug")(torch.rand(4, 1, 16, 16))
    assert out.shape == (4, 1, 16, 16)
