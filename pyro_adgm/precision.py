"""How a training step runs: its numeric precision, the convolutions' memory layout and Pyro's validation checks.

- ``--precision fp32`` (the default) runs every op in float32; ``bf16`` runs the convolutions and matrix products
  in bfloat16 under :func:`torch.autocast` (on CUDA: H100/H200 tensor cores, half the memory traffic). The networks
  hand float32 back (:mod:`pyro_adgm.networks`), so every log density, the ELBO's sums over the data set and the
  gradients of the weights stay float32; only the inside of the networks is rounded to bfloat16's 8 bits of
  mantissa. No loss scaling is needed (bfloat16 has float32's exponent range).
- :func:`to_channels_last` lays the conv weights and the images out as NHWC, which cuDNN's bf16/TF32 kernels
  prefer; the maths is unchanged (the tensors' logical shapes and values are the same).
- :func:`step_context` is what one training step should run in: the autocast above and, with ``validate=False``,
  none of the argument checks of Pyro's and PyTorch's distributions. Each check (a scale > 0, a value in the
  support, a NaN or infinity in a log density) reads a result back from the device: 120 of the 135 reads of a
  step, each of which makes the host wait for the GPU instead of queueing kernels ahead
  (``benchmarks/results/host_overhead.md``). What the checks would catch (a non-binary image under the Bernoulli
  likelihood, a NaN scale) should then be caught otherwise: by running the first step of a run with
  ``validate=True``, and by the loop's check that the loss is finite.
"""

from __future__ import annotations

import contextlib

import pyro
import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def bf16_supported(device: torch.device | str) -> bool:
    """Whether autocast to bfloat16 is worth it and works on ``device``: CUDA with bf16 (Ampere or later) or a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def autocast(precision: str, device: torch.device | str):
    """A context in which the networks run at ``precision`` on ``device``: nothing for ``"fp32"``, otherwise
    :func:`torch.autocast` to bfloat16 (on any device type autocast supports, the CPU included)."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    device = torch.device(device)
    if device.type == "cuda" and not bf16_supported(device):
        raise ValueError(f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support (use fp32)")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def step_context(precision: str = "fp32", device: torch.device | str = "cpu", *, validate: bool = True):
    """Run one training step (``svi.step``, or the ELBO's forward and backward) in: :func:`autocast` at
    ``precision`` and, unless ``validate``, with Pyro's and PyTorch's distribution checks off (see the module
    docstring); both are restored on exit."""
    with contextlib.ExitStack() as stack:
        if not validate:
            stack.enter_context(pyro.validation_enabled(False))
        stack.enter_context(autocast(precision, device))
        yield


def to_channels_last(value: nn.Module | torch.Tensor, enabled: bool = True):
    """A module with its 4-d weights (the convolutions') in channels-last (NHWC) memory, converted in place, or a
    (B, C, S, S) batch as a channels-last tensor; anything else, or ``enabled=False``, is returned as it is."""
    if not enabled:
        return value
    if isinstance(value, nn.Module):
        return value.to(memory_format=torch.channels_last)
    if torch.is_tensor(value) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value
