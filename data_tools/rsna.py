"""The 2018 RSNA Pneumonia Detection Challenge, as Kaggle ships it, into a prepared dataset.

Inputs (all under ``--root`` by default, each can be given on its own):

- ``stage_2_train_images/*.{dcm,png,jpg,jpeg}``: one image per patient (searched recursively), the file stem
  is the patientId: the Kaggle DICOMs, or PNG/JPEG conversions of them. A folder mixing formats gets a warning
  in the report with the count per format; a patientId found in several files (in two formats, or twice in
  one) keeps one file, DICOM before PNG before JPEG, then the first path in sorted order, and every other file
  is a ``duplicate`` failure listed by patientId;
- ``stage_2_train_labels.csv``: ``patientId,x,y,width,height,Target``, one row per box (Target 1 = opacity);
- ``stage_2_detailed_class_info.csv``: ``patientId,class``, one row per box, class one of :data:`RSNA_CLASSES`.

Both CSVs become one label per patient. The class CSV gives the label; ``Target`` is checked against it
(``Lung Opacity`` exactly when Target is 1) and every disagreement is reported but kept with the class CSV's
label. A patient whose class rows disagree among themselves is left out and reported. Label rows without an
image are counted in the report (they are not failures: a partial download is normal); images without a
label row, duplicate patientIds and unreadable files are failures.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from data_tools.errors import InputError, reading_text
from data_tools.imaging import describe_preprocessing, prepare_image
from data_tools.writer import Failure, ImageTask, PrepareResult, default_workers, prepare_images

logger = logging.getLogger(__name__)

IMAGES_DIR = "stage_2_train_images"
LABELS_CSV = "stage_2_train_labels.csv"
CLASS_CSV = "stage_2_detailed_class_info.csv"

NORMAL, OPACITY, NOT_NORMAL = "Normal", "Lung Opacity", "No Lung Opacity / Not Normal"
RSNA_CLASSES = (NORMAL, OPACITY, NOT_NORMAL)
RSNA_TASKS = {
    "2class": {"normal": [NORMAL], "abnormal": [OPACITY, NOT_NORMAL]},
    "3class": {"normal": [NORMAL], "opacity": [OPACITY], "not-normal": [NOT_NORMAL]},
}


@dataclass
class RsnaLabels:
    """One class per patient, and what was odd about the CSVs (each entry: a list of patientIds or records)."""

    classes: dict[str, str]
    disagreements: list[dict] = field(default_factory=list)  # class vs Target
    conflicting: list[dict] = field(default_factory=list)  # one patient, several classes
    without_class_row: list[str] = field(default_factory=list)
    without_target_row: list[str] = field(default_factory=list)


def _read_csv(path: Path, required: tuple[str, ...], expected_layout: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected {expected_layout})")
    with open(path, newline="", encoding="utf-8-sig") as handle, reading_text(path, expected_layout):
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in required if c not in columns]
        if missing:
            found = ", ".join(columns) if columns else "none (empty file)"
            raise InputError(
                f"{path}: missing column(s) {', '.join(missing)}; found {found} (expected {expected_layout})"
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    if not rows:
        raise InputError(f"{path}: no rows (expected {expected_layout})")
    return rows


def read_labels(labels_csv: Path, class_csv: Path) -> RsnaLabels:
    """Read both CSVs (one row per box) into one class per patient; raise :class:`InputError` on a bad layout."""
    target_rows = _read_csv(labels_csv, ("patientId", "Target"), "patientId,x,y,width,height,Target")
    class_rows = _read_csv(class_csv, ("patientId", "class"), "patientId,class")

    targets: dict[str, set[int]] = {}
    for line, row in enumerate(target_rows, start=2):
        if row["Target"] not in ("0", "1"):
            raise InputError(f"{labels_csv}: line {line}: Target {row['Target']!r}; expected 0 or 1")
        targets.setdefault(row["patientId"], set()).add(int(row["Target"]))
    classes_seen: dict[str, list[str]] = {}
    for line, row in enumerate(class_rows, start=2):
        if row["class"] not in RSNA_CLASSES:
            raise InputError(
                f"{class_csv}: line {line}: class {row['class']!r}; "
                f"expected one of {', '.join(map(repr, RSNA_CLASSES))}"
            )
        names = classes_seen.setdefault(row["patientId"], [])
        if row["class"] not in names:
            names.append(row["class"])

    labels = RsnaLabels(classes={})
    for patient, names in classes_seen.items():
        if len(names) > 1:
            labels.conflicting.append({"patient": patient, "classes": names})
            continue
        labels.classes[patient] = names[0]
        if patient not in targets:
            labels.without_target_row.append(patient)
            continue
        target = targets[patient]
        if len(target) > 1 or (names[0] == OPACITY) != (target == {1}):
            labels.disagreements.append({"patient": patient, "class": names[0], "target": sorted(target)})
    labels.without_class_row = sorted(set(targets) - set(classes_seen))
    return labels


#: Image formats by suffix, in the order of preference when one patientId has files in several.
FORMAT_BY_SUFFIX = {".dcm": "DICOM", ".dicom": "DICOM", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
FORMAT_PREFERENCE = ("DICOM", "PNG", "JPEG")


@dataclass
class ImageListing:
    """The image files of an RSNA image folder.

    images: patientId -> the file kept; duplicates: a failure per other file of a patientId; ignored: the
    number of files with other suffixes; formats: format name -> number of files found (duplicates included).
    """

    images: dict[str, Path]
    duplicates: list[Failure]
    ignored: int
    formats: dict[str, int]

    def mixed_formats_warning(self, images_dir: Path) -> str | None:
        """One line naming the count per format when the folder holds more than one format, else None."""
        if len(self.formats) < 2:
            return None
        counts = ", ".join(f"{n} {name}" for name, n in self.formats.items())
        return f"{images_dir}: mixes image formats ({counts}); each patientId is read from one file"


def list_images(images_dir: Path) -> ImageListing:
    """The DICOM/PNG/JPEG files under ``images_dir`` by patientId (file stem); see the module docstring for
    duplicates. Raises :class:`InputError` when the folder is missing or holds no image file."""
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: image folder not found (expected {IMAGES_DIR}/*.dcm or *.png)")
    by_patient: dict[str, list[Path]] = {}
    formats: dict[str, int] = {}
    ignored = 0
    for path in sorted(p for p in images_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        kind = FORMAT_BY_SUFFIX.get(path.suffix.lower())
        if kind is None:
            ignored += 1
            continue
        formats[kind] = formats.get(kind, 0) + 1
        by_patient.setdefault(path.stem, []).append(path)
    if not by_patient:
        suffixes = ", ".join(FORMAT_BY_SUFFIX)
        raise InputError(f"{images_dir}: no image files ({suffixes}) (expected the Kaggle {IMAGES_DIR} folder)")
    images: dict[str, Path] = {}
    duplicates: list[Failure] = []
    for patient, paths in by_patient.items():
        # sorted() is stable: within a format the first path in sorted order is kept.
        ranked = sorted(paths, key=lambda p: FORMAT_PREFERENCE.index(FORMAT_BY_SUFFIX[p.suffix.lower()]))
        kept = images[patient] = ranked[0]
        for other in ranked[1:]:
            duplicates.append(
                Failure(patient, str(other), "duplicate", f"{other}: patientId {patient} already read from {kept}")
            )
    duplicates.sort(key=lambda f: (f.id, f.path))
    ordered = {name: formats[name] for name in FORMAT_PREFERENCE if name in formats}
    return ImageListing(images, duplicates, ignored, ordered)


def _listed(patients: list[str]) -> dict:
    return {"count": len(patients), "patients": patients}


def prepare_rsna(
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    images_dir: str | os.PathLike | None = None,
    labels_csv: str | os.PathLike | None = None,
    class_csv: str | os.PathLike | None = None,
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
    """Prepare the RSNA training images at ``size`` x ``size`` into ``out``; paths default to the Kaggle
    layout under ``root``. All input checks happen before any image is decoded; a finished ``out`` with the
    same plan is left alone unless ``force`` (see :mod:`data_tools.writer`)."""
    if root is None and None in (images_dir, labels_csv, class_csv):
        raise InputError("give root (--root), or all of images_dir, labels_csv and class_csv (--images, --labels-csv, --class-csv)")
    if root is not None and not Path(root).is_dir():
        raise InputError(f"{root}: no such folder (expected the RSNA download folder, holding {LABELS_CSV})")
    base = Path(root) if root is not None else Path(".")
    images_dir = Path(images_dir) if images_dir is not None else base / IMAGES_DIR
    labels_csv = Path(labels_csv) if labels_csv is not None else base / LABELS_CSV
    class_csv = Path(class_csv) if class_csv is not None else base / CLASS_CSV

    labels = read_labels(labels_csv, class_csv)
    listing = list_images(images_dir)
    images, failures = listing.images, list(listing.duplicates)
    warnings = [w for w in [listing.mixed_formats_warning(images_dir)] if w]
    for warning in warnings:
        logger.warning("%s", warning)

    conflicting = {c["patient"] for c in labels.conflicting}
    tasks = []
    for patient, path in sorted(images.items()):
        if patient in labels.classes:
            tasks.append(ImageTask(patient, str(path.resolve()), patient, labels.classes[patient]))
        else:
            reason = "its class rows disagree" if patient in conflicting else f"no row in {class_csv.name}"
            failures.append(Failure(patient, str(path), "no-label-row", f"{path}: no usable label ({reason})"))
    without_image = sorted(set(labels.classes) - set(images))
    if labels.disagreements:
        logger.warning("%d patients: class and Target disagree (kept with the class); listed in the report",
                       len(labels.disagreements))
    logger.info("%d images with labels, %d label patients without an image", len(tasks), len(without_image))

    meta = {
        "source": "rsna",
        "rsna": {"images_dir": str(images_dir), "labels_csv": str(labels_csv), "class_csv": str(class_csv)},
        "class_names": list(RSNA_CLASSES),
        "tasks": RSNA_TASKS,
    }
    report_extra = {
        "warnings": warnings,
        "image_formats": listing.formats,
        "ignored_files": listing.ignored,
        "labels": {
            "labels_csv": str(labels_csv),
            "class_csv": str(class_csv),
            "patients_with_label": len(labels.classes),
            "patients_without_image": _listed(without_image),
            "class_target_disagreements": {"count": len(labels.disagreements), "patients": labels.disagreements},
            "conflicting_class_rows": {"count": len(labels.conflicting), "patients": labels.conflicting},
            "patients_without_class_row": _listed(labels.without_class_row),
            "patients_without_target_row": _listed(labels.without_target_row),
        },
    }
    return prepare_images(
        tasks,
        out,
        loader=functools.partial(prepare_image, size=size, mode=square, voi_lut=voi_lut),
        image_size=size,
        preprocessing=describe_preprocessing(size, square, voi_lut),
        meta=meta,
        workers=default_workers() if workers is None else workers,
        early_failures=failures,
        report_extra=report_extra,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        max_failure_fraction=max_failure_fraction,
        progress=progress,
        inputs=[labels_csv, class_csv],
        force=force,
    )
