"""Reading files that may come from someone else: adapters, run folders, predictions folders. Data, never code.

Every such file is read with the helpers here, so the same rules hold everywhere (docs/security.md):

- the file must be a regular file of bounded size; a symbolic link *inside* a shared folder is refused (the folder
  itself may be a link the user made), and so is a FIFO or a device (opened non-blocking, so a FIFO cannot hang us);
- JSON is parsed strictly: no NaN / Infinity (nor a number so large it overflows to infinity), no duplicate keys, no
  nesting deep enough to blow the stack;
- every value taken from it is type-checked with a range (``want_int``, ``want_float``, ``want_str``...): a boolean is
  not an integer, 8.0 is not 8, and a string is never interpreted (an OmegaConf interpolation ``${...}`` in it is
  refused, since building an OmegaConf node from it would resolve it; so is ``???``, OmegaConf's missing value).

Nothing here imports, instantiates or unpickles anything. Torch-free; errors are one-line ``UserError``s.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from stateft.errors import UserError

MiB = 1 << 20
MAX_STR = 4096  # characters in one string value (paths included)


def _flags() -> int:
    return os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def open_regular(path: str | Path, what: str, max_bytes: int, follow_symlink: bool = False) -> tuple[BinaryIO, int]:
    """``(binary file, size)`` of a regular file of at most ``max_bytes``; UserError for a missing file, a symbolic
    link (unless ``follow_symlink``: a path the user named on the command line), a FIFO, socket or device, or a
    file that is too large."""
    path = Path(path)
    flags = _flags() if not follow_symlink else _flags() & ~getattr(os, "O_NOFOLLOW", 0)
    if not follow_symlink and path.is_symlink():  # O_NOFOLLOW says so too (ELOOP); this also covers other systems
        raise UserError(f"{what} {path} is a symbolic link; a shared folder's files must be the files themselves")
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UserError(f"{what} {path} not found") from None
    except OSError as err:
        raise UserError(f"cannot open {what} {path} ({err.strerror or type(err).__name__})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"{what} {path} is not a regular file")
        if info.st_size > max_bytes:
            raise UserError(f"{what} {path} is {info.st_size} bytes, more than the {max_bytes} expected at most")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), info.st_size
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | Path, what: str, max_bytes: int, follow_symlink: bool = False) -> bytes:
    """The whole content of a regular file of at most ``max_bytes`` (see ``open_regular``)."""
    handle, _ = open_regular(path, what, max_bytes, follow_symlink)
    with handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise UserError(f"{what} {path} is larger than the {max_bytes} bytes expected at most")
    return data


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} overflows to infinity")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def parse_json(text: str | bytes, where: str) -> Any:
    """Strict JSON: no NaN/Infinity/overflowing numbers, no duplicate keys, no excessive nesting."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(
            text, parse_float=_finite_float, parse_constant=_no_constant, object_pairs_hook=_no_duplicates
        )
    except RecursionError:
        raise UserError(f"{where} is corrupt (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        reason = str(err).splitlines()[0][:100] if str(err) else type(err).__name__
        raise UserError(f"{where} is corrupt ({reason})") from None


def read_json(path: str | Path, what: str, max_bytes: int, follow_symlink: bool = False) -> Any:
    """``parse_json`` of a regular file of at most ``max_bytes``."""
    return parse_json(read_bytes(path, what, max_bytes, follow_symlink), f"{what} {path}")


# -- typed values -------------------------------------------------------------------------------------------------
def want_int(value: Any, where: str, lo: int, hi: int, nullable: bool = False) -> int | None:
    """An integer in [lo, hi] (a bool or a float is not one)."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where} must be an integer{' or null' if nullable else ''}, got {short(value)}")
    if not lo <= value <= hi:
        raise UserError(f"{where}={value} is out of range [{lo}, {hi}]")
    return value


def want_float(value: Any, where: str, lo: float, hi: float, nullable: bool = False, open_lo: bool = False) -> Any:
    """A finite number in [lo, hi] (or (lo, hi] with ``open_lo``); an integer is accepted as a number, a bool not."""
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where} must be a number{' or null' if nullable else ''}, got {short(value)}")
    if not math.isfinite(value) or value < lo or value > hi or (open_lo and value == lo):
        raise UserError(f"{where}={value} is out of range {'(' if open_lo else '['}{lo}, {hi}]")
    return value


def want_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{where} must be true or false, got {short(value)}")
    return value


def want_str(value: Any, where: str, nullable: bool = False, choices: tuple[str, ...] | None = None) -> str | None:
    """A plain string: at most MAX_STR characters, no NUL, no OmegaConf interpolation; one of ``choices`` if given."""
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise UserError(f"{where} must be a string{' or null' if nullable else ''}, got {short(value)}")
    if len(value) > MAX_STR or "\x00" in value:
        raise UserError(f"{where} is not a plausible value (too long, or a NUL character)")
    if "${" in value or value == "???":  # an OmegaConf node built from it would resolve it (or call it missing)
        raise UserError(f"{where}={short(value)}: interpolations (${{...}}, ???) are not accepted from a shared file")
    if choices is not None and value not in choices:
        raise UserError(f"{where}={value!r} is not one of: {', '.join(choices)}")
    return value


def want_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a JSON object, got {short(value)}")
    return value


def short(value: Any, limit: int = 60) -> str:
    """A value for an error message: its repr, cut short, with its type."""
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{text} ({type(value).__name__})"


__all__ = [
    "MiB",
    "open_regular",
    "parse_json",
    "read_bytes",
    "read_json",
    "short",
    "want_bool",
    "want_dict",
    "want_float",
    "want_int",
    "want_str",
]
