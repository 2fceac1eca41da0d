"""Checkpoint files: written atomically, read with ``torch.load(..., weights_only=True)`` (loading runs no code)."""

from __future__ import annotations

import json
import os
import pickle
import uuid
from pathlib import Path

import torch

from data_tools.errors import InputError

CHECKPOINT_VERSION = 2
#: versions that load for evaluate, sample and predict; only CHECKPOINT_VERSION resumes (version 1: the optimiser
#: state of the trainer before objectives, train settings with fields retired at RESUMABLE_AT)
READABLE_VERSIONS = (1, 2)
#: the last commit that resumes a version-1 checkpoint
RESUMABLE_AT = {1: "ec68456"}
#: the last commit that trained and loaded the skip-connected model (SDGM, variant 'sdgm')
RETIRED_VARIANT_COMMIT = "6a673a1"


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the file over ``path``, so ``path`` is either old or whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_checkpoint(path: Path, state: dict) -> None:
    """Save ``state`` (tensors, numbers, strings, lists and dicts only) atomically."""
    atomic_write_bytes(path, lambda tmp: torch.save({"version": CHECKPOINT_VERSION, **state}, tmp))


def load_checkpoint(path: str | os.PathLike, map_location="cpu", *, resume: bool = False) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; never unpickles code. ``resume``: one to train on,
    which must be of :data:`CHECKPOINT_VERSION`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # PyTorch's own message suggests loading the file with code execution allowed; it is not passed on
        raise InputError(f"{path}: not a readable pyro-adgm checkpoint: it holds Python objects that only running "
                         "code could rebuild (expected tensors, numbers, strings, lists and dicts, as "
                         "`pyro-adgm train` writes)") from None  # fmt: skip
    except Exception:
        raise InputError(f"{path}: not a readable pyro-adgm checkpoint (expected a file written by `pyro-adgm train`, "
                         "such as RUN/best.pt or RUN/last.pt)") from None  # fmt: skip
    if isinstance(state, dict) and "model_state" in state and state.get("version") not in READABLE_VERSIONS:
        raise InputError(f"{path}: checkpoint version {state.get('version')}; this pyro-adgm reads versions "
                         f"{', '.join(map(str, READABLE_VERSIONS))}")  # fmt: skip
    if not isinstance(state, dict) or "model_state" not in state:
        raise InputError(f"{path}: not a pyro-adgm checkpoint (version {CHECKPOINT_VERSION} with model_state expected)")
    if resume and state["version"] != CHECKPOINT_VERSION:
        raise InputError(f"{path}: a version-{state['version']} checkpoint, which evaluate, sample and predict read but this "
                         f"version does not train on (version {CHECKPOINT_VERSION}); resume it at commit {RESUMABLE_AT[state['version']]}")  # fmt: skip
    variant = state.get("model_config", {}).pop("variant", "adgm")  # the model's generative structure before the SDGM's retirement
    if variant != "adgm":
        raise InputError(f"{path}: holds the {variant!r} variant, retired after commit {RETIRED_VARIANT_COMMIT}; load it with that version")
    return state
