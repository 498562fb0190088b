"""Result files written atomically (``stateft.atomic``): metrics JSON, copies of a resumed run's files; and the
removal of what a killed writer left behind. Torch-free.

Every temporary file of a run is named ``.<target name>.tmp-<pid>`` next to its target (``stateft.atomic.temp_path``),
so a run that resumes after a kill can find and remove exactly those (``remove_leftovers``) and nothing else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from stateft.atomic import TEMP_NAME, replacing, replacing_dir

# stateft.adapters.save_adapter's: tempfile.mkdtemp(prefix=".adapter.") and the old adapter set aside
# (stateft.atomic.swap_into_place)
_ADAPTER_TEMP = re.compile(r"^\.(?P<name>[^/]+?)\.(?P<kind>old-\d+|[a-z0-9_]{8})$")


def write_json_atomic(path: Path, payload: Any) -> Path:
    """``json.dump`` through a temporary file and a rename."""
    text = json.dumps(payload, indent=2, default=float)
    with replacing(path) as tmp:
        tmp.write_text(text)
    return path


def copy_atomic(source: Path, target: Path) -> None:
    """Copy a file or a directory to ``target`` through a temporary name and a rename; an existing ``target`` is
    left as it is."""
    if target.exists():
        return
    if source.is_dir():
        with replacing_dir(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
    else:
        with replacing(target) as tmp:
            shutil.copyfile(source, tmp)


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
        elif TEMP_NAME.match(entry.name):
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
