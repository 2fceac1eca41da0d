"""Checkpoint files: written atomically, read with ``torch.load(..., weights_only=True)`` (loading runs no code)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import torch

from data_tools.errors import InputError

CHECKPOINT_VERSION = 1


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


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise InputError(f"{path}: not a readable pyro-adgm checkpoint ({type(error).__name__}: {str(error).splitlines()[0]})") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION or "model_state" not in state:
        raise InputError(f"{path}: not a pyro-adgm checkpoint (version {CHECKPOINT_VERSION} with model_state expected)")
    return state
