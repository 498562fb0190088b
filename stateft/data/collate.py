"""Batching: right-pad with the pad id and mask the prompt in the labels (loss on target tokens only)."""

from __future__ import annotations

from typing import Any

import torch

from stateft.loss import IGNORE_INDEX


def pad_and_mask(items: list[dict[str, Any]], pad_id: int = 0, with_prompts: bool = False) -> dict[str, Any]:
    """Concatenate ``prompt_ids + target_ids`` per item and right-pad to the longest.

    Returns ``input_ids`` (b l) and ``labels`` (b l): labels equal the input ids on target tokens and are
    ``IGNORE_INDEX`` on prompt and padding positions (aligned with ``input_ids``; the model shifts). With
    ``with_prompts`` also ``prompt_ids`` (list of lists, prompt only, for generation) and ``examples`` (the metadata
    the metric needs).
    """
    length = max(len(it["prompt_ids"]) + len(it["target_ids"]) for it in items)
    input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
    for row, it in enumerate(items):
        n_prompt, n_target = len(it["prompt_ids"]), len(it["target_ids"])
        input_ids[row, : n_prompt + n_target] = torch.tensor(it["prompt_ids"] + it["target_ids"], dtype=torch.long)
        labels[row, n_prompt : n_prompt + n_target] = torch.tensor(it["target_ids"], dtype=torch.long)
    batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels}
    if with_prompts:
        batch["prompt_ids"] = [list(it["prompt_ids"]) for it in items]
        batch["examples"] = [it["example"] for it in items]
    return batch
