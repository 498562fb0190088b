"""On-disk cache of tokenised splits, keyed by everything that changes them; safe to share between processes.

The key hashes the data options (dataset, GLUE task, path, protocol, split, seed, subset, max length, ...), the
tokenizer file, a fingerprint of the local data files (path, size, mtime) and the source code of ``stateft/data/`` (so
a change to a prompt string invalidates the cache). A split is one file, ``<key>.npz``: the token ids (concatenated),
the prompt and target lengths, the per-example metadata as JSON lines (UTF-8 bytes) and a SHA-256 of all of them. No
pickle, so a shared cache folder cannot run code; one file written under a temporary name and renamed into place, so
a reader never sees half an entry; a truncated, altered or unreadable file is reported in one warning, removed and
rebuilt (``stateft.atomic``, ``stateft.data.shared_cache``).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stateft.atomic import replacing
from stateft.data.shared_cache import build_lock, discard, writable
from stateft.errors import UserError

DATA_SOURCES = Path(__file__).parent
MEMBERS = {"ids": np.int32, "prompt_len": np.int64, "target_len": np.int64, "examples": np.uint8, "sha256": np.uint8}
# what reading a damaged file raises (zero bytes: EOFError; truncated zip: BadZipFile; bad deflate data: zlib.error)
READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)
Items = list[dict[str, Any]]


class CorruptEntry(Exception):
    """A cache file that exists but does not hold a complete, intact entry."""

    def __init__(self, reason: object, seen: os.stat_result | None) -> None:
        super().__init__(reason)
        self.reason, self.seen = reason, seen


def fingerprint_path(path: str | Path | None) -> list:
    """(relative name, size, mtime) of every file under ``path``: a changed data file changes the cache key."""
    if path is None:
        return []
    root = Path(path).expanduser()
    if root.is_file():
        st = root.stat()
        return [[root.name, st.st_size, st.st_mtime_ns]]
    if not root.is_dir():
        return []
    out = []
    for file in sorted(root.rglob("*")):
        if file.is_file() and file.suffix != ".sqlite":  # databases do not change the tokenised text
            st = file.stat()
            out.append([str(file.relative_to(root)), st.st_size, st.st_mtime_ns])
    return out


def code_fingerprint() -> str:
    """Hash of the source that shapes the tokens (the data package, the Spider schema reader, the tokenizer module):
    editing a formatter must not reuse tokens made by the old one."""
    digest = hashlib.sha256()
    extra = [DATA_SOURCES.parent / "metrics" / "spider" / "schema.py", DATA_SOURCES.parent / "tokenizer.py"]
    for file in [*sorted(DATA_SOURCES.glob("*.py")), *extra]:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def cache_key(options: dict[str, Any]) -> str:
    """A stable 20-hex-digit key of a JSON-serialisable options dict (plus the code fingerprint)."""
    blob = json.dumps({"options": options, "code": code_fingerprint()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def entry_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir).expanduser() / f"{key}.npz"


def checksum(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """SHA-256 (32 uint8) of every member but ``sha256`` itself, each with its name and byte length."""
    digest = hashlib.sha256(b"stateft token cache v2")
    for name in MEMBERS:
        if name != "sha256":
            data = np.ascontiguousarray(arrays[name]).tobytes()
            digest.update(f"{name}:{len(data)}:".encode())
            digest.update(data)
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def encode(items: Items) -> dict[str, np.ndarray]:
    """The members of an entry (see the module docstring)."""
    lines = "".join(json.dumps(it["example"], ensure_ascii=False) + "\n" for it in items)
    arrays = {
        "ids": np.array([t for it in items for t in (*it["prompt_ids"], *it["target_ids"])], dtype=np.int32),
        "prompt_len": np.array([len(it["prompt_ids"]) for it in items], dtype=np.int64),
        "target_len": np.array([len(it["target_ids"]) for it in items], dtype=np.int64),
        "examples": np.frombuffer(lines.encode("utf-8"), dtype=np.uint8),
    }
    arrays["sha256"] = checksum(arrays)
    return arrays


def decode(arrays: dict[str, np.ndarray]) -> Items:
    """Items from an entry's members; ValueError when they are not one consistent, intact entry."""
    if set(arrays) != set(MEMBERS):
        raise ValueError(f"members {sorted(arrays)}, expected {sorted(MEMBERS)}")
    for name, dtype in MEMBERS.items():
        if arrays[name].dtype != dtype or arrays[name].ndim != 1:
            raise ValueError(f"member {name} is {arrays[name].dtype}[{arrays[name].ndim}d], expected {dtype}[1d]")
    if not np.array_equal(arrays["sha256"], checksum(arrays)):
        raise ValueError("checksum mismatch")
    prompt_len, target_len = arrays["prompt_len"].tolist(), arrays["target_len"].tolist()
    # json.dumps escapes newlines, so "\n" alone separates records (str.splitlines would also split at U+2028)
    lines = arrays["examples"].tobytes().decode("utf-8").split("\n")[:-1]
    examples = [json.loads(line) for line in lines]
    if not len(examples) == len(prompt_len) == len(target_len):
        raise ValueError(f"{len(examples)} examples for {len(prompt_len)}/{len(target_len)} lengths")
    if min(prompt_len + target_len, default=0) < 0 or sum(prompt_len) + sum(target_len) != arrays["ids"].size:
        raise ValueError("token lengths do not add up to the ids")
    ids, items, pos = arrays["ids"].tolist(), [], 0
    for example, n_p, n_t in zip(examples, prompt_len, target_len):
        items.append(
            {"prompt_ids": ids[pos : pos + n_p], "target_ids": ids[pos + n_p : pos + n_p + n_t], "example": example}
        )
        pos += n_p + n_t
    return items


