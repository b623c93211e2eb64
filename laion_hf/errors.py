"""Errors whose message is meant for the user.

The CLI prints these without a traceback and exits non-zero; anything else is
a bug and keeps its traceback. Messages name the file (and line or key).
"""


class UserError(Exception):
    """Bad input or configuration, explained in the message."""
