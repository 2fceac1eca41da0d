"""Finding the image file a CSV names: the path value, relative to an image root, to a file on disk.

A value is looked up, in order:

1. as ``ROOT/value`` (an absolute value stands for itself), with ``suffix`` appended unless the value already
   ends with it (RSNA's CSVs name patientIds without ``.png``);
2. without its first folder when that folder is the root itself (CheXpert's ``Path`` starts with
   ``CheXpert-v1.0-small/``, and the root may be that folder or its parent);
3. for a bare file name, by name anywhere under the root (ChestX-ray14's ``Image Index`` is a file name, the
   images ship in ``images_001/images/`` ... ``images_012/images/``); a name found in several folders is
   ambiguous. The root is listed once, the first time a value needs it.

:func:`expand_image_arguments` turns command-line arguments (files or folders) into image files, for
``pyro-adgm predict``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from data_tools.errors import InputError


class ImageLocator:
    """Resolves CSV path values under ``root``; :meth:`locate` returns (path, "") or (None, why not)."""

    def __init__(self, root: Path, suffix: str = ""):
        self.root = Path(root)
        self.suffix = suffix
        self._by_name: dict[str, list[Path]] | None = None

    def _with_suffix(self, value: str) -> str:
        if self.suffix and not value.lower().endswith(self.suffix.lower()):
            return value + self.suffix
        return value

    def _names(self) -> dict[str, list[Path]]:
        if self._by_name is None:
            self._by_name = {}
            for folder, _dirs, files in os.walk(self.root):
                for name in files:
                    self._by_name.setdefault(name, []).append(Path(folder) / name)
        return self._by_name

    def locate(self, value: str) -> tuple[Path | None, str]:
        """The file ``value`` names, or None with ``"missing"`` or ``"ambiguous: <path>, <path>"``."""
        value = self._with_suffix(value.strip().replace("\\", "/"))
        direct = self.root / value
        if direct.is_file():
            return direct, ""
        parts = PurePosixPath(value).parts
        if len(parts) > 1 and parts[0] == self.root.name:
            inside = self.root.joinpath(*parts[1:])
            if inside.is_file():
                return inside, ""
        if len(parts) == 1:
            found = self._names().get(parts[0], [])
            if len(found) == 1:
                return found[0], ""
            if len(found) > 1:
                return None, "ambiguous: " + ", ".join(str(p) for p in sorted(found)[:3])
        return None, "missing"


def expand_image_arguments(arguments: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder becomes the image files directly in it (``.dcm``, ``.dicom``, ``.png``, ``.jpg``,
    ``.jpeg``, any case; not those in its sub-folders; hidden files skipped), sorted by name. A folder without
    one is an :class:`InputError`; a path that does not exist is kept, for the reader to report."""
    from data_tools.imaging import IMAGE_SUFFIXES

    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if not path.is_dir():
            paths.append(path)
            continue
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
        if not found:
            raise InputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) directly in this folder "
                             "(sub-folders are not searched)")  # fmt: skip
        paths.extend(found)
    return paths
