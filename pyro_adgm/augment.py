"""Online augmentation of training batches: random horizontal flips and random affine transforms.

Parameters are drawn per image, and each image is transformed with probability ``probability`` (else passed on
unchanged). A classifier that only ever sees transformed images is not fitted to untransformed ones, which is
what it is evaluated on: on PneumoniaMNIST, models trained with every image transformed put over a quarter
fewer validation images in the common class than it holds and were 7 to 12 points less accurate on the images
as stored than on one random transform of them (BENCHMARKS.md, "Every training image was transformed"). The
``device`` backend builds one (B, 2, 3) affine matrix per image and warps the whole batch with ``grid_sample`` on the batch's own device, with no per-image Python loop. The ``imgaug``
backend (optional extra ``pyro-adgm[imgaug]``) runs imgaug's Fliplr + Affine on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from data_tools.errors import InputError

BACKENDS = ("device", "imgaug", "none")


@dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random transforms: scale factor, translation (fraction of the side), rotation (degrees);
    ``probability``: the chance that an image is transformed at all."""

    flip: bool = True
    scale: tuple[float, float] = (0.8, 1.2)
    translate: float = 0.05
    rotate: float = 15.0
    probability: float = 0.5

    def __post_init__(self):
        if not 0.0 <= self.probability <= 1.0:
            raise InputError(f"augment probability: expected a number in [0, 1], got {self.probability}")


class DeviceAugment:
    """x: (B, C, S, S) float -> (B, C, S, S), each image flipped/scaled/translated/rotated at random."""

    def __init__(self, settings: AugmentSettings = AugmentSettings()):
        self.settings = settings

    def matrices(self, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The (B, 2, 3) maps from output to input coordinates (normalised to [-1, 1]) that ``affine_grid`` takes."""
        s = self.settings
        u = torch.rand(batch, 5, device=device, dtype=dtype)
        scale = s.scale[0] + (s.scale[1] - s.scale[0]) * u[:, 0]
        angle = math.radians(s.rotate) * (2 * u[:, 1] - 1)
        shift = 2 * s.translate * (2 * u[:, 2:4] - 1)  # normalised coordinates span 2 per side
        flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0).to(dtype) if s.flip else torch.ones_like(scale)
        # forward map: out = R(angle) S F in + shift; grid_sample wants its inverse: in = F S^-1 R(-angle) (out - shift)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        linear = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
        linear = linear * torch.stack([flip, torch.ones_like(flip)], -1)[:, :, None]
        offset = -(linear @ shift[:, :, None])
        return torch.cat([linear, offset], dim=-1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.matrices(x.shape[0], x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.settings.probability >= 1.0:
            return warped
        chosen = torch.rand(x.shape[0], device=x.device) < self.settings.probability
        return torch.where(chosen[:, None, None, None], warped, x)


class ImgaugAugment:
    """The same transforms with imgaug (CPU, uint8); needs ``pip install "pyro-adgm[imgaug]"``."""

    def __init__(self, settings: AugmentSettings = AugmentSettings()):
        try:
            import imgaug.augmenters as iaa
        except Exception as error:  # ImportError, or imgaug 0.4.0 failing on NumPy 2
            raise InputError(f"--augment imgaug: imgaug is not usable ({error}); install it with pip install 'pyro-adgm[imgaug]'") from None
        t = settings.translate
        self.pipeline = iaa.Sometimes(settings.probability, iaa.Sequential([
            iaa.Fliplr(0.5 if settings.flip else 0.0),
            iaa.Affine(scale=settings.scale, translate_percent={"x": (-t, t), "y": (-t, t)}, rotate=(-settings.rotate, settings.rotate)),
        ]))  # fmt: skip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = torch.from_numpy(self.pipeline(images=images)).permute(0, 3, 1, 2)
        return out.to(device=x.device, dtype=x.dtype) / 255


def make_augment(backend: str, settings: AugmentSettings = AugmentSettings()):
    """The augmentation callable for ``backend`` (``device``, ``imgaug`` or ``none``)."""
    if backend == "device":
        return DeviceAugment(settings)
    if backend == "imgaug":
        return ImgaugAugment(settings)
    if backend == "none":
        return lambda x: x
    raise InputError(f"augment: expected one of {', '.join(BACKENDS)}, got {backend!r}")
