"""GLUE (RTE, MRPC, CoLA, SST-2, QNLI, QQP, MNLI) as one DataModule driven by a table of tasks."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from stateft.data.base import TextToTextDataModule
from stateft.data.loading import require_fields
from stateft.data.task import Example, Task
from stateft.errors import UserError
from stateft.metrics import glue as glue_metrics


@dataclass(frozen=True)
class GlueTask:
    """Field names (one or two sentences), label count, instruction (exact, trailing space included), metrics."""

    fields: tuple[str, ...]
    num_labels: int
    instruction: str
    metrics: tuple[str, ...] = ("accuracy",)
    eval_splits: tuple[str, ...] = ("validation",)


GLUE_TASKS: dict[str, GlueTask] = {
    "rte": GlueTask(("sentence1", "sentence2"), 2,
        "Determine if the given pair of sentences displays entailment or not_entailment. "
        "Respond with '0' if entailment or '1' if not_entailment: "),
    "mrpc": GlueTask(("sentence1", "sentence2"), 2,
        "Can the given sentences be considered semantically identical? "
        "Respond with '0' if not_equivalent or '1' if equivalent: ", ("accuracy", "f1")),
    "cola": GlueTask(("sentence",), 2,
        "Review the sentence below and identify whether its grammar is Unacceptable or Acceptable. "
        "Respond with '0' if Unacceptable or '1' if Acceptable: ", ("accuracy", "mcc")),
    "sst2": GlueTask(("sentence",), 2,
        "Read the provided excerpt and choose between negative and positive to describe its sentiment. "
        "Respond with '0' if negative or '1' if positive: "),
    "qnli": GlueTask(("question", "sentence"), 2,
        "Consider the context and question, and indicate if the answer can be logically deduced from the context. "
        "Respond with '0' if entailment or '1' if not_entailment: "),
    "qqp": GlueTask(("question1", "question2"), 2,
        "Can these two statements be considered equal in meaning? "
        "Respond with '0' if not_equivalent or '1' if equivalent: ", ("accuracy", "f1")),
    "mnli": GlueTask(("premise", "hypothesis"), 3,
        "Assess the connection between the following sentences and classify it as entailment, neutral, or "
        "contradiction. Respond with '0' if entailment, '1' if neutral or '2' if contradiction: ",
        eval_splits=("validation_matched", "validation_mismatched")),
}  # fmt: skip


def format_glue(task: GlueTask, row: dict[str, Any]) -> Example:
    """prefix = instruction, input = first + "###" [+ second + "###"]; target = the label digit (no EOS).

    SST tokenises instruction + input as one string (``prefix_tokenization: joint``); SSP tokenised
    instruction + "###" as a prefix of its own."""
    text = "".join(row[field] + "###" for field in task.fields)
    return Example(task.instruction, text, str(row["label"]), {"label": int(row["label"]), "idx": row.get("idx")})


class GlueDataModule(TextToTextDataModule):
    """One GLUE task (``task``: rte, mrpc, cola, sst2, qnli, qqp, mnli) from ``nyu-mll/glue``.

    ``drop_out_of_class`` reproduces the reference's dropping of non-digit predictions from the metric;
    ``prefix_tokenization: joint`` (a base option) its tokenisation of instruction + sentences as one string.
    """

    hub_id = "nyu-mll/glue"

    def __init__(self, task: str, drop_out_of_class: bool = False, **kwargs: Any) -> None:
        if task not in GLUE_TASKS:
            raise UserError(f"dataset.task must be one of {sorted(GLUE_TASKS)}, got {task!r}")
        self.glue_task, self.task_name, self.drop_out_of_class = GLUE_TASKS[task], task, drop_out_of_class
        self.hub_config = task
        self.eval_splits = self.glue_task.eval_splits
        super().__init__(**kwargs)

    def cache_options(self) -> dict[str, Any]:
        return {"task": self.task_name}

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        rows = super().load_rows(split)
        require_fields(rows, (*self.glue_task.fields, "label"), f"glue/{self.task_name} {split}")
        if any(int(r["label"]) < 0 for r in rows):
            raise UserError(f"glue/{self.task_name} {split} has unlabelled rows (label -1: the hub test split)")
        return rows

    def format(self, row: dict[str, Any], train: bool) -> list[Example]:
        return [format_glue(self.glue_task, row)]

    def build_task(self, metric: str, num_beams: int, max_new_tokens: int) -> Task:
        scorer = partial(_score, self.glue_task, self.drop_out_of_class)
        return Task(f"glue_{self.task_name}", metric, generative=False, scorer=scorer, num_beams=1, max_new_tokens=1)


def _score(task: GlueTask, drop: bool, predictions: list[str], examples: list[dict[str, Any]]) -> dict[str, float]:
    labels = [int(ex["label"]) for ex in examples]
    return glue_metrics.score(predictions, labels, task.num_labels, task.metrics, drop_out_of_class=drop)
