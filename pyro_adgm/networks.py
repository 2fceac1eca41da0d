"""The five conditionals of the ADGM as swappable networks.

Every network that reads x runs its trunk on x once per batch and brings a, y and z in through a
:class:`~pyro_adgm.layers.BroadcastHead`, so enumerated y (K, 1, K) and z (K, B, Z) never reach the trunk.

Interfaces (B batch, A/Z latent sizes, K classes, "..." enumeration dims that broadcast):

- q(a|x)      ``aux_encoder(x) -> (loc, scale)``, each (B, A)
- q(y|a,x)    ``classifier(x, a=a) -> logits`` (..., B, K)
- q(z|a,y,x)  ``latent_encoder(x, a=a, y=y) -> (loc, scale)``, each (..., B, Z)
- p(a|z,y,x)  ``aux_decoder(x, z=z, y=y) -> (loc, scale)``, each (..., B, A)
- p(x|z,y)    ``image_decoder(z=z, y=y) -> raw likelihood parameters`` (..., B, P*C, S, S)

x is (B, C, S, S) float in [0, 1]; y is one-hot float (..., B, K). Any module with these call signatures can
replace a default one (a trunk only needs ``forward(x) -> (B, F)`` and an ``out_features`` attribute).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pyro_adgm.layers import BroadcastHead, ConvTrunk, DeconvStack

# trunks


class MLPTrunk(nn.Module):
    """Flattened x through dense layers: (B, C, S, S) -> (B, hidden[-1]); ReLU, batch norm and dropout."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (500, 500), dropout: float = 0.2, batch_norm: bool = True):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d_in = in_features
        for d_out in hidden:
            layers += [nn.Linear(d_in, d_out)]
            if batch_norm:
                layers += [nn.BatchNorm1d(d_out)]
            layers += [nn.ReLU(), nn.Dropout(dropout)]
            d_in = d_out
        self.layers = nn.Sequential(*layers)
        self.out_features = d_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# conditionals that read x


