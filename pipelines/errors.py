"""The one error type the input pipelines raise for unusable user data."""

from __future__ import annotations


class DataError(ValueError):
    """User data cannot be used as given.

    The message names the input (a path, an archive member, a class), says what is wrong and what to do about it,
    so the CLI and the app can show it as is.
    """


# The start of the message a data pipeline raises (inside a TensorFlow error) when it cannot decode a file;
# `workbench.cli` finds it there and shows the user just that sentence.
UNREADABLE_FILE_MESSAGE = "TensorFlow cannot read or decode the image file"
