"""Exception and warning types shared by the library and the CLI.

Every error a user can cause derives from :class:`TransferselError`; the CLI prints its message on one
line and exits with status 2. Messages name the problem and the fix.
"""

from __future__ import annotations


class TransferselError(Exception):
    """A problem the user can fix (bad input, missing file, bad config). Never a bug."""


class InputError(TransferselError, ValueError):
    """Invalid arrays or arguments passed to a metric or command."""


class TransferabilityWarning(UserWarning):
    """A valid input in a numerically degenerate regime (e.g. N <= D): the score may saturate."""
