"""Result files written atomically (a temporary file and a rename): metrics JSON, predictions JSONL, copies of a
resumed run's files; and the removal of what a killed writer left behind. Torch-free.

Every temporary file of a run is named ``.<target name>.tmp-<pid>`` next to its target (``temp_path``), so a run
that resumes after a kill can find and remove exactly those (``remove_leftovers``) and nothing else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_TEMP_FILE = re.compile(r"^\..+\.tmp-\d+$")  # temp_path's names
# stateft.adapters.save_adapter's: tempfile.mkdtemp(prefix=".adapter.") and the old adapter renamed aside
_ADAPTER_TEMP = re.compile(r"^\.(?P<name>[^/]+?)\.(?P<kind>old-\d+|[a-z0-9_]{8})$")


def temp_path(path: Path) -> Path:
    """The temporary name ``path`` is written under before the rename (matched by ``remove_leftovers``)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield the temporary path to write ``path``'s new content to; when the block ends normally it is synced and
    renamed onto ``path`` (readers see the old file or the new one, never half of one), otherwise removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, payload: Any) -> Path:
    """``json.dump`` through a temporary file and a rename."""
    text = json.dumps(payload, indent=2, default=float)
    with replacing(path) as tmp:
        tmp.write_text(text)
    return path


def write_predictions(path: Path, records: list[dict[str, Any]], tokenizer: Any = None) -> Path:
    """The predictions JSONL of ``stateft.data.predictions`` (``index``, ``prediction``, ``prompt``, ``references``;
    ``eval.py predictions=...`` scores it), written through a temporary file and a rename."""
    from stateft.data.predictions import write_predictions as write_jsonl

    prompts = [tokenizer.decode(r["prompt_ids"]) for r in records] if tokenizer is not None else None
    with replacing(path) as tmp:
        write_jsonl(tmp, [r["example"] for r in records], [r["prediction"] for r in records], prompts)
    return path


def copy_atomic(source: Path, target: Path) -> None:
    """Copy a file or a directory to ``target`` through a temporary name and a rename; an existing ``target`` is
    left as it is."""
    if target.exists():
        return
    if source.is_dir():
        with _replacing_dir(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    else:
        with replacing(target) as tmp:
            shutil.copyfile(source, tmp)


@contextmanager
def _replacing_dir(path: Path) -> Iterator[Path]:
    tmp = temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_leftovers(directory: Path, adapter_name: str = "adapter") -> list[Path]:
    """Remove what writers killed mid-write left in ``directory`` (not recursive): our temporary files
    (``.<name>.tmp-<pid>``) and ``save_adapter``'s temporary and set-aside directories (``.adapter.<8 chars>``,
    ``.adapter.old-<pid>``). A kill between ``save_adapter``'s two renames leaves no ``adapter/`` but the previous one
    set aside: that one is put back (it is the best adapter the last checkpoint knows). Returns what was removed."""
    if not directory.is_dir():
        return []
    removed, set_aside = [], []
    for entry in sorted(directory.iterdir()):
        adapter = _ADAPTER_TEMP.match(entry.name)
        if entry.is_dir() and adapter and adapter["name"] == adapter_name:
            if adapter["kind"].startswith("old-"):
                set_aside.append(entry)
                continue
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        elif _TEMP_FILE.match(entry.name):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    target = directory / adapter_name
    for old in sorted(set_aside, key=lambda p: p.stat().st_mtime, reverse=True):
        if not target.exists():
            os.replace(old, target)
        else:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
    return removed
