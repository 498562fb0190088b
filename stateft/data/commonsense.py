"""Commonsense-170k (LLM-Adapters' ``commonsense_170k.json``), formatted and split as MambaPEFT fine-tuned on it.

Rows: ``instruction``, ``input`` (empty in the released file), ``output`` (``the correct answer is <answer>``) and
``answer``. The text is MambaPEFT's Alpaca-style template, byte for byte (``template``), tokenised as ONE string
(prompt + output), cut to ``cutoff_len`` tokens, then EOS appended when the cut left room. The loss covers the prompt
too (``train_on_inputs``, MambaPEFT's default). ``heldout_size`` rows drawn with ``heldout_seed`` are held out as the
validation set the way ``datasets``' ``train_test_split(test_size=2000, seed=42)`` draws them; the benchmark's test is
lm-evaluation-harness's eight zero-shot tasks (``python eval.py harness=commonsense8``, ``stateft.harness``), so
``test`` here is the held-out set again.

Validation decodes the response and scores the answer it names (``answer_of``) against the row's ``answer``.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from stateft.data.base import TextToTextDataModule
from stateft.data.loading import SUFFIXES, load_split, require_fields
from stateft.data.splits import subset
from stateft.data.task import Example, Task
from stateft.errors import UserError

# MambaPEFT's generate_prompt (language/commonsense_reasoning/finetune.py): the lines after the first keep the
# 16 spaces of the source's indentation, the first line ends in one space (with input) or two (without)
INDENT = " " * 16
HEADER_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. "
)
HEADER = "Below is an instruction that describes a task. Write a response that appropriately completes the request.  "
_ANSWER = re.compile(r"the correct answer is\s*([A-Za-z0-9_\-]+)", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9_\-]+")


def template(instruction: str, input_text: str, output: str) -> str:
    """The full training text; with ``output=""`` the prompt the model answers."""
    if input_text:
        return (
            f"{HEADER_WITH_INPUT}\n\n{INDENT}### Instruction:\n{INDENT}{instruction}\n{INDENT}\n"
            f"{INDENT}### Input:\n{INDENT}{input_text}\n{INDENT}\n{INDENT}### Response:\n{INDENT}{output}"
        )
    return (
        f"{HEADER}\n\n{INDENT}### Instruction:\n{INDENT}{instruction}\n{INDENT}\n"
        f"{INDENT}### Response:\n{INDENT}{output}"
    )


def answer_of(text: str) -> str:
    """The answer a response names: the word after ``the correct answer is``, else the first word; lower case."""
    found = _ANSWER.search(text)
    word = found.group(1) if found else next(iter(_WORD.findall(text)), "")
    return word.lower()


def format_commonsense(row: dict[str, Any]) -> Example:
    """prompt = the template up to the response; target = ``output``. The gold answer is ``answer`` (or, for rows
    without it, the one ``output`` names)."""
    input_text = row.get("input") or ""
    answer = row.get("answer") or answer_of(row["output"])
    return Example("", template(row["instruction"], input_text, ""), row["output"], {"answer": str(answer).lower()})


def heldout_split(rows: list[Any], size: int, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, held out) as ``datasets.Dataset.train_test_split(test_size=size, shuffle=True, seed=seed)`` makes them:
    the first ``size`` positions of ``np.random.default_rng(seed).permutation(n)`` are held out, the rest train, each
    in permutation order."""
    n = len(rows)
    if not 0 < size < n:
        raise UserError(
            f"commonsense170k: heldout_size={size} must be between 1 and {n - 1} (the data has {n} rows); "
            "set dataset.heldout_size=..."
        )
    perm = np.random.default_rng(seed).permutation(n)
    return [rows[int(i)] for i in perm[size:]], [rows[int(i)] for i in perm[:size]]