def read(path: Path) -> Items | None:
    """The entry at ``path``; None when there is none; CorruptEntry when it cannot be read whole."""
    try:
        handle = open(path, "rb")  # noqa: SIM115  (closed below; one open file, so a rename cannot swap it mid-read)
    except FileNotFoundError:
        return None
    except OSError as err:  # a folder or an unreadable file in its place: unusable, so replaced like a corrupt one
        raise CorruptEntry(err, None) from None
    with handle:
        seen = os.fstat(handle.fileno())
        try:
            archive = np.load(handle, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("not an npz archive")
            with archive:
                return decode({name: archive[name] for name in archive.files})
        except READ_ERRORS as err:
            raise CorruptEntry(err, seen) from None


def save(cache_dir: str | Path, key: str, items: Items) -> None:
    """Write items (``prompt_ids``, ``target_ids``, ``example``) as one file, renamed into place when complete."""
    path = entry_path(cache_dir, key)
    writable(path.parent)
    try:
        with replacing(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **encode(items))
    except OSError as err:
        raise UserError(f"cannot write the cache file {path} ({err.strerror or err}): free space or point "
                        "STATEFT_CACHE_DIR (dataset.cache_dir) to another folder") from None  # fmt: skip


def load(cache_dir: str | Path, key: str) -> Items | None:
    """The items saved under ``key``; None when not cached, or when the file is corrupt (then it is reported in one
    warning line and removed, for the caller to rebuild)."""
    path = entry_path(cache_dir, key)
    try:
        return read(path)
    except CorruptEntry as bad:
        discard(path, bad.reason, bad.seen)
        return None


def load_or_build(cache_dir: str | Path, key: str, build: Callable[[], Items]) -> Items:
    """The items under ``key``, built by ``build()`` and saved when missing or corrupt. Builders of one key take
    turns (a lock), so N processes starting together build it once; a cached entry is read without the lock."""
    try:
        items = read(entry_path(cache_dir, key))
    except CorruptEntry:
        items = None  # checked again, reported and removed under the lock
    if items is not None:
        return items
    with build_lock(Path(cache_dir).expanduser(), key):
        items = load(cache_dir, key)
        if items is None:
            items = build()
            save(cache_dir, key, items)
    return items
