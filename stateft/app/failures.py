"""One line for a failure the user can fix: an I/O error (full disk, read-only or forbidden folder, a damaged file),
a user file that is not UTF-8, a JSON file that does not parse. Anything else is a bug and keeps its traceback.

``STATEFT_TRACEBACK=1`` shows the traceback of these too.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import TracebackType

_IO_ADVICE = {
    errno.ENOSPC: ("no space left on the device", "free some space (or write elsewhere: hydra.run.dir=...)"),
    errno.EDQUOT: ("disk quota exceeded", "free some space (or write elsewhere: hydra.run.dir=...)"),
    errno.EROFS: ("read-only file system", "write elsewhere (hydra.run.dir=... or run from a writable folder)"),
    errno.EACCES: ("permission denied", "fix the permissions or write elsewhere (hydra.run.dir=...)"),
    errno.EPERM: ("operation not permitted", "fix the permissions or write elsewhere (hydra.run.dir=...)"),
}


def show_traceback() -> bool:
    """``STATEFT_TRACEBACK=1``: user-caused failures raise with their traceback instead of one line."""
    return os.environ.get("STATEFT_TRACEBACK", "") not in ("", "0")


def _as_file(value: object) -> Path | None:
    """A path-like value, or a string naming an existing file (``torch.load(f)`` gets a string)."""
    if isinstance(value, os.PathLike):
        return Path(os.fspath(value))
    if isinstance(value, str) and os.sep in value and len(value) < 4096 and os.path.isfile(value):
        return Path(value)
    return None


def file_in_traceback(tb: TracebackType | None) -> Path | None:
    """The file a failing call was working on: the innermost frame's path-like local (``self`` of
    ``Path.read_text``, ``path`` of a reader) or string naming an existing file. The traceback's first frame is
    the one that caught the error (its own paths, such as the run folder, say nothing about the failure)."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames[1:]):
        for value in frame.f_locals.values():
            found = _as_file(value)
            if found is not None:
                return found
    return None


def _where(err: BaseException) -> str:
    filename = getattr(err, "filename", None)
    if filename:
        return f" ({filename})"
    found = file_in_traceback(err.__traceback__)
    return f" ({found})" if found else ""


def user_message(err: BaseException) -> str | None:
    """The one-line message for a user-caused failure, or None for a bug."""
    if isinstance(err, UnicodeDecodeError):
        found = file_in_traceback(err.__traceback__)
        if found is None:
            return None
        return (
            f"{found} is not UTF-8 text (byte {err.object[err.start : err.start + 1]!r} at offset {err.start}); "
            "save it as UTF-8 or pass the right file"
        )
    if isinstance(err, json.JSONDecodeError):
        found = file_in_traceback(err.__traceback__)
        if found is None:
            return None
        return f"{found}:{err.lineno}: invalid JSON ({err.msg}, column {err.colno}); fix the file or regenerate it"
    if isinstance(err, OSError):
        known = _IO_ADVICE.get(err.errno or -1)
        if known is not None:
            what, advice = known
            return f"{what}{_where(err)}: {advice}, then run again"
        text = str(err).strip()
        reason = err.strerror or (text.splitlines()[0] if text else type(err).__name__)
        return f"{reason}{_where(err)} ({type(err).__name__}); check the file or the device and run again"
    return None
