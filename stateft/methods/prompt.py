"""Prompt tuning (Lester et al., 2021) on Mamba: P virtual token embeddings prepended to the input embeddings.

Attaches to: ``model.prompt``. Trainable: embeddings (P, d) for the whole model. Init: copies of random vocabulary
rows (``init: vocab``) or N(0, 1) rescaled to the vocabulary's mean norm (``init: normal``). The virtual tokens run
once at the start of a sequence (training forward, or the prefill in cached generation); their outputs are dropped.
"""

from __future__ import annotations

import torch
from torch import nn

from stateft.methods.base import MethodSpec, freeze_all, init_generator, new_parameter, trainable_names
from stateft.methods.configs import PromptConfig


class PromptEmbedding(nn.Module):
    def __init__(self, embeddings: torch.Tensor) -> None:
        super().__init__()
        self.embeddings = new_parameter(embeddings)  # (P d)


def apply(model: nn.Module, cfg: PromptConfig) -> list[str]:
    freeze_all(model)
    vocab = model.backbone.embedding.weight.detach()[: model.config.vocab_size].float()
    generator = init_generator()
    if cfg.init == "vocab":
        rows = torch.randint(0, vocab.shape[0], (cfg.num_virtual_tokens,), generator=generator)
        init = vocab[rows.to(vocab.device)].clone()
    elif cfg.init == "normal":
        init = torch.randn(cfg.num_virtual_tokens, vocab.shape[1], generator=generator).to(vocab.device)
        init = init / init.norm(dim=1, keepdim=True) * vocab.norm(dim=1).mean()
    else:
        raise NotImplementedError(f"prompt init {cfg.init!r}: use vocab or normal")
    model.prompt = PromptEmbedding(init)
    return trainable_names(model)


SPEC = MethodSpec(PromptConfig, apply)
