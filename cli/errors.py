"""Turn the library's one-line errors into Click errors (printed as ``Error: ...``, exit status 1).

Click prints a :class:`click.ClickException` as ``Error: MESSAGE`` on standard error, with nothing before it.
The library's messages name the file or option and say what was expected; :func:`one_line` keeps any message on
one line, so that the error is always the single last line of the output.
"""

from __future__ import annotations

import functools

import click

from data_tools.errors import InputError
from pyro_adgm.distributed import PeerFailure
from pyro_adgm.training import TrainingDiverged


def one_line(message: str) -> str:
    """``message`` with its lines joined by "; " and blank lines dropped."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def one_line_errors(command):
    """Decorate a Click callback so that bad input, a diverged run or a failed process of a torchrun run ends it
    with a one-line message."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (InputError, TrainingDiverged, PeerFailure) as error:
            raise click.ClickException(one_line(str(error))) from None
        except OSError as error:
            # a file that exists but cannot be read or written (permissions, a folder where a file was expected)
            if error.filename is None:
                raise
            raise click.ClickException(one_line(f"{error.filename}: {error.strerror or type(error).__name__}")) from None

    return wrapper
