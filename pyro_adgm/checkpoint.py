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
    except OSError as error:  # named by the file asked for, not by its temporary sibling
        raise OSError(error.errno, f"cannot write ({error.strerror or type(error).__name__})", str(path)) from None
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


def check_run_contents(state: dict, path: str | os.PathLike) -> dict:
    """``state`` if it holds what a run's checkpoint holds besides its weights (the model's and the training's
    settings, the data's description, the class names, one per class), else an :class:`InputError` naming ``path``."""
    for key, kind in (("model_config", dict), ("train_config", dict), ("data", dict), ("class_names", list)):
        if not isinstance(state.get(key), kind):
            raise InputError(f"{path}: not a pyro-adgm checkpoint ({key} missing or not a {kind.__name__})")
    names, classes = state["class_names"], state["model_config"].get("num_classes", len(state["class_names"]))
    if not all(isinstance(name, str) for name in names) or len(names) != classes:
        raise InputError(f"{path}: not a pyro-adgm checkpoint (class_names {names!r} for a model of {classes} classes)")
    return state


def load_checkpoint(path: str | os.PathLike, map_location="cpu", *, resume: bool = False) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; never unpickles code. ``resume``: one to train on,
    which must be of :data:`CHECKPOINT_VERSION`."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: a folder; expected a checkpoint file such as {path / 'best.pt'}")
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
    variant = state.get("model_config", {}).pop("variant", "adgm") if isinstance(state.get("model_config"), dict) else "adgm"  # the model's generative structure before the SDGM's retirement
    if variant != "adgm":
        raise InputError(f"{path}: holds the {variant!r} variant, retired after commit {RETIRED_VARIANT_COMMIT}; load it with that version")
    return state
