"""A MedMNIST ``.npz`` file (e.g. PneumoniaMNIST) into a prepared dataset, keeping its train/val/test splits.

The file holds ``{train,val,test}_images`` (uint8 (n, H, W), or (n, H, W, 3) for colour sets, which become
luminance) and ``{train,val,test}_labels`` (n,) or (n, 1). Multi-label sets (labels (n, K > 1), ChestMNIST)
are refused. Class names: ``--class-names`` when given; ``normal,pneumonia`` for a file whose name contains
``pneumoniamnist``; otherwise the label numbers as text. MedMNIST images are small, so each split is read into
memory whole; they are resized only when ``size`` differs from theirs. MedMNIST's authors split by patient.

``test_from_train=N`` draws N training images at random (``seed``) as the test split instead of the file's own:
a test split drawn from the training images' distribution, not used for model selection (``val`` is), for
telling a method's accuracy apart from a shift between the file's splits (PneumoniaMNIST's ``test`` has other
class shares than ``train`` and ``val``). The file's test images are then left out. The file holds no patient
ids, so a drawn test image may share a patient with a training image.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from data_tools.classes import canonical_tasks
from data_tools.dataset import SPLITS
from data_tools.dicom import LUMINANCE
from data_tools.errors import InputError
from data_tools.imaging import to_uint8_square
from data_tools.writer import ImageTask, PrepareResult, prepare_images

logger = logging.getLogger(__name__)

PNEUMONIAMNIST_CLASSES = ("normal", "pneumonia")


class _NpzRows:
    """In-process loader: ``"<file>::<split>:<row>"`` -> (uint8 (size, size), info)."""

    def __init__(self, images: dict[str, np.ndarray], size: int, square: str):
        self.images, self.size, self.square = images, size, square

    def __call__(self, key: str) -> tuple[np.ndarray, dict]:
        split, row = key.rsplit("::", 1)[1].split(":")
        image = self.images[split][int(row)]
        if image.ndim == 3:
            image = image.astype(np.float32) @ LUMINANCE
        if image.shape == (self.size, self.size) and image.dtype == np.uint8:
            out = image
        else:
            scale = 255.0 if image.dtype != np.uint16 else 65535.0
            out = to_uint8_square(image.astype(np.float32) / scale, self.size, mode=self.square)
        return out, {"sha": hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).hexdigest()}


def read_medmnist(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The images and integer labels (n,) per split present in the file; :class:`InputError` on a bad layout."""
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a MedMNIST .npz)")
    try:
        npz = np.load(path)  # allow_pickle stays False: a file of Python objects is refused, not run
        keys = set(npz.files)
    except (OSError, ValueError, EOFError, AttributeError, zipfile.BadZipFile):
        raise InputError(f"{path}: not a readable .npz file (expected a MedMNIST .npz of uint8 image and integer label arrays)") from None
    images, labels = {}, {}
    for split in SPLITS:
        image_key, label_key = f"{split}_images", f"{split}_labels"
        if image_key not in keys and label_key not in keys:
            continue
        if image_key not in keys or label_key not in keys:
            raise InputError(f"{path}: has one of {image_key}/{label_key} without the other")
        try:
            x, y = npz[image_key], npz[label_key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            raise InputError(f"{path}: {image_key} / {label_key} unreadable (expected uint8 image and integer label arrays)") from None
        if y.ndim == 2 and y.shape[1] > 1:
            raise InputError(f"{path}: {label_key} has shape {y.shape}; multi-label MedMNIST sets are not supported")
        y = y.reshape(-1).astype(np.int64)
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] != 3) or len(x) != len(y):
            raise InputError(f"{path}: {image_key} {x.shape} / {label_key} {y.shape}; expected (n, H, W[, 3]) and (n,)")
        images[split], labels[split] = x, y
    if "train" not in images:
        raise InputError(f"{path}: no train_images/train_labels; found keys {', '.join(sorted(keys)) or 'none'}")
    return images, labels