class XConditional(nn.Module):
    """A trunk on x followed by a head over the trunk's features and the other inputs."""

    def __init__(self, trunk: nn.Module, inputs: dict[str, int], out_features: int, hidden: Sequence[int], dropout: float):
        super().__init__()
        self.trunk = trunk
        self.head = BroadcastHead({"x": trunk.out_features, **inputs}, hidden, out_features, dropout)

    def raw(self, x: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        return self.head(x=self.trunk(x), **inputs)


class GaussianNet(XConditional):
    """A diagonal Gaussian over a ``dim``-vector: returns (loc, scale) with scale = softplus(.) + ``min_scale``."""

    def __init__(self, trunk: nn.Module, inputs: dict[str, int], dim: int, *, hidden: Sequence[int] = (256,), dropout: float = 0.2, min_scale: float = 1e-3):
        super().__init__(trunk, inputs, 2 * dim, hidden, dropout)
        self.min_scale = min_scale

    def forward(self, x: torch.Tensor, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_parameters(self.raw(x, **inputs), self.min_scale)


def gaussian_parameters(raw: torch.Tensor, min_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 2D) -> (loc, scale), each (..., D), scale = softplus(.) + ``min_scale``."""
    loc, raw_scale = raw.chunk(2, dim=-1)
    return loc, F.softplus(raw_scale) + min_scale


class GaussianHead(nn.Module):
    """A diagonal Gaussian over a ``dim``-vector from inputs that do not include x:
    ``forward(**inputs) -> (loc, scale)``, each (broadcast shape..., dim), scale = softplus(.) + ``min_scale``."""

    def __init__(self, inputs: dict[str, int], dim: int, *, hidden: Sequence[int] = (256,), dropout: float = 0.2, min_scale: float = 1e-3):
        super().__init__()
        self.head = BroadcastHead(inputs, hidden, 2 * dim, dropout)
        self.min_scale = min_scale

    def forward(self, **inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gaussian_parameters(self.head(**inputs), self.min_scale)


class CategoricalNet(XConditional):
    """Logits over ``num_classes`` classes."""

    def __init__(self, trunk: nn.Module, inputs: dict[str, int], num_classes: int, *, hidden: Sequence[int] = (256,), dropout: float = 0.2):
        super().__init__(trunk, inputs, num_classes, hidden, dropout)

    def forward(self, x: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        return self.raw(x, **inputs)


# p(x|z,y)


def _decoder_inputs(z_dim: int, num_classes: int, a_dim: int) -> dict[str, int]:
    return {"z": z_dim, "y": num_classes, **({"a": a_dim} if a_dim else {})}


def _present(**inputs: torch.Tensor | None) -> dict[str, torch.Tensor]:
    return {name: value for name, value in inputs.items() if value is not None}


class ConvImageDecoder(nn.Module):
    """(z, y[, a]) -> dense head -> transposed convolutions -> (..., B, out_channels, S, S).

    ``a_dim`` > 0 adds a (B, A) as an input, p(x|a,z,y); 0 is the ADGM's p(x|z,y). ``norm``: the
    transposed convolutions' normalisation (:class:`~pyro_adgm.layers.DeconvStack`).
    """

    def __init__(self, image_size: int, out_channels: int, z_dim: int, num_classes: int, *, channels: Sequence[int] = (32, 64, 128, 256, 256), hidden: Sequence[int] = (256,), dropout: float = 0.2, a_dim: int = 0,
                 norm: str = "group"):  # fmt: skip
        super().__init__()
        self.body = DeconvStack(image_size, out_channels, channels, dropout, norm)
        self.head = BroadcastHead(_decoder_inputs(z_dim, num_classes, a_dim), hidden, self.body.in_features, dropout)

    def forward(self, z: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
        return self.body(F.relu(self.head(**_present(z=z, y=y, a=a))))


class MLPImageDecoder(nn.Module):
    """(z, y[, a]) -> dense layers -> (..., B, out_channels, S, S), as in the ADGM paper's MNIST model;
    ``a_dim`` as in :class:`ConvImageDecoder`."""

    def __init__(self, image_size: int, out_channels: int, z_dim: int, num_classes: int, *, hidden: Sequence[int] = (500, 500), dropout: float = 0.2, a_dim: int = 0):
        super().__init__()
        self.shape = (out_channels, image_size, image_size)
        self.head = BroadcastHead(_decoder_inputs(z_dim, num_classes, a_dim), hidden, out_channels * image_size**2, dropout)

    def forward(self, z: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
        h = self.head(**_present(z=z, y=y, a=a))
        return h.view(h.shape[:-1] + self.shape)


# the default sets

def conv_networks(*, image_size: int, num_classes: int, a_dim: int, z_dim: int, out_channels: int, in_channels: int = 1, channels: Sequence[int] = (32, 64, 128, 256, 256), hidden: Sequence[int] = (256,), dropout: float = 0.2,
                  decoder_norm: str = "group") -> dict[str, nn.Module]:  # fmt: skip
    """The five convolutional networks of the chest X-ray model, keyed by their ADGM attribute names. The trunks
    on x use batch norm; p(x|z,y) normalises per sample (``decoder_norm="group"``) since it sees the enumerated y."""

    def trunk() -> ConvTrunk:
        return ConvTrunk(image_size, in_channels, channels, dropout)

    k, a, z = num_classes, a_dim, z_dim
    return {
        "aux_encoder": GaussianNet(trunk(), {}, a, hidden=hidden, dropout=dropout),
        "classifier": CategoricalNet(trunk(), {"a": a}, k, hidden=hidden, dropout=dropout),
        "latent_encoder": GaussianNet(trunk(), {"a": a, "y": k}, z, hidden=hidden, dropout=dropout),
        "aux_decoder": GaussianNet(trunk(), {"z": z, "y": k}, a, hidden=hidden, dropout=dropout),
        "image_decoder": ConvImageDecoder(image_size, out_channels, z, k, channels=channels, hidden=hidden, dropout=dropout,
                                          norm=decoder_norm),
    }  # fmt: skip


def mlp_networks(*, image_size: int, num_classes: int, a_dim: int, z_dim: int, out_channels: int, in_channels: int = 1, hidden: Sequence[int] = (500, 500), dropout: float = 0.0, batch_norm: bool = True) -> dict[str, nn.Module]:
    """MLP networks as in the ADGM paper (two hidden layers of 500 in each conditional); ``batch_norm``: batch
    norm after the first (trunk) layer of the networks that read x."""
    in_features = in_channels * image_size**2
    k, a, z = num_classes, a_dim, z_dim

    def trunk() -> MLPTrunk:
        return MLPTrunk(in_features, hidden[:1], dropout, batch_norm)

    rest = tuple(hidden[1:]) or tuple(hidden[:1])
    return {
        "aux_encoder": GaussianNet(trunk(), {}, a, hidden=rest, dropout=dropout),
        "classifier": CategoricalNet(trunk(), {"a": a}, k, hidden=rest, dropout=dropout),
        "latent_encoder": GaussianNet(trunk(), {"a": a, "y": k}, z, hidden=rest, dropout=dropout),
        "aux_decoder": GaussianNet(trunk(), {"z": z, "y": k}, a, hidden=rest, dropout=dropout),
        "image_decoder": MLPImageDecoder(image_size, out_channels, z, k, hidden=hidden, dropout=dropout),
    }  # fmt: skip
