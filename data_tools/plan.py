"""What makes two ``prepare`` runs the same: the plan fingerprint, and telling whether a finished dataset has it.

A *plan* is everything a prepared dataset's content depends on:

- the format and tool versions, the image size and the preprocessing record;
- the source's metadata (its input paths, class names and tasks) and the split settings (fractions, seed);
- every image to decode: id, path, patient, class, view, fixed split, and the file's size and modification
  time (so a replaced or re-exported image is noticed);
- the images the source left out before decoding (duplicates, no label), and the size and modification time
  of the source's other input files (label CSVs, an ``.npz``).

Not part of it: the number of workers, the progress bar, and ``--max-failure-fraction`` (a limit, checked
against the finished dataset's report instead). ``meta.json`` records the plan's digest as
``plan_fingerprint``; a dataset written before that key existed has no plan and is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

PLAN_KEY = "plan_fingerprint"


def file_stamp(path: str | os.PathLike) -> str:
    """``"<bytes>:<mtime in ns>"`` of a file, or ``"-"`` when it is not a readable file (an in-memory key)."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return "-"
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def plan_fingerprint(settings: dict, rows: Iterable[Iterable[object]]) -> str:
    """A sha256 hex digest of ``settings`` (JSON-serialisable) and of ``rows`` (one sequence of values each)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for row in rows:
        digest.update(b"\n" + json.dumps([str(v) for v in row]).encode())
    return digest.hexdigest()


def read_meta(out: Path) -> dict | None:
    """The ``meta.json`` of ``out``, or None when there is none or it is not a JSON object."""
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_complete(out: Path, meta: dict, *, with_report: bool = True) -> bool:
    """True when ``out`` holds every file of a prepared dataset and its image array has the rows the counts say."""
    names = ("images.npy", "index.csv", "meta.json") + (("report.json",) if with_report else ())
    if not all((out / name).is_file() for name in names):
        return False
    try:
        images = np.load(out / "images.npy", mmap_mode="r")
    except (OSError, ValueError):
        return False
    expected = sum(int(n) for n in meta.get("counts", {}).get("all", {}).values())
    size = meta.get("image_size")
    return images.dtype == np.uint8 and images.ndim == 3 and images.shape == (expected, size, size)


def finished_with_plan(out: Path, fingerprint: str, *, with_report: bool = True) -> dict | None:
    """The meta of ``out`` when it is a complete prepared dataset made with this plan, else None."""
    meta = read_meta(out)
    if meta is None or meta.get(PLAN_KEY) != fingerprint:
        return None
    return meta if is_complete(out, meta, with_report=with_report) else None


def plan_difference(meta: dict, *, image_size: int, preprocessing: object, splits: dict, source: str) -> str:
    """A short phrase naming what differs between a finished dataset's ``meta`` and a new plan."""
    if PLAN_KEY not in meta:
        return "no plan recorded"
    if meta.get("source") != source:
        return f"source {meta.get('source')!r}, now {source!r}"
    if meta.get("image_size") != image_size:
        return f"image size {meta.get('image_size')}, now {image_size}"
    old = meta.get("preprocessing")
    if old != preprocessing:
        if isinstance(old, dict) and isinstance(preprocessing, dict):
            keys = sorted(k for k in set(old) | set(preprocessing) if old.get(k) != preprocessing.get(k))
            return "preprocessing: " + ", ".join(f"{k} {old.get(k)!r}, now {preprocessing.get(k)!r}" for k in keys)
        return "other preprocessing"
    if meta.get("splits") != splits:
        return f"splits {meta.get('splits')}, now {splits}"
    return "other inputs: image files, labels, paths or class mapping"


def unchanged_message(out: Path) -> str:
    """The one line a rerun with the same plan prints."""
    return f"{out}: already prepared with the same plan; nothing to do (--force rebuilds)"


def replaced_message(out: Path, difference: str) -> str:
    """The one line a run prints when ``out`` holds a dataset made with another plan."""
    return f"{out}: holds a dataset prepared with another plan ({difference}); rebuilding it"
