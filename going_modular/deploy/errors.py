"""The one base class of the errors a user can act on, in both wings.

`cli.run` turns a `UserError` into one line, `error: ...`, and exit status 2; any other exception
is a bug and keeps its traceback. Each wing subclasses it where the error arises (BundleError,
InvalidImageError, BatchError, StreamError here; DataError, CheckpointError,
WeightsUnavailableError in the training wing; PackageError in demos/package.py), so an error is
recognised by its type, never by its name.
"""
from __future__ import annotations


class UserError(Exception):
    """Bad input, a missing or unusable file, bad arguments: the message says what to do."""


class UsageError(UserError, ValueError):
    """Command-line values that argparse accepts but the command cannot use (e.g. --fps -1)."""
