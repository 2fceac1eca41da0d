"""Building blocks shared by the networks: conv stacks, per-sample normalisation and broadcasting heads.

Under parallel enumeration of y, tensors that depend on y carry extra leading dimensions, e.g. z arrives as
(K, B, Z). The blocks here keep those dimensions out of the convolutional trunks on x (which run once per batch).
A network whose input includes y normalises each sample on its own (group norm): batch statistics taken per
enumerated class would erase exactly the per-class offsets that the unlabelled term compares, and would make one
image's p(x|z,y) depend on the other images of its batch. Batch norm stays in the trunks, which see x alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# helpers


def conv_geometry(image_size: int, min_size: int = 8) -> list[int]:
    """Spatial sizes of a stride-2 conv trunk: [S, ceil(S/2), ...] until a size <= ``min_size``.

    >>> conv_geometry(225)
    [225, 113, 57, 29, 15, 8]
    """
    if image_size <= min_size:
        raise ValueError(f"image_size: expected more than {min_size} pixels, got {image_size}")
    sizes = [image_size]
    while sizes[-1] > min_size:
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def flatten_leading(x: torch.Tensor, trailing: int) -> tuple[torch.Tensor, torch.Size]:
    """Merge all but the last ``trailing`` dims into one batch dim; return it and the merged shape."""
    lead = x.shape[: x.dim() - trailing]
    return x.reshape((-1,) + tuple(x.shape[x.dim() - trailing :])), lead


def float_like(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x`` in the dtype of ``weight``: a network's output computed in bfloat16 under :func:`torch.autocast` goes
    back to the weights' float32 before it parameterises a distribution; otherwise ``x`` itself (no op)."""
    return x if x.dtype == weight.dtype else x.to(weight.dtype)


# normalisation

DECODER_NORMS = ("group", "batch")  # per-sample group norm, or batch norm with statistics per enumerated class


def check_decoder_norm(norm: str) -> str:
    if norm not in DECODER_NORMS:
        raise ValueError(f"decoder_norm: expected one of {', '.join(DECODER_NORMS)}, got {norm!r}")
    return norm


