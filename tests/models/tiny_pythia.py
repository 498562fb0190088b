"""A tiny random GPT-NeoX (Pythia) for the CPU tests, with a peft method applied and its adapter moved off its
initial values (so that it changes the outputs)."""

from __future__ import annotations

import torch

from stateft.methods import apply_method
from stateft.methods.configs import methods_for
from stateft.models.pythia import PythiaConfig
from stateft.models.pythia_loading import build_model

# hidden 32, 2 layers of 4 heads, 60 tokens in a head of 64 rows (4 padding rows that must never be predicted);
# init std 0.5: peaked logits, so that greedy and beam decisions are far from ties
TINY_PYTHIA = PythiaConfig(
    d_model=32,
    n_layer=2,
    n_head=4,
    vocab_size=60,
    pad_vocab_size_multiple=16,
    intermediate_size=64,
    max_position_embeddings=128,
    init_std=0.5,
)
PEFT = methods_for("gpt_neox")  # the registry's methods for a Transformer: HF peft's
SMALL = {"lora": {"dropout": 0.0, "r": 4}, "prefix": {"num_virtual_tokens": 3}, "prompt": {"num_virtual_tokens": 3}}


def tiny_pythia(method: str | None = None, seed: int = 0, config: PythiaConfig = TINY_PYTHIA):
    """The tiny model (eval mode), ``method`` applied with small options and its adapter randomised."""
    model = build_model(config, seed=seed)
    if method is not None:
        names = apply_method(method, model, {"name": method, **SMALL[method]})
        params = dict(model.named_parameters())
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name in names:
                params[name].add_(0.5 * torch.randn(params[name].shape, generator=g))
    return model.eval()
