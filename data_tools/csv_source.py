"""An image folder and a label CSV into a prepared dataset: ``pyro-adgm prepare csv``.

Columns have roles; a *layout* gives their defaults, every one can be named instead:

=============  ======================  ==========================  ==============================
role           plain                   chestx-ray14                chexpert
=============  ======================  ==========================  ==============================
path           ``path``                ``Image Index``             ``Path``
label          ``label`` (values)      ``Finding Labels`` (list)   one column per finding
patient        ``patient`` if present  ``Patient ID``              ``patientNNNNN`` in the path
split          ``split`` if present    none                        none
view           ``view`` if present     ``View Position``           ``AP/PA`` (else Frontal/Lateral)
=============  ======================  ==========================  ==============================

- path: relative to the image root (``--images``, default the CSV's folder), found as
  :mod:`data_tools.image_paths` says. A path whose file is not there is counted and listed in the report
  (``images_without_file``), not a failure: a partial download is normal.
- label: one of the rules of :mod:`data_tools.csv_labels` (values mapped by ``--class``, or ``--finding``
  with its options for uncertain, blank and multi-finding rows). A value the rule cannot read stops the run
  with one line naming the CSV, the column and the value(s).
- patient: all images of a patient go to one split. Without a patient, each image is its own patient. A blank
  patient cell makes the image its own patient too (counted in the report).
- split: ``train``, ``val`` or ``test`` (``valid``/``validation`` read as ``val``; any case); blank rows are
  treated as ``train``. ``val`` and ``test`` rows are kept as they are; a split the column never names is drawn
  from the train rows with ``--val-fraction``/``--test-fraction``, by patient, stratified by class. A patient
  in two splits of the column is an error (it would leak between them).
- ``--where COLUMN=VALUE[,VALUE...]`` keeps only the rows with one of these values (repeat it for several
  columns, all must hold), e.g. ``--where Frontal/Lateral=Frontal``.

Rows naming the same path are merged when they agree on the class (RSNA's CSVs have one row per box); when
they do not, the image is a ``conflicting-labels`` failure.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from data_tools.csv_labels import FindingColumns, FindingList, ValueClasses
from data_tools.errors import InputError, reading_text
from data_tools.image_paths import ImageLocator
from data_tools.imaging import describe_preprocessing, prepare_image
from data_tools.writer import Failure, ImageTask, PrepareResult, default_workers, prepare_images

logger = logging.getLogger(__name__)

SPLIT_VALUES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "": "train"}


@dataclass(frozen=True)
class Layout:
    """Default column roles of one CSV layout (see the module docstring); ``optional`` roles apply when present."""

    path: str
    label: str | None = None
    findings: str | None = None
    finding_columns: bool = False
    patient: str | None = None
    patient_pattern: str | None = None
    split: str | None = None
    view: str | None = None
    view_fallback: str | None = None
    optional: tuple[str, ...] = ("view",)


LAYOUTS = {
    "plain": Layout(path="path", label="label", patient="patient", split="split", view="view",
                    optional=("patient", "split", "view")),
    "chestx-ray14": Layout(path="Image Index", findings="Finding Labels", patient="Patient ID", view="View Position"),
    "chexpert": Layout(path="Path", finding_columns=True, patient_pattern=r"patient\d+", view="AP/PA",
                       view_fallback="Frontal/Lateral"),
}  # fmt: skip


@dataclass
class CsvSpec:
    """How to read one CSV; None means the layout's default. See the module docstring and the CLI's help."""

    layout: str = "plain"
    path_column: str | None = None
    suffix: str = ""
    label_column: str | None = None
    classes: dict[str, list[str]] | None = None
    finding: str | None = None
    findings_column: str | None = None
    separator: str = "|"
    uncertain: str | None = None
    blank: str | None = None
    multi_finding: str | None = None
    negatives: str | None = None
    patient_column: str | None = None
    patient_pattern: str | None = None
    split_column: str | None = None
    view_column: str | None = None
    where: dict[str, list[str]] = field(default_factory=dict)


def parse_where(options: Sequence[str]) -> dict[str, list[str]]:
    """``["Frontal/Lateral=Frontal", "AP/PA=AP,PA"]`` -> {column: [values]}; a column named twice gets both."""
    where: dict[str, list[str]] = {}
    for option in options:
        column, sep, values = option.partition("=")
        parsed = [v.strip() for v in values.split(",")]
        if not sep or not column.strip():
            raise InputError(f"--where {option!r}: expected COLUMN=VALUE[,VALUE...], e.g. --where Frontal/Lateral=Frontal")
        where.setdefault(column.strip(), []).extend(parsed)
    return where


@dataclass
class _Row:
    value: str
    class_name: str
    patient: str
    split: str
    view: str
    line: int


@dataclass
class _Columns:
    """The resolved role columns (names; None when unused) and the label rule."""

    path: str
    patient: str | None
    patient_pattern: re.Pattern | None
    split: str | None
    view: str | None
    view_fallback: str | None
    rule: ValueClasses | FindingList | FindingColumns

    def roles(self) -> dict:
        return {"path": self.path, "patient": self.patient, "split": self.split, "view": self.view}


def _label_rule(spec: CsvSpec, layout: Layout, header: list[str]):
    finding_options = {"--uncertain": spec.uncertain, "--blank": spec.blank, "--multi-finding": spec.multi_finding,
                       "--negatives": spec.negatives, "--findings-column": spec.findings_column}  # fmt: skip
    if spec.finding is None:
        given = [name for name, value in finding_options.items() if value is not None]
        if given:
            raise InputError(f"{', '.join(given)}: only used with --finding (the finding to classify)")
        if layout.label is None:
            raise InputError(f"the {spec.layout} layout needs --finding (a finding to classify, e.g. --finding Effusion; "
                             f"--finding \"No Finding\" gives normal vs abnormal)")  # fmt: skip
        return ValueClasses(spec.label_column or layout.label, spec.classes)
    if spec.classes or spec.label_column:
        raise InputError("--class and --label-column are for a label column of class values; --finding reads findings")
    multi, negatives = spec.multi_finding or "keep", spec.negatives or "rest"
    if spec.findings_column or (layout.findings and not layout.finding_columns):
        if spec.uncertain is not None or spec.blank is not None:
            raise InputError("--uncertain and --blank apply to a column per finding (chexpert layout), not a findings list")
        return FindingList(spec.findings_column or layout.findings, spec.finding, separator=spec.separator,
                           multi_finding=multi, negatives=negatives)  # fmt: skip
    if not layout.finding_columns and spec.finding not in header:
        raise InputError(f"--finding {spec.finding!r}: not a column of the CSV; name the column listing the findings "
                         f"with --findings-column, or use --layout chestx-ray14 or chexpert")  # fmt: skip
    return FindingColumns(spec.finding, uncertain=spec.uncertain or "drop", blank=spec.blank or "negative",
                          multi_finding=multi, negatives=negatives)  # fmt: skip


def _resolve_columns(spec: CsvSpec, csv_path: Path, header: list[str]) -> _Columns:
    if spec.layout not in LAYOUTS:
        raise InputError(f"layout (--layout) {spec.layout!r}: expected one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[spec.layout]

    def pick(role: str, given: str | None, default: str | None) -> str | None:
        if given is not None:
            return given or None  # an empty name turns the role off
        if default is not None and role in layout.optional and default not in header:
            return None
        return default

    path = pick("path", spec.path_column, layout.path)
    patient = pick("patient", spec.patient_column, layout.patient)
    split = pick("split", spec.split_column, layout.split)
    view = pick("view", spec.view_column, layout.view)
    pattern_text = spec.patient_pattern if spec.patient_pattern is not None else (None if patient else layout.patient_pattern)
    try:
        pattern = re.compile(pattern_text) if pattern_text else None
    except re.error as error:
        raise InputError(f"--patient-pattern {pattern_text!r}: not a regular expression ({error})") from None
    rule = _label_rule(spec, layout, header)
    needed = [("--path-column", path), ("--patient-column", patient), ("--split-column", split),
              ("--view-column", view)] + [(f"--where {c}=...", c) for c in spec.where]  # fmt: skip
    needed += [("--label-column/--finding/--findings-column", c) for c in rule.columns]
    missing = [(option, name) for option, name in needed if name is not None and name not in header]
    if missing:
        names = ", ".join(f"{name!r} ({option})" for option, name in missing)
        raise InputError(f"{csv_path}: no column {names}; found {', '.join(header) or 'none'} (layout {spec.layout})")
    fallback = layout.view_fallback if layout.view_fallback in header and spec.view_column is None else None
    roles = [c for c in (path, patient, split, view, fallback) if c]
    rule.bind(header, csv_path, roles)
    return _Columns(path, patient, pattern, split, view, fallback, rule)


@dataclass
class _Read:
    rows: list[_Row]
    read: int = 0
    filtered: int = 0
    left_out: dict[str, int] = field(default_factory=dict)
    without_patient: int = 0


def _read_rows(csv_path: Path, spec: CsvSpec) -> tuple[_Columns, _Read]:
    """One pass over the CSV: every usable row, and the counts of the others."""
    if not csv_path.is_file():
        raise InputError(f"{csv_path}: file not found (expected a label CSV)")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle, reading_text(csv_path, "a label CSV"):
        reader = csv.reader(handle)
        header = [c.strip() for c in next(reader, [])]
        if not header:
            raise InputError(f"{csv_path}: empty file (expected a header row naming the columns)")
        columns = _resolve_columns(spec, csv_path, header)
        at = {name: k for k, name in enumerate(header)}
        where = [(at[c], set(values)) for c, values in spec.where.items()]
        bad_splits: dict[str, int] = {}
        first_bad_split = 0
        result = _Read(rows=[])
        for raw in reader:
            if not any(cell.strip() for cell in raw):
                continue
            line = reader.line_num
            row = [c.strip() for c in raw] + [""] * (len(header) - len(raw))
            result.read += 1
            if any(row[k] not in values for k, values in where):
                result.filtered += 1
                continue
            class_name, reason = columns.rule.label(row, line)
            value = row[at[columns.path]]
            if class_name is None or not value:
                reason = reason or "blank-path"
                if reason != "unknown":
                    result.left_out[reason] = result.left_out.get(reason, 0) + 1
                continue
            patient = row[at[columns.patient]] if columns.patient else ""
            if not patient and columns.patient_pattern is not None:
                match = columns.patient_pattern.search(value)
                patient = (match.group(1) if match.groups() else match.group(0)) if match else ""
            if not patient:
                if columns.patient or columns.patient_pattern is not None:
                    result.without_patient += 1
                patient = value
            split = ""
            if columns.split:
                cell = row[at[columns.split]]
                split = SPLIT_VALUES.get(cell.lower(), "?")
                if split == "?":
                    bad_splits[cell] = bad_splits.get(cell, 0) + 1
                    first_bad_split = first_bad_split or line
            view = row[at[columns.view]] if columns.view else ""
            if not view and columns.view_fallback:
                view = row[at[columns.view_fallback]]
            result.rows.append(_Row(value, class_name, patient, split, view, line))
    columns.rule.finish()
    if bad_splits:
        values = ", ".join(repr(v) for v in sorted(bad_splits, key=lambda v: -bad_splits[v])[:5])
        raise InputError(f"{csv_path}: column {columns.split!r}: unknown split value(s) {values} in "
                         f"{sum(bad_splits.values())} rows (first on line {first_bad_split}); expected train, val or test")  # fmt: skip
    return columns, result


def _merge_duplicates(rows: list[_Row], csv_path: Path) -> tuple[list[_Row], list[Failure], int]:
    """One row per path value: agreeing duplicates merged (counted), disagreeing ones failures."""
    by_value: dict[str, list[_Row]] = {}
    for row in rows:
        by_value.setdefault(row.value, []).append(row)
    kept, failures, merged = [], [], 0
    for value, group in by_value.items():
        classes = list(dict.fromkeys(r.class_name for r in group))
        if len(classes) > 1:
            lines = ", ".join(str(r.line) for r in group[:4])
            failures.append(Failure(value, value, "conflicting-labels",
                                    f"{csv_path}: lines {lines}: {value} has classes {', '.join(map(repr, classes))}"))  # fmt: skip
            continue
        kept.append(group[0])
        merged += len(group) - 1
    return kept, failures, merged


def _check_patient_splits(rows: list[_Row], csv_path: Path, split_column: str | None) -> None:
    splits: dict[str, set[str]] = {}
    for row in rows:
        splits.setdefault(row.patient, set()).add(row.split)
    leaking = sorted(p for p, s in splits.items() if len(s) > 1)
    if leaking:
        first = leaking[0]
        raise InputError(
            f"{csv_path}: column {split_column!r} puts {len(leaking)} patient(s) in more than one split "
            f"(first: {first} in {', '.join(sorted(splits[first]))}); expected each patient in one split"
        )


def prepare_csv(
    csv_path: str | os.PathLike,
    out: str | os.PathLike,
    spec: CsvSpec | None = None,
    *,
    images: str | os.PathLike | None = None,
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
    """Prepare the images a CSV names, at ``size`` x ``size``, into ``out`` (see the module docstring).

    All checks of the CSV happen before any image is decoded; a finished ``out`` with the same plan is left
    alone unless ``force`` (see :mod:`data_tools.writer`).
    """
    csv_path = Path(csv_path)
    spec = spec or CsvSpec()
    root = Path(images) if images is not None else csv_path.parent
    if not root.is_dir():
        raise InputError(f"{root}: image folder not found (--images: the folder the CSV's paths are relative to)")
    columns, read = _read_rows(csv_path, spec)
    rows, failures, merged = _merge_duplicates(read.rows, csv_path)
    if columns.split:
        _check_patient_splits(rows, csv_path, columns.split)
    if not rows:
        left_out = ", ".join(f"{n} {reason}" for reason, n in sorted(read.left_out.items())) or "none"
        raise InputError(f"{csv_path}: no usable row ({read.read} read, {read.filtered} filtered out by --where, "
                         f"left out: {left_out})")  # fmt: skip

    locator = ImageLocator(root, spec.suffix)
    tasks, without_file = [], []
    for row in rows:
        path, why = locator.locate(row.value)
        if path is None and why == "missing":
            without_file.append(row.value)
        elif path is None:
            failures.append(Failure(row.value, row.value, "ambiguous-path", f"{csv_path}: line {row.line}: {row.value} is {why}"))
        else:
            split = "" if row.split == "train" else row.split
            tasks.append(ImageTask(row.value, str(path.resolve()), row.patient, row.class_name, row.view, split))
    if not tasks and without_file:
        raise InputError(f"{csv_path}: none of the {len(without_file)} images of column {columns.path!r} is under {root} "
                         f"(first: {root / without_file[0]}); expected paths relative to --images")  # fmt: skip
    warnings = []
    if without_file:
        warnings.append(f"{len(without_file)} of {len(rows)} images named in {csv_path.name} have no file under {root} "
                        f"(first: {without_file[0]}); listed in the report as images_without_file")  # fmt: skip
    for warning in warnings:
        logger.warning("%s", warning)
    fixed = {t.split for t in tasks}
    logger.info("%d images from %s, %d without a file", len(tasks), csv_path, len(without_file))

    meta = {
        "source": "csv",
        "csv": {"file": str(csv_path), "images": str(root), "layout": spec.layout, "columns": columns.roles(),
                "patient_pattern": columns.patient_pattern.pattern if columns.patient_pattern else None,
                "suffix": spec.suffix, "where": spec.where, "labels": columns.rule.describe()},
        "class_names": columns.rule.class_names(),
        "tasks": columns.rule.tasks(),
    }  # fmt: skip
    report_extra = {
        "warnings": warnings,
        "csv": {"file": str(csv_path), "rows_read": read.read, "rows_filtered_out": read.filtered,
                "rows_left_out": dict(sorted(read.left_out.items())), "duplicate_rows_merged": merged,
                "rows_without_patient": read.without_patient},
        "images_without_file": {"count": len(without_file), "paths": without_file},
    }  # fmt: skip
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
        # A split the CSV names is kept; only the ones it never names are drawn from its train rows.
        val_fraction=0.0 if "val" in fixed else val_fraction,
        test_fraction=0.0 if "test" in fixed else test_fraction,
        seed=seed,
        max_failure_fraction=max_failure_fraction,
        progress=progress,
        inputs=[csv_path],
        force=force,
    )
