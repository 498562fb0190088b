"""Shared by the parity tests: writing a transformers model's weights in mamba_ssm's checkpoint layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def save_mamba_ssm_layout(
    folder: Path, hf_model: torch.nn.Module, config: dict, vocab_rows: int | None = None, drop_head: bool = False
) -> Path:
    """``hf_model``'s weights as mamba_ssm saves them (``backbone.embedding.*`` names, ``pytorch_model.bin``) with
    ``config`` as its config.json; the embedding zero-padded to ``vocab_rows``; ``drop_head``: no (tied) lm_head."""
    state = {
        k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
        for k, v in hf_model.state_dict().items()
        if not (drop_head and k == "lm_head.weight")
    }
    emb = state["backbone.embedding.weight"]
    if vocab_rows is not None and vocab_rows > emb.shape[0]:
        state["backbone.embedding.weight"] = torch.cat([emb, emb.new_zeros(vocab_rows - emb.shape[0], emb.shape[1])])
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(config))
    return folder
