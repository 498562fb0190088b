"""Result files written atomically (a temporary file and a rename): metrics JSON and predictions JSONL. Torch-free."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, payload: Any) -> Path:
    """``json.dump`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=float))
    os.replace(tmp, path)
    return path


def write_predictions(path: Path, records: list[dict[str, Any]], tokenizer: Any = None) -> Path:
    """The predictions JSONL of ``stateft.data.predictions`` (``index``, ``prediction``, ``prompt``, ``references``;
    ``eval.py predictions=...`` scores it), written through a temporary file and a rename."""
    from stateft.data.predictions import write_predictions as write_jsonl

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    prompts = [tokenizer.decode(r["prompt_ids"]) for r in records] if tokenizer is not None else None
    write_jsonl(tmp, [r["example"] for r in records], [r["prediction"] for r in records], prompts)
    os.replace(tmp, path)
    return path
