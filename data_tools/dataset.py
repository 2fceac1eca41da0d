"""The prepared-dataset format: the one on-disk layout that training and evaluation read.

A prepared dataset is a folder holding

- ``images.npy``: uint8 array (N, S, S), one grayscale image per row, read memory-mapped;
- ``index.csv``: one row per image, in the same order, with columns ``id`` (source file or key),
  ``patient``, ``class_name`` (the source's own class name), ``view`` (empty when unknown) and ``split``
  (``train``, ``val`` or ``test``);
- ``meta.json``: ``format_version``, ``tool_version``, ``source``, ``image_size``, ``preprocessing``,
  ``class_names`` (the source's classes), ``tasks`` (task name -> {task class: [source classes]}) and
  ``counts`` (per split and class).

A folder is written whole into a temporary sibling and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.errors import InputError, reading_text

FORMAT_VERSION = 1
INDEX_COLUMNS = ("id", "patient", "class_name", "view", "split")
SPLITS = ("train", "val", "test")
MAX_SEED = 2**32 - 1  # the largest seed that NumPy's and PyTorch's generators take

#: Task classes shared by every chest X-ray source: a task name maps each task class to source classes.
TASK_CLASSES = {"2class": ("normal", "abnormal"), "3class": ("normal", "opacity", "not-normal")}


def tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("pyro-adgm")
    except Exception:  # not installed (running from a source tree)
        return "unknown"


@dataclass
class IndexTable:
    """Per-image columns of a prepared dataset, each a numpy array of str with N entries."""

    id: np.ndarray
    patient: np.ndarray
    class_name: np.ndarray
    view: np.ndarray
    split: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, str]]) -> IndexTable:
        columns = {name: np.array([str(row.get(name, "") or "") for row in rows], dtype=object) for name in INDEX_COLUMNS}
        return cls(**columns)

    def rows(self) -> list[dict[str, str]]:
        return [{name: str(getattr(self, name)[i]) for name in INDEX_COLUMNS} for i in range(len(self))]

    def __len__(self) -> int:
        return len(self.id)


def check_index_rows(rows: Sequence[Mapping[str, str]], class_names: Sequence[str] | None, where: Path) -> None:
    """Raise an :class:`InputError` naming the line of ``where`` (index.csv) whose split is not train, val or test,
    or whose class is not one of ``class_names`` (meta.json's; not checked when None): such a row would be left
    out of every split or task without a word."""
    known = None if class_names is None else set(class_names)
    for line, row in enumerate(rows, start=2):
        if row.get("split") not in SPLITS:
            raise InputError(f"{where}: line {line}: split {row.get('split')!r}; expected one of {', '.join(SPLITS)}")
        if known is not None and row.get("class_name") not in known:
            raise InputError(f"{where}: line {line}: class {row.get('class_name')!r}; expected one of meta.json's class_names {sorted(known)}")


class PreparedDataset:
    """Images, index and metadata of one prepared dataset, on disk (memory-mapped) or in memory.

    images: uint8 (N, S, S). index: :class:`IndexTable`. meta: the ``meta.json`` dictionary.
    """

    def __init__(self, images: np.ndarray, index: IndexTable, meta: dict, path: Path | None = None):
        if images.ndim != 3 or images.shape[1] != images.shape[2] or images.dtype != np.uint8:
            raise InputError(f"images: expected a uint8 array (N, S, S), got {images.dtype} {tuple(images.shape)}")
        if len(index) != images.shape[0]:
            raise InputError(f"index: {len(index)} rows for {images.shape[0]} images")
        self.images = images
        self.index = index
        self.meta = meta
        self.path = path

    # reading

    @classmethod
    def load(cls, path: str | os.PathLike) -> PreparedDataset:
        """Open a prepared dataset folder; the images stay on disk, memory-mapped."""
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path}: not a prepared dataset folder (run `pyro-adgm prepare ...` first)")
        for name in ("images.npy", "index.csv", "meta.json"):
            if not (path / name).is_file():
                raise InputError(f"{path}: missing {name}; expected a folder written by `pyro-adgm prepare`")
        try:
            meta = json.loads((path / "meta.json").read_text())
        except json.JSONDecodeError as error:
            raise InputError(f"{path / 'meta.json'}: not valid JSON ({error})") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"{path / 'meta.json'}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        with open(path / "index.csv", newline="") as handle, reading_text(path / "index.csv", "the index of a prepared dataset"):
            reader = csv.DictReader(handle)
            missing = [c for c in INDEX_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path / 'index.csv'}: missing column(s) {', '.join(missing)}")
            rows = list(reader)
        check_index_rows(rows, meta.get("class_names"), path / "index.csv")
        images = read_image_array(path / "images.npy", len(rows))
        return cls(images, IndexTable.from_rows(rows), meta, path)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else str(self.meta.get("source", "in-memory dataset"))

    def tasks(self) -> list[str]:
        return sorted(self.meta.get("tasks", {}))

    def task_labels(self, task: str) -> tuple[np.ndarray, tuple[str, ...]]:
        """Integer labels (N,) for ``task`` (-1 where an image's class is outside the task) and its class names."""
        tasks = self.meta.get("tasks", {})
        if task not in tasks:
            raise InputError(f"task {task!r} is not defined for {self.name} (available: {', '.join(self.tasks()) or 'none'})")
        mapping: dict[str, list[str]] = tasks[task]
        class_names = tuple(mapping)
        source_to_label = {source: k for k, name in enumerate(class_names) for source in mapping[name]}
        labels = np.array([source_to_label.get(c, -1) for c in self.index.class_name], dtype=np.int64)
        return labels, class_names

    def split_indices(self, split: str) -> np.ndarray:
        """Row numbers (int64) of the images in ``split``."""
        if split not in SPLITS:
            raise InputError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.index.split == split).astype(np.int64)

    # writing

    def save(self, out: str | os.PathLike) -> Path:
        """Write this dataset to ``out`` atomically (see :func:`write_prepared`)."""
        return write_prepared(out, self.images, self.index, self.meta)


def count_table(index: IndexTable) -> dict[str, dict[str, int]]:
    """Counts per split and class: {split: {class_name: n}}, plus an ``all`` entry."""
    counts: dict[str, dict[str, int]] = {}
    for split, name in zip(index.split, index.class_name):
        for key in (split, "all"):
            counts.setdefault(key, {})
            counts[key][name] = counts[key].get(name, 0) + 1
    return counts


def check_output_folder(out: str | os.PathLike, inputs: Sequence[str | os.PathLike] = ()) -> None:
    """Refuse an output folder that writing a prepared dataset there would destroy (raises :class:`InputError`).

    ``out`` may be new, empty, or a prepared dataset (it holds ``meta.json``; it is replaced whole). A file, a
    folder holding anything else, or a folder that holds any of ``inputs`` (the source's files) is refused.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: a file, not a folder; choose a new folder for the prepared dataset")
    base = os.path.abspath(out)
    for source in inputs:
        path = os.path.abspath(source)
        if path == base or path.startswith(base + os.sep):
            raise InputError(f"--out {out}: holds the input {source}, which writing the dataset would delete; choose a folder outside the inputs")
    if out.is_dir() and not (out / "meta.json").is_file() and any(out.iterdir()):
        raise InputError(f"--out {out}: the folder exists and is not a prepared dataset (no meta.json); choose a new or empty folder")


def publish_dir(tmp: Path, out: Path) -> None:
    """Move a finished folder ``tmp`` to ``out``, replacing an older one, without a moment where ``out`` is partial.
    An ``out`` that is not a prepared dataset is left alone (:func:`check_output_folder`)."""
    check_output_folder(out)
    if out.exists():
        trash = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, trash)
        os.replace(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


def write_index(path: Path, index: IndexTable) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        writer.writerows(index.rows())


def write_prepared(out: str | os.PathLike, images: np.ndarray, index: IndexTable, meta: dict) -> Path:
    """Write a whole prepared dataset into a temporary sibling of ``out``, then rename it into place.

    ``meta`` gains ``format_version``, ``tool_version``, ``image_size`` and ``counts``.
    """
    out = Path(out)
    check_output_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        np.save(tmp / "images.npy", np.ascontiguousarray(images, dtype=np.uint8))
        write_index(tmp / "index.csv", index)
        full_meta = dict(meta)
        full_meta.update(
            format_version=FORMAT_VERSION,
            tool_version=tool_version(),
            image_size=int(images.shape[1]),
            counts=count_table(index),
        )
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2))
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# splits and label subsets


def stratified_split(
    patients: Sequence[str],
    class_names: Sequence[str],
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Assign ``train``/``val``/``test`` per image, by patient, stratified by class, seeded.

    All images of a patient go to one split; a patient's class is that of its first image. Within each
    class, round(fraction * patients) patients go to val and to test, the rest to train.
    Returns an object array of split names (N,).
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise InputError(f"val/test fractions {val_fraction}/{test_fraction}: expected each in [0, 1) and a sum below 1")
    patient_class: dict[str, str] = {}
    for patient, name in zip(patients, class_names):
        patient_class.setdefault(patient, name)
    rng = np.random.default_rng(seed)
    patient_split: dict[str, str] = {}
    for name in sorted(set(patient_class.values())):
        members = sorted(p for p, c in patient_class.items() if c == name)
        order = rng.permutation(len(members))
        n_val = int(round(val_fraction * len(members)))
        n_test = int(round(test_fraction * len(members)))
        for rank, i in enumerate(order):
            patient_split[members[i]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return np.array([patient_split[p] for p in patients], dtype=object)


def labelled_subset(
    labels: np.ndarray, candidates: np.ndarray, labels_per_class: int, class_names: Sequence[str], *, seed: int
) -> np.ndarray:
    """Draw ``labels_per_class`` rows of each class from ``candidates`` (row numbers), seeded.

    labels: int64 (N,) over the whole dataset. Returns sorted int64 row numbers. The same seed gives the
    same subset; asking for more than a class has ends with an :class:`InputError` naming the class.
    """
    if labels_per_class < 1:
        raise InputError(f"labels per class: expected at least 1, got {labels_per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for k, name in enumerate(class_names):
        members = np.sort(candidates[labels[candidates] == k])
        if labels_per_class > len(members):
            raise InputError(
                f"labels per class: {labels_per_class} asked, but class {name!r} has only {len(members)} training images"
            )
        chosen.append(rng.choice(members, size=labels_per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def read_image_array(path: Path, rows: int) -> np.ndarray:
    """``images.npy`` memory-mapped, checked to be a uint8 (rows, S, S) array; one-line InputError otherwise."""
    expected = f"expected a uint8 array of {rows} square images written by `pyro-adgm prepare`"
    try:
        images = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise InputError(f"{path}: not a NumPy image array; {expected}") from None
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[0] != rows or images.shape[1] != images.shape[2]:
        raise InputError(f"{path}: {images.dtype} array of shape {tuple(images.shape)}; {expected}")
    return images
