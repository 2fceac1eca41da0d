"""How a CSV row becomes a class: the three label rules of ``pyro-adgm prepare csv``.

- :class:`ValueClasses`: one column holds a class per row (``label``, RSNA's ``class``). Each value is its own
  class, or ``--class NAME=VALUE[,VALUE...]`` maps values to task classes, several values to one class being
  merged (as ``2class`` merges two RSNA classes). The images keep their CSV value as ``class_name``; the
  mapping becomes the dataset's task. A value outside the mapping (or a blank one) is an error.
- :class:`FindingList`: one column lists a row's findings, ``|``-separated (ChestX-ray14's ``Finding Labels``:
  ``Effusion|Infiltration``, or ``No Finding``). ``--finding F`` makes two classes: rows listing F (positive)
  and rows not listing it (negative).
- :class:`FindingColumns`: one column per finding, 1 / 0 / -1 (uncertain) / blank (CheXpert's ``train.csv``,
  values also written as ``1.0``, ``0.0``, ``-1.0``). ``--finding F`` reads column F.

For both finding rules:

- ``uncertain`` (-1; FindingColumns only): ``drop`` the row (default), count it ``positive`` or ``negative``;
- ``blank`` (FindingColumns only): ``negative`` (default: CheXpert leaves unmentioned findings blank) or ``drop``;
- ``multi_finding``: a positive row that also has another finding is kept as positive (``keep``, default) or
  left out (``drop``, for a class of F alone);
- ``negatives``: ``rest`` (default) counts every row without F as negative; ``no-finding`` only rows without any
  finding (ChestX-ray14 ``No Finding``, CheXpert ``No Finding`` = 1), leaving out rows with other findings.

"Another finding" is, for FindingList, any other entry of the list but ``No Finding``; for FindingColumns, a 1
in any column but F, ``No Finding``, ``Support Devices`` (not a pathology), the CheXpert metadata columns
(``Sex``, ``Age``, ``Frontal/Lateral``, ``AP/PA``) and the columns given other roles (path, patient, split,
view). The classes are ``no-<f>`` and ``<f>`` (F in lower case, spaces as ``-``; with ``no-finding`` negatives,
``no-finding`` and ``<f>``); ``--finding "No Finding"`` gives ``normal`` (listed) and ``abnormal`` (the rest),
the project's ``2class`` task. Every rule answers, per row, a class name or the reason it is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from data_tools.classes import canonical_tasks
from data_tools.errors import InputError

NO_FINDING = "No Finding"
#: CheXpert columns that are neither a finding nor a role column.
CHEXPERT_METADATA = ("Sex", "Age", "Frontal/Lateral", "AP/PA")
NOT_PATHOLOGIES = (NO_FINDING, "Support Devices")
UNCERTAIN_CHOICES = ("drop", "positive", "negative")
BLANK_CHOICES = ("negative", "drop")
MULTI_FINDING_CHOICES = ("keep", "drop")
NEGATIVES_CHOICES = ("rest", "no-finding")
#: Cell values of a finding column, by meaning.
FINDING_VALUES = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": None}


def slug(name: str) -> str:
    """``"Pleural Effusion"`` -> ``"pleural-effusion"``: a class name that is easy to type."""
    return "-".join(name.strip().lower().replace("_", " ").split())


def _shown(values: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


class _UnknownValues:
    """Counts the values of one column that a rule cannot read, to report them all in one line at the end."""

    def __init__(self):
        self.rows: dict[str, int] = {}
        self.first_line: int | None = None

    def add(self, value: str, line: int) -> None:
        self.rows[value] = self.rows.get(value, 0) + 1
        if self.first_line is None:
            self.first_line = line

    def raise_if_any(self, csv_path: Path, column: str, expected: str) -> None:
        if not self.rows:
            return
        values = sorted(self.rows, key=lambda v: (-self.rows[v], v))
        raise InputError(
            f"{csv_path}: column {column!r}: unknown value(s) {_shown(values)} in {sum(self.rows.values())} rows "
            f"(first on line {self.first_line}); expected {expected}"
        )


class _OneColumn:
    """A label rule that reads one column, ``self.column``: its columns, and its index once the header is known."""

    column: str

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def bind(self, header: Sequence[str], csv_path: Path, role_columns: Sequence[str] = ()) -> None:
        self.csv_path = csv_path
        self._index = list(header).index(self.column)


class ValueClasses(_OneColumn):
    """A class per value of ``column``, or ``classes`` (task class -> CSV values) mapping values to classes."""

    def __init__(self, column: str, classes: dict[str, list[str]] | None = None):
        self.column = column
        self.classes = classes
        self.value_to_class = {v: name for name, values in (classes or {}).items() for v in values}
        self._unknown = _UnknownValues()
        self._seen: set[str] = set()

    def label(self, row: Sequence[str], line: int) -> tuple[str | None, str]:
        """(class name, "") for a usable row; (None, reason) for one left out (never here: bad values raise)."""
        value = row[self._index]
        if not value or (self.classes is not None and value not in self.value_to_class):
            self._unknown.add(value, line)
            return None, "unknown"
        self._seen.add(value)
        return value, ""

    def finish(self) -> None:
        if self.classes is not None:
            expected = ", ".join(repr(v) for v in self.value_to_class)
            self._unknown.raise_if_any(self.csv_path, self.column,
                                       f"one of {expected} (map each value with --class NAME=VALUE)")  # fmt: skip
        else:
            self._unknown.raise_if_any(self.csv_path, self.column, "a class name in every row")

    def class_names(self) -> list[str]:
        """The source classes, stored per image: the mapped values in mapping order, else the values sorted."""
        if self.classes is not None:
            return list(self.value_to_class)
        return sorted(self._seen)

    def tasks(self) -> dict[str, dict[str, list[str]]]:
        if self.classes is None:
            return canonical_tasks(self.class_names())
        # Task classes known to the project (normal/abnormal, normal/opacity/not-normal) get the shared tasks.
        by_task_class = canonical_tasks(list(self.classes))
        return {
            task: {name: [v for source in sources for v in self.classes[source]] for name, sources in mapping.items()}
            for task, mapping in by_task_class.items()
        }

    def describe(self) -> dict:
        return {"rule": "value", "column": self.column, "classes": self.classes}


class _FindingRule:
    """What FindingList and FindingColumns share: the options, the class names and the decision."""

    def __init__(self, finding: str, *, multi_finding: str = "keep", negatives: str = "rest"):
        finding = finding.strip()
        if not finding:
            raise InputError("finding (--finding): expected the name of a finding, e.g. Effusion")
        _check_choice("multi-finding (--multi-finding)", multi_finding, MULTI_FINDING_CHOICES)
        _check_choice("negatives (--negatives)", negatives, NEGATIVES_CHOICES)
        self.finding, self.multi_finding, self.negatives = finding, multi_finding, negatives
        self.is_no_finding = slug(finding) == slug(NO_FINDING)
        if self.is_no_finding and negatives == "no-finding":
            raise InputError(f"--negatives no-finding with --finding {finding!r}: the negatives would be empty; use rest")
        if self.is_no_finding:
            self.positive, self.negative = "normal", "abnormal"
        else:
            self.positive = slug(finding)
            self.negative = "no-finding" if negatives == "no-finding" else f"no-{self.positive}"

    def _decide(self, state: int | None, others: bool, no_finding: bool) -> tuple[str | None, str]:
        """state: 1, 0 or -1 (already mapped from uncertain/blank choices); others: another finding present."""
        if state == 1:
            if others and self.multi_finding == "drop" and not self.is_no_finding:
                return None, "multi-finding"
            return self.positive, ""
        if self.negatives == "no-finding" and not no_finding:
            return None, "other-finding"
        return self.negative, ""

    def class_names(self) -> list[str]:
        if self.is_no_finding:
            return [self.positive, self.negative]  # normal first, as in every 2class task
        return [self.negative, self.positive]

    def tasks(self) -> dict[str, dict[str, list[str]]]:
        return canonical_tasks(self.class_names())

    def _describe(self) -> dict:
        return {"finding": self.finding, "positive_class": self.positive, "negative_class": self.negative,
                "multi_finding": self.multi_finding, "negatives": self.negatives}  # fmt: skip


class FindingList(_FindingRule, _OneColumn):
    """``finding`` among the ``separator``-separated entries of ``column`` (ChestX-ray14's layout)."""

    def __init__(self, column: str, finding: str, *, separator: str = "|", multi_finding: str = "keep",
                 negatives: str = "rest"):  # fmt: skip
        super().__init__(finding, multi_finding=multi_finding, negatives=negatives)
        self.column, self.separator = column, separator
        self._seen: set[str] = set()
        self._blank = _UnknownValues()

    def label(self, row: Sequence[str], line: int) -> tuple[str | None, str]:
        entries = {e.strip() for e in row[self._index].split(self.separator)} - {""}
        if not entries:
            self._blank.add("", line)
            return None, "unknown"
        self._seen.update(entries)
        findings = entries - {NO_FINDING}
        if self.is_no_finding:
            return self._decide(1 if not findings else 0, False, not findings)
        present = self.finding in findings
        return self._decide(1 if present else 0, len(findings) > int(present), not findings)

    def finish(self) -> None:
        self._blank.raise_if_any(self.csv_path, self.column, f"findings separated by {self.separator!r}, or {NO_FINDING!r}")
        if self.finding not in self._seen:
            near = [s for s in self._seen if s.lower() == self.finding.lower()]
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise InputError(
                f"{self.csv_path}: column {self.column!r} never lists the finding {self.finding!r} (--finding){hint}; "
                f"it lists {_shown(sorted(self._seen), limit=20)}"
            )

    def describe(self) -> dict:
        return {"rule": "finding-list", "column": self.column, "separator": self.separator, **self._describe()}


class FindingColumns(_FindingRule):
    """Column ``finding`` holds 1 / 0 / -1 / blank per row (CheXpert's layout); see the module docstring."""

    def __init__(self, finding: str, *, uncertain: str = "drop", blank: str = "negative", multi_finding: str = "keep",
                 negatives: str = "rest"):  # fmt: skip
        super().__init__(finding, multi_finding=multi_finding, negatives=negatives)
        _check_choice("uncertain (--uncertain)", uncertain, UNCERTAIN_CHOICES)
        _check_choice("blank (--blank)", blank, BLANK_CHOICES)
        self.uncertain, self.blank = uncertain, blank
        self._unknown = _UnknownValues()

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.finding,)

    def bind(self, header: Sequence[str], csv_path: Path, role_columns: Sequence[str] = ()) -> None:
        self.csv_path = csv_path
        header = list(header)
        self._index = header.index(self.finding)
        skip = {self.finding, *NOT_PATHOLOGIES, *CHEXPERT_METADATA, *role_columns}
        self._others = [k for k, name in enumerate(header) if name not in skip]
        self._no_finding = header.index(NO_FINDING) if NO_FINDING in header and not self.is_no_finding else None

    def label(self, row: Sequence[str], line: int) -> tuple[str | None, str]:
        value = row[self._index]
        if value not in FINDING_VALUES:
            self._unknown.add(value, line)
            return None, "unknown"
        state = FINDING_VALUES[value]
        if state is None:
            if self.blank == "drop":
                return None, "blank"
            state = 0
        elif state == -1:
            if self.uncertain == "drop":
                return None, "uncertain"
            state = 1 if self.uncertain == "positive" else 0
        others = any(FINDING_VALUES.get(row[k]) == 1 for k in self._others)
        if self._no_finding is not None:
            no_finding = FINDING_VALUES.get(row[self._no_finding]) == 1
        else:
            no_finding = not others and state == 0
        return self._decide(state, others, no_finding)

    def finish(self) -> None:
        self._unknown.raise_if_any(self.csv_path, self.finding, "1, 0, -1 (uncertain) or blank")

    def describe(self) -> dict:
        return {"rule": "finding-columns", "column": self.finding, "uncertain": self.uncertain, "blank": self.blank,
                **self._describe()}  # fmt: skip


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InputError(f"{what} {value!r}: expected one of {', '.join(choices)}")


def parse_class_options(options: Sequence[str]) -> dict[str, list[str]] | None:
    """``["normal=Normal", "abnormal=Lung Opacity,No Lung Opacity / Not Normal"]`` -> {class: [values]}.

    A class named twice gets the values of both; a value in two classes is an error. None for no options.
    """
    if not options:
        return None
    classes: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for option in options:
        name, sep, values = option.partition("=")
        name = name.strip()
        parsed = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name or not parsed:
            raise InputError(f"--class {option!r}: expected NAME=VALUE[,VALUE...], e.g. --class abnormal=\"Lung Opacity\"")
        for value in parsed:
            if value in owner and owner[value] != name:
                raise InputError(f"--class: value {value!r} is mapped to two classes, {owner[value]!r} and {name!r}")
            if value not in owner:
                owner[value] = name
                classes.setdefault(name, []).append(value)
    return classes
