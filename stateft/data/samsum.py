"""SAMSum dialogue summarisation: prompt = dialogue + "###", target = summary + EOS; ROUGE-1/2/L."""

from __future__ import annotations

from typing import Any

from stateft.data.base import TextToTextDataModule
from stateft.data.loading import require_fields
from stateft.data.task import Example, Task
from stateft.metrics import rouge
from stateft.tokenizer import EOS_TOKEN


def format_samsum(row: dict[str, Any]) -> Example:
    """No prefix; the dialogue keeps its ``\\r\\n`` turn separators."""
    return Example(
        "", row["dialogue"] + "###", row["summary"] + EOS_TOKEN, {"id": row.get("id"), "references": [row["summary"]]}
    )


class SamsumDataModule(TextToTextDataModule):
    """``Samsung/samsum`` (or its parquet mirror ``knkarthick/samsum`` via ``hub_id``); paper protocol tests on the
    hub test split, as the State-offset paper did."""

    paper_eval_splits = ("test",)

    def __init__(self, hub_id: str = "knkarthick/samsum", hub_revision: str | None = None, **kwargs: Any) -> None:
        self.hub_id, self.hub_revision = hub_id, hub_revision
        super().__init__(**kwargs)

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        rows = super().load_rows(split)
        require_fields(rows, ("dialogue", "summary"), f"samsum {split}")
        # a few mirror rows have an empty dialogue; they cannot be prompted
        return [r for r in rows if r["dialogue"] and r["summary"] is not None]

    def format(self, row: dict[str, Any], train: bool) -> list[Example]:
        return [format_samsum(row)]

    def build_task(self, metric: str, num_beams: int, max_new_tokens: int) -> Task:
        return Task("samsum", metric, True, _score, num_beams=num_beams, max_new_tokens=max_new_tokens)


def _score(predictions: list[str], examples: list[dict[str, Any]]) -> dict[str, float]:
    return rouge.score(predictions, [ex["references"][0] for ex in examples])
