"""DART data-to-text: RDF triples -> text; BLEU-4 and METEOR over all references.

Training makes one example per reference text; evaluation one per tripleset with all its references (the
evaluation target, for the validation loss, is the first reference).
"""

from __future__ import annotations

from typing import Any

from stateft.data.base import TextToTextDataModule
from stateft.data.loading import load_split, require_fields
from stateft.data.task import Example, Task
from stateft.metrics import bleu, meteor
from stateft.tokenizer import EOS_TOKEN

PREFIX = "Generate text for the following RDF triples:\n"


def reference_texts(annotations: Any) -> list[str]:
    """The texts of ``annotations``: a dict of lists in ``datasets`` or a list of dicts in the raw JSON."""
    if isinstance(annotations, dict):
        return list(annotations["text"])
    return [a["text"] for a in annotations]


def linearize(tripleset: list[list[str]]) -> str:
    """``s : p : o | s : p : o``."""
    return " | ".join(" : ".join(triple) for triple in tripleset)


def format_dart(row: dict[str, Any], train: bool) -> list[Example]:
    """prefix + triples + "###"; target = reference + EOS."""
    prompt = linearize(row["tripleset"]) + "###"
    refs = reference_texts(row["annotations"])
    if train:
        return [Example(PREFIX, prompt, ref + EOS_TOKEN, {"references": [ref]}) for ref in refs]
    return [Example(PREFIX, prompt, refs[0] + EOS_TOKEN, {"references": refs})] if refs else []


class DartDataModule(TextToTextDataModule):
    """``Yale-LILY/dart``; local data may be the raw release (``dart-v1.1.1-full-{train,dev,test}.json``)."""

    def __init__(self, hub_id: str = "Yale-LILY/dart", hub_revision: str | None = None, **kwargs: Any) -> None:
        self.hub_id, self.hub_revision = hub_id, hub_revision
        super().__init__(**kwargs)

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        alias = {"validation": ("*-dev",), "train": ("*-train",), "test": ("*-test",)}[split]
        rows = load_split(self.hub_id, self.hub_config, split, self.path, aliases=alias, revision=self.hub_revision)
        require_fields(rows, ("tripleset", "annotations"), f"dart {split}")
        return rows

    def format(self, row: dict[str, Any], train: bool) -> list[Example]:
        return format_dart(row, train)

    def build_task(self, metric: str, num_beams: int, max_new_tokens: int) -> Task:
        return Task("dart", metric, True, _score, num_beams=num_beams, max_new_tokens=max_new_tokens)


def _score(predictions: list[str], examples: list[dict[str, Any]]) -> dict[str, float]:
    refs = [ex["references"] for ex in examples]
    out = {"bleu": bleu.corpus_bleu(predictions, refs)["bleu"]}
    out.update(meteor.score(predictions, refs))
    return out
