"""A folder of images, one sub-folder per class, into a prepared dataset.

Layouts::

    DIR/<class>/**/*.{png,jpg,jpeg,dcm}                  splits drawn by --val-fraction/--test-fraction
    DIR/{train,val,test}/<class>/**/*.{png,jpg,jpeg,dcm}  the folders' splits kept

In the second layout a split folder that is absent is drawn from ``train/`` (``val`` with --val-fraction,
``test`` with --test-fraction); one that is present is kept as it is. Every image becomes one grayscale channel
(colour as luminance). The class names are the sub-folder names; the tasks follow
:func:`data_tools.classes.canonical_tasks`. A folder carries no patient information, so each image is its own
patient: the split is by image. Files with other suffixes are ignored and counted in the report.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from data_tools.classes import canonical_tasks
from data_tools.errors import InputError
from data_tools.imaging import IMAGE_SUFFIXES, describe_preprocessing, prepare_image
from data_tools.writer import ImageTask, PrepareResult, default_workers, prepare_images

logger = logging.getLogger(__name__)

SPLIT_FOLDERS = ("train", "val", "test")


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_folder(root: Path) -> tuple[list[ImageTask], list[str], set[str], int]:
    """Find the images: (tasks, class names, split folders present, files ignored).

    Task splits are the split folder's name, except ``train`` images, whose split is left to be drawn.
    Raises :class:`InputError` for a missing folder, no class sub-folders, a mixed layout or no image at all.
    """
    if not root.is_dir():
        raise InputError(f"{root}: folder not found")
    top = _subfolders(root)
    split_dirs = [p for p in top if p.name.lower() in SPLIT_FOLDERS]
    if split_dirs and len(split_dirs) != len(top):
        others = ", ".join(p.name for p in top if p not in split_dirs)
        raise InputError(f"{root}: mixes split folders (train/val/test) with other folders ({others}); use one layout")
    layout = [(p.name.lower(), p) for p in split_dirs] if split_dirs else [("", root)]
    tasks: list[ImageTask] = []
    class_names: set[str] = set()
    ignored = 0
    for split, split_dir in layout:
        classes = _subfolders(split_dir)
        if not classes:
            raise InputError(f"{split_dir}: no class sub-folders (expected {split_dir}/<class>/<images>)")
        for class_dir in classes:
            class_names.add(class_dir.name)
            for path in sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    ignored += 1
                    continue
                key = path.relative_to(root).as_posix()
                tasks.append(
                    ImageTask(key, str(path.resolve()), key, class_dir.name, split="" if split == "train" else split)
                )
    if not tasks:
        raise InputError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its class sub-folders")
    return tasks, sorted(class_names), {s for s, _ in layout if s}, ignored


def prepare_folder(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    size: int = 225,
    square: str = "crop",
    voi_lut: bool = False,
    workers: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    max_failure_fraction: float = 0.05,
    progress: bool = False,
    force: bool = False,
) -> PrepareResult:
    """Prepare every PNG/JPEG/DICOM under ``root``'s class sub-folders at ``size`` x ``size`` into ``out``; a
    finished ``out`` with the same plan is left alone unless ``force`` (see :mod:`data_tools.writer`)."""
    root = Path(root)
    tasks, class_names, split_folders, ignored = list_folder(root)
    tasks_map = canonical_tasks(class_names)
    logger.info("%d images in %d classes (%s)", len(tasks), len(class_names), ", ".join(class_names))
    meta = {
        "source": "folder",
        "folder": {"root": str(root), "split_folders": sorted(split_folders)},
        "class_names": class_names,
        "tasks": tasks_map,
    }
    return prepare_images(
        tasks,
        out,
        loader=functools.partial(prepare_image, size=size, mode=square, voi_lut=voi_lut),
        image_size=size,
        preprocessing=describe_preprocessing(size, square, voi_lut),
        meta=meta,
        workers=default_workers() if workers is None else workers,
        report_extra={"ignored_files": ignored},
        # A split that has its own folder is kept; only the missing ones are drawn from train/.
        val_fraction=0.0 if "val" in split_folders else val_fraction,
        test_fraction=0.0 if "test" in split_folders else test_fraction,
        seed=seed,
        max_failure_fraction=max_failure_fraction,
        progress=progress,
        force=force,
    )
