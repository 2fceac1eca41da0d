"""Where a run computes: the device named by a setting, and the CPU and warning state a run holds while it trains."""

from __future__ import annotations

import contextlib
import warnings

import torch

from data_tools.errors import InputError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {name!r}: CUDA is not available (use cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None


def denormals_flushed() -> bool:
    """Whether this thread's CPU arithmetic flushes denormal floats to zero (``torch.set_flush_denormal``)."""
    return float(torch.tensor([1e-40]) * 1.0) == 0.0


@contextlib.contextmanager
def training_environment(device: torch.device):
    """Within the block: on a CPU, denormal floats flushed to zero (weights and Adam moments of inputs that never
    fire decay into them, which x86 CPUs process many times slower: a long MNIST run slowed from 66 to 195 s per
    epoch, BENCHMARKS.md, "Denormals"), and TraceEnum_ELBO's warning about programs with nothing to enumerate
    (the labelled batches) silenced. Both are put back as they were afterwards."""
    flush = device.type == "cpu"
    was_flushed = denormals_flushed() if flush else False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites configured for enumeration")
        if flush:
            torch.set_flush_denormal(True)
        try:
            yield
        finally:
            if flush:
                torch.set_flush_denormal(was_flushed)
