"""The training module's image path: batches ``{"pixel_values" (b 3 S S), "labels" (b,), "examples"}``
(`stateft.vision.vtab.collate_images`) on a classifier whose ``forward`` gives class logits (b C)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


def is_image_batch(batch: dict[str, Any]) -> bool:
    return "pixel_values" in batch


def classification_loss(model: nn.Module, batch: dict[str, Any]) -> Tensor:
    """Mean cross-entropy of the class logits (fp32) against the labels."""
    return F.cross_entropy(model(batch["pixel_values"]).float(), batch["labels"])


def evaluate_batch(model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, list[str]]:
    """(the mean loss, the predicted class of each image as a string) from one forward."""
    logits = model(batch["pixel_values"]).float()
    loss = F.cross_entropy(logits, batch["labels"])
    return loss, [str(int(c)) for c in logits.argmax(-1)]
