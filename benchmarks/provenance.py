"""Which code a benchmark measured: the commit, whether the tree differed from it, and a hash of the source itself.

A result file's commit alone is not enough: the GPU machine runs a copy of the working tree whose ``.git`` may be an
older commit with the measured code uncommitted on top of it. So each result also records ``source_sha``, a hash of
the files that decide what runs (stateft/, conf/, benchmarks/*.py, the kernels among them) as they were, and this
script computes the same hash for any commit, which finds the commit that holds exactly the measured code:

    python benchmarks/provenance.py                  # the working tree: commit, dirty, source_sha
    python benchmarks/provenance.py dd897b0 HEAD~3    # source_sha of those commits' trees

``$STATEFT_CODE`` (e.g. ``STATEFT_CODE=$(git describe --always --dirty)``, set where the command is composed) is
recorded as given, for a copy without a usable ``.git``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("stateft/", "conf/", "benchmarks/")  # what decides what a benchmark runs


def _measured(path: str) -> bool:
    if not path.startswith(ROOTS):
        return False
    if path.startswith("benchmarks/"):
        return path.endswith(".py") and path.count("/") == 1  # the scripts, not results or notes
    return path.endswith((".py", ".yaml"))


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return h.hexdigest()[:16]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=True).stdout


def tree_sha(commit: str) -> str:
    """``source_sha`` of a commit's tree."""
    paths = [p for p in _git("ls-tree", "-r", "--name-only", commit).splitlines() if _measured(p)]
    files = {}
    for p in paths:
        files[p] = subprocess.run(["git", "show", f"{commit}:{p}"], capture_output=True, cwd=REPO, check=True).stdout
    return _digest(files)


def working_sha() -> str:
    """``source_sha`` of the files as they are on disk (tracked or not, outside ignored folders)."""
    files = {}
    for root in ROOTS:
        for f in (REPO / root).rglob("*"):
            rel = f.relative_to(REPO).as_posix()
            if f.is_file() and _measured(rel) and "__pycache__" not in rel:
                files[rel] = f.read_bytes()
    return _digest(files)


def current() -> dict:
    """What a result file records: ``commit`` (``$STATEFT_CODE`` if set, else git's HEAD or "unknown"), ``dirty``
    (tracked files differ from it; None when unknown) and ``source_sha``."""
    commit, dirty = os.environ.get("STATEFT_CODE"), None
    if commit is None:
        try:
            commit = _git("rev-parse", "--short", "HEAD").strip()
            dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", *ROOTS).strip())
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    return {"commit": commit, "dirty": dirty, "source_sha": working_sha()}


if __name__ == "__main__":
    if len(sys.argv) == 1:
        print(current())
    for rev in sys.argv[1:]:
        print(rev, tree_sha(rev))
