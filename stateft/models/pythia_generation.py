"""Batched greedy and beam-search decoding of a ``PythiaLM`` with transformers' ``generate`` (KV cache, num_beams).

Prompts are left-padded into one batch with an attention mask. Rotary positions are relative, so the padding in front
of a prompt changes nothing; every row decodes as it would alone (``tests/models/test_pythia.py``). The search is
transformers' own, with the settings of stateft's Mamba decoder (``stateft.generation``): no sampling, beams scored
by sum log-prob / length**length_penalty with early_stopping=False, an EOS ranked below the beam width not finishing,
log-probabilities over the tokenizer's ``vocab_size`` tokens only (``RealVocabulary``: the padding rows of the head are
never chosen and take no probability mass).

Prompt tuning: peft's own ``generate`` puts the virtual tokens in front of the padding, so a padded row would see
them farther away than alone; here they go between the padding and the prompt (peft's ``get_prompt`` embeddings,
decoded from ``inputs_embeds``). LoRA and prefix tuning decode through peft's ``generate`` (the prefix is a cache of
keys and values, always adjacent to the prompt's first position under the mask).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers import LogitsProcessor

from stateft.models.backbone import device_of


class RealVocabulary(LogitsProcessor):
    """Scores past ``vocab_size`` to -inf, then log-softmax over the rest. Beam search
    hands it log-probabilities over the padded head; renormalising gives log_softmax(logits[:vocab_size]) exactly (as
    stateft's decoder); greedy search hands it logits, whose argmax it keeps."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        scores = scores.float().clone()
        scores[:, self.vocab_size :] = float("-inf")
        return torch.log_softmax(scores, dim=-1)


@torch.no_grad()
def generate_batch(
    model: Any,
    prompts: list[list[int]],
    max_new_tokens: int,
    num_beams: int = 1,
    eos_id: int | None = 0,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """New tokens per prompt of ``model`` (a ``PythiaLM``), EOS and what follows it removed."""
    from transformers import GenerationConfig, LogitsProcessorList

    device = device_of(model)
    pad = 0 if eos_id is None else eos_id  # never attended to (masked), only fills the batch
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long, device=device)  # (b L) left-padded
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long, device=device)
        mask[row, width - len(prompt) :] = 1
    settings = GenerationConfig(
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        num_return_sequences=1,
        do_sample=False,
        early_stopping=False,
        length_penalty=length_penalty,
        eos_token_id=eos_id,
        pad_token_id=pad,
        use_cache=True,
    )
    processors = LogitsProcessorList()
    if model.config.padded_vocab_size > model.config.vocab_size:
        processors.append(RealVocabulary(model.config.vocab_size))
    kwargs = {"generation_config": settings, "logits_processor": processors}
    if model.peft_type == "PROMPT_TUNING":
        embeds, mask = _virtual_tokens_after_padding(model, ids, mask)
        new = model.hf_model.generate(inputs_embeds=embeds, attention_mask=mask, **kwargs)  # new tokens only
    else:
        new = model.net.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, width:]
    return [_until_eos(row, eos_id) for row in new.tolist()]


def _virtual_tokens_after_padding(model: Any, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Input embeddings (b pad+P+l d) with peft's virtual tokens right before each prompt, and their mask."""
    x = model.hf_model.get_input_embeddings()(ids)  # (b L d)
    virtual = model.net.get_prompt(batch_size=ids.shape[0]).to(x.dtype)  # (b P d)
    n_pad = (mask == 0).sum(dim=1).tolist()
    rows = [torch.cat([x[r, :n], virtual[r], x[r, n:]]) for r, n in enumerate(n_pad)]
    ones = torch.ones(ids.shape[0], virtual.shape[1], dtype=mask.dtype, device=mask.device)
    masks = [torch.cat([mask[r, :n], ones[r], mask[r, n:]]) for r, n in enumerate(n_pad)]
    return torch.stack(rows), torch.stack(masks)


def _until_eos(tokens: list[int], eos_id: int | None) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id is not None and eos_id in tokens else tokens
