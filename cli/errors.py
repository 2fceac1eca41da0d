"""Turn the library's one-line errors into Click errors (printed as ``Error: ...``, exit status 1)."""

from __future__ import annotations

import functools

import click

from data_tools.errors import InputError
from pyro_adgm.training import TrainingDiverged


def one_line_errors(command):
    """Decorate a Click callback so that bad input or a diverged run ends it with a one-line message."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (InputError, TrainingDiverged) as error:
            raise click.ClickException(str(error)) from None

    return wrapper
