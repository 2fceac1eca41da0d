"""The one exception type for bad input that a user can fix.

Its message is a single line naming the file or field and what was expected; the CLI prints it as it is,
without a traceback.
"""


class InputError(ValueError):
    """Bad input (a file, a column, an option value) described in one line."""
