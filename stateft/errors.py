"""Errors caused by the user's input. Entry points print them as one line (no stack trace) and exit with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a config typo, a missing file, an unreachable hub, a corrupt checkpoint.

    The message says what to do, in one line.
    """
