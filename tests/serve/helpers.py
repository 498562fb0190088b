"""Adapters with random trained values saved to disk, and the one-adapter-alone reference decoding."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from stateft.adapters import load_adapter, save_adapter
from stateft.generation import generate
from stateft.methods import apply_method
from stateft.models.loading import build_model


def save_random_adapter(config, method: str, options: dict, seed: int, directory: Path, scale: float = 0.5) -> Path:
    """Apply ``method`` to the seed-0 base of ``config``, move its trainable tensors off their zero init (seeded), and
    save the adapter."""
    model = build_model(config, seed=0)
    names = apply_method(method, model, {"name": method, **options})
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in names:
            params[name].add_(scale * torch.randn(params[name].shape, generator=g))
    return save_adapter(directory, model, base_model={"name": "tiny"})


def alone(config, directory: Path | None):
    """The seed-0 base of ``config`` with the adapter in ``directory`` loaded (None: the base itself)."""
    model = build_model(config, seed=0)
    if directory is not None:
        load_adapter(directory, model)
    return model.eval()


def prompts(lengths: list[int], seed: int = 0, vocab: int = 64) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]


def eos_that_splits(models: list, prompt_list: list[list[int]], num_beams: int, max_new: int) -> int:
    """An EOS token under which the rows (row i decoded by ``models[i]``) finish at different steps: some before the
    limit, not all at once, so the batch drops rows while others go on."""
    outputs = [
        generate(m, p, max_new_tokens=max_new, num_beams=num_beams, eos_id=None) for m, p in zip(models, prompt_list)
    ]
    counts = Counter(t for out in outputs for t in set(out))
    for token in [t for t, _ in counts.most_common()] + list(range(64)):
        lengths = {
            len(generate(m, p, max_new_tokens=max_new, num_beams=num_beams, eos_id=token))
            for m, p in zip(models, prompt_list)
        }
        if len(lengths) > 1 and min(lengths) < max_new:
            return token
    raise AssertionError("no token splits the rows' lengths")


def count_steps(monkeypatch, model) -> list[int]:
    """The rows of every decoding step ``model`` runs from now on (``MambaLM.step``; a prefill runs none)."""
    sizes: list[int] = []
    real = model.step

    def counted(tokens, cache):
        sizes.append(tokens.shape[0])
        return real(tokens, cache)

    monkeypatch.setattr(model, "step", counted)
    return sizes