class CommonsenseDataModule(TextToTextDataModule):
    """Commonsense-170k from ``path`` (the LLM-Adapters JSON file itself, or a folder with ``train.json``/``.jsonl``/
    ``.parquet``) or the hub (``hub_id``, split ``train``).

    A local folder that also holds a ``validation`` file uses it as the held-out set instead of drawing one (small
    fixture data); the released data has one file and is split as MambaPEFT did.
    """

    def __init__(
        self,
        hub_id: str = "zwhe99/commonsense_170k",
        hub_revision: str | None = None,
        cutoff_len: int = 256,
        heldout_size: int = 2000,
        heldout_seed: int = 42,
        train_on_inputs: bool = True,
        **kwargs: Any,
    ) -> None:
        self.hub_id, self.hub_revision = hub_id, hub_revision
        if not isinstance(cutoff_len, int) or cutoff_len < 2:
            raise UserError(f"dataset.cutoff_len must be an integer >= 2, got {cutoff_len!r}")
        self.cutoff_len, self.heldout_size, self.heldout_seed = cutoff_len, heldout_size, heldout_seed
        self.train_on_inputs = bool(train_on_inputs)
        self._split_rows: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
        super().__init__(**kwargs)

    def cache_options(self) -> dict[str, Any]:
        return {
            "cutoff_len": self.cutoff_len, "heldout_size": self.heldout_size, "heldout_seed": self.heldout_seed,
        }  # fmt: skip

    def load_rows(self, split: str) -> list[dict[str, Any]]:
        """Rows of ``split``: ``instruction`` and ``output`` strings; ``input`` and ``answer`` strings when given."""
        rows = load_split(self.hub_id, self.hub_config, split, self.path, revision=self.hub_revision)
        require_fields(rows, ("instruction", "output"), f"commonsense170k {split}", optional=("input", "answer"))
        return rows

    def _local_validation(self) -> bool:
        folder = self.path
        return folder is not None and folder.is_dir() and any((folder / f"validation{s}").is_file() for s in SUFFIXES)

    def _train_and_heldout(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(train rows, held-out rows), loaded and split on the first call only: every split reads them."""
        if self._split_rows is None:
            if self._local_validation():
                self._split_rows = self.load_rows("train"), self.load_rows("validation")
            else:
                self._split_rows = heldout_split(self.load_rows("train"), self.heldout_size, self.heldout_seed)
        return self._split_rows

    def _rows_for(self, split: str) -> list[dict[str, Any]]:
        """train: the rows not held out (``subset_size``: a seeded subset of them); validation and test: held out."""
        train, heldout = self._train_and_heldout()
        return subset(train, self.subset_size, self.seed) if split == "train" else heldout

    def format(self, row: dict[str, Any], train: bool) -> list[Example]:
        return [format_commonsense(row)]

    def tokenize(self, ex: Example) -> dict[str, Any]:
        """prompt + output tokenised as one string and cut to ``cutoff_len``; EOS appended when the cut left room
        (MambaPEFT's tokenize). ``prompt_ids`` are the leading tokens shared with the prompt tokenised alone (the
        last prompt token may merge with the output's first word), ``target_ids`` the rest."""
        encode, eos = self.tokenizer.encode, self.tokenizer.eos_id
        full = encode(ex.prefix + ex.input + ex.target)[: self.cutoff_len]
        if full and full[-1] != eos and len(full) < self.cutoff_len:
            full.append(eos)
        prompt = encode(ex.prefix + ex.input)
        shared = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full)))
        return {"prompt_ids": full[:shared], "target_ids": full[shared:]}

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        loader = super()._loader(split, batch_size, shuffle)
        if self.train_on_inputs:
            loader.collate_fn = partial(label_prompts, loader.collate_fn)
        return loader

    def build_task(self, metric: str, num_beams: int, max_new_tokens: int) -> Task:
        return Task("commonsense170k", metric, True, _score, num_beams=num_beams, max_new_tokens=max_new_tokens)


def label_prompts(collate: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    """``collate``'s batch with the prompt tokens labelled too: the loss covers prompt + response (padding stays
    ignored), as MambaPEFT trained with ``train_on_inputs=True``."""
    batch = collate(items)
    for row, item in enumerate(items):
        n = len(item["prompt_ids"])
        batch["labels"][row, :n] = batch["input_ids"][row, :n]
    return batch


def _score(predictions: list[str], examples: list[dict[str, Any]]) -> dict[str, float]:
    hits = [answer_of(p) == ex["answer"] for p, ex in zip(predictions, examples)]
    return {"accuracy": sum(hits) / max(len(hits), 1)}


__all__ = ["CommonsenseDataModule", "answer_of", "format_commonsense", "heldout_split", "template"]
