"""Predictions files: one JSON object per evaluation example, scored without a model.

Format (JSONL, written by the training module and read by ``eval.py``): each line is
``{"index": int, "prediction": str, "prompt": str (optional), "references": [...] (optional)}`` where ``index`` is
the example's position in the evaluated split (``batch["examples"][i]["index"]``) and ``prediction`` the decoded
output with EOS stripped. Extra keys are ignored. An example without a line is scored as an empty prediction and
counted in ``missing``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stateft.errors import UserError

MAX_PREDICTIONS_BYTES = 1 << 30  # 1 GiB: DART's test split at 1024 new tokens a line is ~25 MB


def read_predictions(path: str | Path) -> dict[int, str]:
    """``index -> prediction`` from a JSONL file (duplicate indices are an error).

    The file may come from someone else: it must be a regular file of at most MAX_PREDICTIONS_BYTES (a FIFO or a
    device is refused, not waited on), every line strict JSON (``stateft.foreign.parse_json``), ``index`` an
    integer (not a bool, a float or a string) and ``prediction`` a string. Nothing in it is executed here (Spider
    predictions are SQL: ``stateft.metrics.spider.executor`` runs them read-only, under limits).
    """
    from stateft.foreign import parse_json, read_bytes

    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"predictions file {str(path)!r} not found")
    data = read_bytes(path, "predictions file", MAX_PREDICTIONS_BYTES, follow_symlink=True)  # a path the user named
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text") from None
    out: dict[int, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        record = parse_json(line, f"{path}:{n}")
        index = record.get("index") if isinstance(record, dict) else None
        prediction = record.get("prediction") if isinstance(record, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1 << 62 or prediction is None:
            raise UserError(f"{path}:{n}: expected {{'index': int, 'prediction': str}}")
        if not isinstance(prediction, str):
            raise UserError(f"{path}:{n}: prediction must be a string")
        if index in out:
            raise UserError(f"{path}:{n}: duplicate index {index}")
        out[index] = prediction
    return out


def write_predictions(path: str | Path, records: list[dict[str, Any]], tokenizer: Any = None) -> Path:
    """Write the JSONL format above through a temporary file and a rename (``stateft.atomic``). ``records`` are the
    training module's: ``example`` (batch metadata), ``prediction`` (decoded text) and ``prompt_ids``, which
    ``tokenizer``, when given, decodes into ``prompt``."""
    from stateft.atomic import replacing

    path = Path(path).expanduser()
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            ex = r["example"]
            record: dict[str, Any] = {"index": ex["index"], "prediction": r["prediction"]}
            if tokenizer is not None:
                record["prompt"] = tokenizer.decode(r["prompt_ids"])
            if "references" in ex:
                record["references"] = ex["references"]
            elif "query" in ex:
                record["references"] = [ex["query"]]
            elif "label" in ex:
                record["references"] = [str(ex["label"])]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def score_predictions_file(datamodule: Any, path: str | Path, split: str = "test") -> dict[str, float]:
    """Score the file against ``split`` of ``datamodule`` (a built DataModule: ``split_items`` and ``task``).

    Nothing is instantiated here: ``eval.py`` builds the DataModule from the user's command line or from our own
    config of the dataset a run folder names (``stateft.app.run_config``), never from a foreign file's ``_target_``.
    Returns the task's metrics plus ``missing`` (examples without a prediction) and ``num_scored``.
    """
    if not hasattr(datamodule, "split_items") or not hasattr(datamodule, "task"):
        raise TypeError(f"score_predictions_file needs a DataModule, got {type(datamodule).__name__}")
    dm = datamodule
    predictions = read_predictions(path)  # the file first: a bad one is refused before the split is built
    items = dm.split_items(split)
    known = {item["example"]["index"] for item in items}
    unknown = sorted(set(predictions) - known)
    if unknown:
        raise UserError(f"{path}: indices {unknown[:5]} are not in the {split} split ({len(items)} examples); "
                        "was it made with other dataset options?")  # fmt: skip
    examples = [item["example"] for item in items]
    preds = [predictions.get(ex["index"], "") for ex in examples]
    scores = dm.task.score(preds, examples)
    scores["missing"] = float(sum(ex["index"] not in predictions for ex in examples))
    scores["num_scored"] = float(len(examples))
    return scores
