"""Files, folders and links replaced atomically: written under a temporary name next to the target, then renamed
onto it (``os.replace``, atomic within one file system), so a reader finds the old content or the new one, never half
of one, and an error or a kill leaves the target as it was. Torch-free: data, metrics and app code all use it.

Every temporary is named ``.<target name>.tmp-<pid>`` (``temp_path``; ``TEMP_NAME`` matches it): hidden and without
the target's suffix, so readers that glob ``*.npz`` or ``*.sqlite`` skip it, and a resumed run removes exactly what
a killed writer left (``stateft.app.files.remove_leftovers``). The pid keeps writers in different processes apart;
within one process a target has one writer at a time (a run's files are written by one thread, a shared cache entry
under its build lock, ``stateft.data.shared_cache``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_NAME = re.compile(r"^\..+\.tmp-\d+$")


def temp_path(path: Path) -> Path:
    """The temporary name ``path`` is written under before the rename."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a new empty temporary file next to ``path`` (its folder is created); when the block ends normally the
    file is synced and renamed onto ``path``, otherwise (error, interrupt) it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.unlink(missing_ok=True)  # left by a killed process that had the same pid
    # created here, so writers that open an existing file (sqlite) find one; 0o666 less the umask like any new file
    # (tempfile's 0o600 would hide a shared cache's entries from its other users)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # on disk before the rename, so a power cut cannot leave an empty target
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def replacing_dir(path: Path) -> Iterator[Path]:
    """Yield a new empty temporary folder next to ``path``; when the block ends normally it takes ``path``'s place
    (``swap_into_place``), otherwise it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        swap_into_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap_into_place(tmp: Path, directory: Path) -> None:
    """Rename the filled folder ``tmp`` to ``directory``; an old one is set aside first (``.<name>.old-<pid>``) and
    removed after (put back if the rename fails), so a reader finds the old folder or the new one, never a mix."""
    old = None
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        os.replace(directory, old)
    try:
        os.replace(tmp, directory)
    except OSError:
        if old is not None:
            os.replace(old, directory)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def replace_symlink(link: Path, source: Path) -> None:
    """Point ``link`` at ``source``: a new link under the temporary name, renamed over whatever ``link`` was."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(link)
    tmp.unlink(missing_ok=True)
    os.symlink(source, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
