"""The one exception type for bad input that a user can fix.

Its message is a single line naming the file or field and what was expected; the CLI prints it as it is,
without a traceback.
"""

from __future__ import annotations

import contextlib
import csv
import os


class InputError(ValueError):
    """Bad input (a file, a column, an option value) described in one line."""


@contextlib.contextmanager
def reading_text(path: str | os.PathLike, expected: str):
    """Around the reading of a text file (a CSV): bytes that are not UTF-8 text, or that the csv module cannot
    parse (a NUL byte), become an :class:`InputError` naming ``path`` and what was ``expected``."""
    try:
        yield
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file (expected {expected})") from None
    except csv.Error as error:
        raise InputError(f"{path}: not a readable CSV ({error}; expected {expected})") from None
