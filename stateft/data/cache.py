"""On-disk cache of tokenised splits, keyed by everything that changes them.

The key hashes the data options (dataset, task, path, protocol, split, seed, subset, max length, ...), the tokenizer
file, a fingerprint of the local data files (path, size, mtime) and the source code of ``stateft/data/`` (so a change
to a prompt string invalidates the cache). A split is stored as ``<key>.npz`` (token ids, concatenated, with offsets)
plus ``<key>.jsonl`` (per-example metadata): no pickle, so a shared cache folder cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

DATA_SOURCES = Path(__file__).parent


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


def save(cache_dir: str | Path, key: str, items: list[dict[str, Any]]) -> None:
    """Write items (``prompt_ids``, ``target_ids``, ``example``) atomically (temp files, then rename)."""
    root = Path(cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    prompt_len = np.array([len(it["prompt_ids"]) for it in items], dtype=np.int64)
    target_len = np.array([len(it["target_ids"]) for it in items], dtype=np.int64)
    ids = [t for it in items for t in (*it["prompt_ids"], *it["target_ids"])]
    tmp_npz, tmp_meta = root / f".{key}.{os.getpid()}.npz", root / f".{key}.{os.getpid()}.jsonl"
    np.savez(tmp_npz, ids=np.array(ids, dtype=np.int32), prompt_len=prompt_len, target_len=target_len)
    with open(tmp_meta, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it["example"], ensure_ascii=False) + "\n")
    # metadata last: load() treats the pair as present only when the .jsonl exists
    os.replace(tmp_npz, root / f"{key}.npz")
    os.replace(tmp_meta, root / f"{key}.jsonl")


def load(cache_dir: str | Path, key: str) -> list[dict[str, Any]] | None:
    """The items saved under ``key``, or None when not cached (or unreadable: then they are rebuilt)."""
    root = Path(cache_dir).expanduser()
    npz, meta = root / f"{key}.npz", root / f"{key}.jsonl"
    if not (npz.is_file() and meta.is_file()):
        return None
    try:
        with np.load(npz, allow_pickle=False) as arrays:
            ids, prompt_len, target_len = arrays["ids"].tolist(), arrays["prompt_len"], arrays["target_len"]
        examples = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError, KeyError):
        return None
    if len(examples) != len(prompt_len):
        return None
    items, pos = [], 0
    for example, n_p, n_t in zip(examples, prompt_len.tolist(), target_len.tolist()):
        items.append(
            {"prompt_ids": ids[pos : pos + n_p], "target_ids": ids[pos + n_p : pos + n_p + n_t], "example": example}
        )
        pos += n_p + n_t
    return items
