"""Task mappings for sources whose class names are free text (folder names, MedMNIST labels).

Recognised sets of names (compared in lower case, with ``_`` and spaces read as ``-``) get the project's
shared tasks, so that a model trained on one source can be compared with another:

- ``normal``, ``opacity``, ``not-normal``: ``2class`` (normal vs the other two) and ``3class``;
- ``normal``, ``abnormal``: ``2class``;
- ``normal``, ``pneumonia`` (PneumoniaMNIST, the Kermany et al. folders): ``2class`` with pneumonia as abnormal.

Any other set of K names gets one task ``f"{K}class"`` that maps each name to itself.
"""

from __future__ import annotations

from collections.abc import Sequence


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def canonical_tasks(class_names: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """task name -> {task class: [source class names]} for these source class names."""
    by_norm = {_norm(name): name for name in class_names}
    keys = set(by_norm)
    if len(by_norm) == len(class_names):
        if keys == {"normal", "opacity", "not-normal"}:
            normal, opacity, other = by_norm["normal"], by_norm["opacity"], by_norm["not-normal"]
            return {
                "2class": {"normal": [normal], "abnormal": [opacity, other]},
                "3class": {"normal": [normal], "opacity": [opacity], "not-normal": [other]},
            }
        for abnormal in ("abnormal", "pneumonia"):
            if keys == {"normal", abnormal}:
                return {"2class": {"normal": [by_norm["normal"]], "abnormal": [by_norm[abnormal]]}}
    return {f"{len(class_names)}class": {name: [name] for name in class_names}}
