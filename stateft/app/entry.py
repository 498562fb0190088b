"""The entry points' last word: a failure the user can fix ends with one ``error:`` line and exit code 2.

Inside a job ``stateft.app.runner.run_job`` does this. Around it, Hydra itself can fail on the user's account: the
run folder cannot be made (read-only or full disk), a sweep value does not compose. Hydra is asked to re-raise
(``HYDRA_FULL_ERROR``) instead of printing its own trimmed traceback, and the error is reported here; anything else
is a bug and keeps its full traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from stateft.app.failures import show_traceback, user_message
from stateft.errors import UserError


def _hydra_user_error(err: BaseException) -> bool:
    """A composition or command-line error of a sweep's later job (the first is checked before Hydra starts)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    return isinstance(err, (ConfigCompositionException, MissingConfigException, OverrideParseException))


def run_main(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function, turning user-caused failures into one line (exit 2)."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    full = show_traceback() or before not in (None, "", "0")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _call(main, before)
    except UserError as err:
        if full:
            raise
        _exit(str(err))
    except Exception as err:
        if full:
            raise
        message = user_message(err)
        if message is None and _hydra_user_error(err):
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            message = lines[0] if lines else type(err).__name__
        if message is None:
            raise
        _exit(message)


def _call(main: Callable[[], Any], before: str | None) -> None:
    """``main()`` with HYDRA_FULL_ERROR set, put back as it was afterwards (an in-process call, as the tests make,
    must not leave it set for the processes started after it)."""
    try:
        main()
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def _exit(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
