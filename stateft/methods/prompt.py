"""Prompt tuning (Lester et al., 2021) on Mamba: P virtual token embeddings prepended to the input embeddings.

Attaches to: ``model.prompt``. Trainable: embeddings (P, d) for the whole model. Init: copies of random vocabulary
rows (``init: vocab``) or N(0, 1) rescaled to the vocabulary's mean norm (``init: normal``). The virtual tokens run
once at the start of a sequence (training forward, or the prefill in cached generation); their outputs are dropped.

``reparam: true`` (MambaPEFT's prompt tuning with ``prompt_projection``, its ``PrefixEncoder`` with one layer): the
virtual tokens are MLP(E) = W2 tanh(W1 E + b1) + b2 with W1, W2 (d, d); trained: E (P, d), initialised as above, and
the MLP, with nn.Linear's default init (U(-1/sqrt d, 1/sqrt d) for weights and biases). The model reads the MLP's
output as ``prompt.embeddings``; the adapter stores E and the MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stateft.methods.base import (
    MethodSpec,
    fan_in_uniform,
    freeze_all,
    init_generator,
    new_parameter,
    trainable_names,
)
from stateft.methods.configs import PromptConfig
from stateft.models.backbone import device_of, is_vision


class PromptEmbedding(nn.Module):
    def __init__(self, embeddings: torch.Tensor) -> None:
        super().__init__()
        self.embeddings = new_parameter(embeddings)  # (P d)


class ReparamPrompt(nn.Module):
    """E (P, d) and the MLP d -> d -> d whose output the model reads as ``embeddings``."""

    def __init__(self, tokens: torch.Tensor, generator: torch.Generator) -> None:
        super().__init__()
        d, device = tokens.shape[1], tokens.device
        self.tokens = new_parameter(tokens)  # (P d)
        self.W1 = new_parameter(fan_in_uniform((d, d), d, generator, device))
        self.b1 = new_parameter(fan_in_uniform((d,), d, generator, device))
        self.W2 = new_parameter(fan_in_uniform((d, d), d, generator, device))
        self.b2 = new_parameter(fan_in_uniform((d,), d, generator, device))

    @property
    def embeddings(self) -> torch.Tensor:
        return F.linear(torch.tanh(F.linear(self.tokens, self.W1, self.b1)), self.W2, self.b2)  # (P d)


def apply(model: nn.Module, cfg: PromptConfig) -> list[str]:
    freeze_all(model)
    generator = init_generator()
    if is_vision(model):  # Vim has no vocabulary: N(0, 1) tokens, as MambaPEFT's nn.Embedding starts (stateft.vision)
        init = torch.randn(cfg.num_virtual_tokens, model.config.d_model, generator=generator).to(device_of(model))
        model.prompt = ReparamPrompt(init, generator) if cfg.reparam else PromptEmbedding(init)
        return trainable_names(model)
    vocab = model.backbone.embedding.weight.detach()[: model.config.vocab_size].float()
    if cfg.init == "vocab":
        rows = torch.randint(0, vocab.shape[0], (cfg.num_virtual_tokens,), generator=generator)
        init = vocab[rows.to(vocab.device)].clone()
    else:  # normal (PromptConfig checks the choice)
        init = torch.randn(cfg.num_virtual_tokens, vocab.shape[1], generator=generator).to(vocab.device)
        init = init / init.norm(dim=1, keepdim=True) * vocab.norm(dim=1).mean()
    model.prompt = ReparamPrompt(init, generator) if cfg.reparam else PromptEmbedding(init)
    return trainable_names(model)


SPEC = MethodSpec(PromptConfig, apply)