def assign_splits(labels: dict[str, np.ndarray], test_from_train: int = 0, seed: int = 0) -> list[tuple[str, str, int]]:
    """(split in the prepared dataset, split in the file, row in the file) for every image kept, in file order.

    test_from_train: 0 keeps the file's splits; N > 0 puts N training rows, drawn without replacement with
    ``seed``, in the test split and leaves the file's test rows out. :class:`InputError` unless N is 0 or
    between 1 and the number of training images less one.
    """
    n_train = len(labels["train"])
    if test_from_train and not 0 < test_from_train < n_train:
        raise InputError(f"test_from_train: expected a count between 1 and {n_train - 1} (the training images), "
                         f"got {test_from_train}")  # fmt: skip
    drawn = np.zeros(n_train, dtype=bool)
    if test_from_train:
        drawn[np.random.default_rng(seed).choice(n_train, size=test_from_train, replace=False)] = True
    kept = []
    for split in SPLITS:
        if split not in labels or (split == "test" and test_from_train):
            continue
        for row in range(len(labels[split])):
            kept.append(("test" if split == "train" and drawn[row] else split, split, row))
    return kept


def prepare_medmnist(
    npz_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int | None = None,
    square: str = "crop",
    class_names: Sequence[str] | None = None,
    test_from_train: int = 0,
    seed: int = 0,
    max_failure_fraction: float = 0.05,
    progress: bool = False,
    force: bool = False,
) -> PrepareResult:
    """Prepare a MedMNIST file into ``out`` at ``size`` (default: the file's own size), splits kept, or with
    ``test_from_train`` training images drawn (``seed``) as the test split in place of the file's. A finished
    ``out`` with the same plan is left alone unless ``force`` (see :mod:`data_tools.writer`)."""
    npz_path = Path(npz_path)
    images, labels = read_medmnist(npz_path)
    kept = assign_splits(labels, test_from_train, seed)
    native = int(images["train"].shape[1])
    size = native if size is None else size
    present = sorted({int(v) for y in labels.values() for v in np.unique(y)})
    if class_names is None:
        if "pneumoniamnist" in npz_path.name.lower():
            class_names = PNEUMONIAMNIST_CLASSES
        else:
            class_names = [str(k) for k in range(max(present) + 1)]
    class_names = list(class_names)
    if len(set(class_names)) != len(class_names):
        raise InputError(f"class names (--class-names) {','.join(class_names)}: expected distinct names, one per label")
    if present and (present[0] < 0 or present[-1] >= len(class_names)):
        raise InputError(
            f"{npz_path}: labels {present[0]}..{present[-1]} but {len(class_names)} class names "
            f"({', '.join(class_names)})"
        )
    source = str(npz_path.resolve())
    tasks = [
        ImageTask(f"{split}-{row:05d}", f"{source}::{split}:{row}", f"{split}-{row:05d}",
                  class_names[labels[split][row]], split=assigned)
        for assigned, split, row in kept
    ]
    meta = {
        "source": "medmnist",
        "medmnist": {"file": str(npz_path), "native_size": native,
                     "test_from_train": {"images": test_from_train, "seed": seed} if test_from_train else None},
        "class_names": class_names,
        "tasks": canonical_tasks(class_names),
    }
    preprocessing = {
        "size": size,
        "square": square,
        "resize": "none (native size)" if size == native else "Pillow Lanczos (anti-aliased)",
        "intensity": "uint8 as stored; colour to luminance",
        "dtype": "uint8",
    }
    return prepare_images(
        tasks,
        out,
        loader=_NpzRows(images, size, square),
        image_size=size,
        preprocessing=preprocessing,
        meta=meta,
        workers=0,  # the arrays are already in this process; decoding is a copy
        chunk_size=512,
        max_failure_fraction=max_failure_fraction,
        progress=progress,
        inputs=[npz_path],
        force=force,
    )
