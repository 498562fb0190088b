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


def read_predictions(path: str | Path) -> dict[int, str]:
    """``index -> prediction`` from a JSONL file (duplicate indices are an error)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"predictions file {str(path)!r} not found")
    out: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            index, prediction = int(record["index"]), record["prediction"]
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(
                f"{path}:{n}: expected {{'index': int, 'prediction': str}} ({type(err).__name__})"
            ) from None
        if not isinstance(prediction, str):
            raise UserError(f"{path}:{n}: prediction must be a string")
        if index in out:
            raise UserError(f"{path}:{n}: duplicate index {index}")
        out[index] = prediction
    return out


def write_predictions(path: str | Path, examples: list[dict[str, Any]], predictions: list[str],
                      prompts: list[str] | None = None) -> None:  # fmt: skip
    """Write the JSONL format above for aligned ``examples`` (batch metadata) and decoded ``predictions``."""
    with open(Path(path).expanduser(), "w", encoding="utf-8") as f:
        for i, (ex, pred) in enumerate(zip(examples, predictions)):
            record: dict[str, Any] = {"index": ex["index"], "prediction": pred}
            if prompts is not None:
                record["prompt"] = prompts[i]
            if "references" in ex:
                record["references"] = ex["references"]
            elif "query" in ex:
                record["references"] = [ex["query"]]
            elif "label" in ex:
                record["references"] = [str(ex["label"])]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def score_predictions_file(dataset_cfg: Any, path: str | Path, split: str = "test") -> dict[str, float]:
    """Instantiate the dataset node (a Hydra ``_target_`` config or a DataModule), build ``split`` and score the file.

    Returns the task's metrics plus ``missing`` (examples without a prediction) and ``num_scored``.
    """
    if hasattr(dataset_cfg, "split_items"):
        dm = dataset_cfg
    else:
        import hydra

        dm = hydra.utils.instantiate(dataset_cfg)
    items = dm.split_items(split)
    predictions = read_predictions(path)
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