def group_norm(channels: int, max_groups: int = 8) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with the largest group count <= ``max_groups`` that divides them."""
    groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class GroupedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose statistics are taken separately for each of ``groups`` stacked batches.

    Input (G*B, C, H, W) laid out as G consecutive batches of B images (G is the product of enumeration dims).
    In training each group is normalised by its own batch statistics, exactly as if it had been a batch on its
    own; the running statistics receive the average of the groups' updates. With G = 1 it is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor, groups: int = 1) -> torch.Tensor:  # type: ignore[override]
        if groups == 1 or not self.training:
            return super().forward(x)
        n, c, h, w = x.shape
        stacked = x.reshape(groups, n // groups, c, h, w).transpose(0, 1).reshape(n // groups, groups * c, h, w)
        running_mean = self.running_mean.repeat(groups) if self.running_mean is not None else None
        running_var = self.running_var.repeat(groups) if self.running_var is not None else None
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        momentum = 0.1 if self.momentum is None else self.momentum
        out = F.batch_norm(
            stacked,
            running_mean,
            running_var,
            self.weight.repeat(groups) if self.weight is not None else None,
            self.bias.repeat(groups) if self.bias is not None else None,
            True,
            momentum,
            self.eps,
        )
        if running_mean is not None:
            # replaced, not updated in place: an earlier batch-norm call in this graph saved the old buffers
            self.running_mean = running_mean.detach().view(groups, c).mean(0)
            self.running_var = running_var.detach().view(groups, c).mean(0)
        return out.reshape(n // groups, groups, c, h, w).transpose(0, 1).reshape(n, c, h, w)


# convolutional stacks


class ConvTrunk(nn.Module):
    """Stride-2 3x3 convolutions, each followed by batch norm, ReLU and dropout.

    x: (B, C_in, S, S) -> features (B, F) with F = channels[-1] * s_last**2, s_last from :func:`conv_geometry`.
    """

    def __init__(self, image_size: int, in_channels: int = 1, channels: Sequence[int] = (32, 64, 128, 256, 256), dropout: float = 0.2):
        super().__init__()
        sizes = conv_geometry(image_size)
        depth = len(sizes) - 1
        if len(channels) < depth:
            raise ValueError(f"image_size {image_size}: needs {depth} conv layers but channels has {len(channels)} widths (28 to 256 fit the default)")
        widths = [in_channels] + list(channels[:depth])
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(), nn.Dropout(dropout)]
        self.layers = nn.Sequential(*layers)
        self.out_features = widths[-1] * sizes[-1] ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1)


class DeconvStack(nn.Module):
    """The mirror of :class:`ConvTrunk`: features (..., B, F) -> images (..., B, C_out, S, S).

    Transposed convolutions with output padding chosen so that each layer restores the exact size of the
    matching trunk layer (225 -> 113 -> ... is undone exactly). Every layer but the last is followed by a
    normalisation, ReLU and dropout; the last returns raw parameters. ``norm="group"``: group norm, per sample
    (the default); ``"batch"``: :class:`GroupedBatchNorm2d`, batch statistics per enumerated value (kept to
    measure against).
    """

    def __init__(self, image_size: int, out_channels: int, channels: Sequence[int] = (32, 64, 128, 256, 256), dropout: float = 0.2,
                 norm: str = "group"):  # fmt: skip
        super().__init__()
        self.norm = check_decoder_norm(norm)
        sizes = conv_geometry(image_size)
        depth = len(sizes) - 1
        widths = list(channels[:depth])
        self.start_shape = (widths[-1], sizes[-1], sizes[-1])
        self.in_features = widths[-1] * sizes[-1] ** 2
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        targets = sizes[:-1][::-1]  # sizes to restore, from small to large
        c_in = widths[-1]
        for i, target in enumerate(targets):
            last = i == len(targets) - 1
            c_out = out_channels if last else widths[depth - 2 - i]
            source = sizes[depth - i]
            output_padding = target - (2 * source - 1)
            self.convs.append(nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=output_padding, bias=last))
            if not last:
                self.norms.append(group_norm(c_out) if norm == "group" else GroupedBatchNorm2d(c_out))
            c_in = c_out
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        flat, lead = flatten_leading(h, 1)
        groups = math.prod(lead[:-1]) if len(lead) > 1 else 1
        x = flat.view((-1,) + self.start_shape)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.norms):
                x = self.norms[i](x) if self.norm == "group" else self.norms[i](x, groups)
                x = self.dropout(F.relu(x))
        x = float_like(x, self.convs[-1].weight)  # bf16 under autocast: the likelihood's parameters stay float32
        return x.view(tuple(lead) + tuple(x.shape[1:]))


# heads


class BroadcastHead(nn.Module):
    """An MLP over several inputs whose first layer is a sum of per-input linear maps.

    ``forward(**inputs)`` takes tensors (..., B, D_name) whose leading dims broadcast against each other, so a
    trunk's features (B, F) are combined with enumerated y (K, 1, K) or z (K, B, Z) without repeating the trunk.
    Returns (broadcast shape..., out_features). Hidden layers: ReLU and dropout (no batch norm: the heads see
    enumeration dims).
    """

    def __init__(self, in_features: dict[str, int], hidden: Sequence[int], out_features: int, dropout: float = 0.2):
        super().__init__()
        if not hidden:
            raise ValueError("hidden: expected at least one hidden layer width")
        self.first = nn.ModuleDict({name: nn.Linear(d, hidden[0], bias=False) for name, d in in_features.items()})
        self.first_bias = nn.Parameter(torch.zeros(hidden[0]))
        layers: list[nn.Module] = []
        for d_in, d_out in zip(hidden[:-1], hidden[1:]):
            layers += [nn.Linear(d_in, d_out), nn.ReLU(), nn.Dropout(dropout)]
        self.rest = nn.Sequential(*layers)
        self.out = nn.Linear(hidden[-1], out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        if inputs.keys() != self.first.keys():
            raise ValueError(f"expected inputs {sorted(self.first)}, got {sorted(inputs)}")
        h = None
        for name, value in inputs.items():
            # the bias goes into the first product (one fused op, not a separate sum)
            h = F.linear(value, self.first[name].weight, self.first_bias) if h is None else h + self.first[name](value)
        return float_like(self.out(self.rest(self.dropout(F.relu(h)))), self.out.weight)
