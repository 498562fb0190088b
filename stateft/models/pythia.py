"""Pythia (GPT-NeoX) as a stateft backbone: the Transformer baseline of the State-offset paper (its Table 12 compares
Pythia-160m with prefix tuning against Mamba-130m).

``PythiaLM`` wraps transformers' ``GPTNeoXForCausalLM`` (``net``; after a method, the HF peft model around it) and
implements ``stateft.models.backbone.PeftBackbone``: the same loss, GLUE prediction, decoding contract and parameter
summary as ``MambaLM``. Pythia uses Mamba's tokenizer (EleutherAI/gpt-neox-20b), so the data is the same; its
embedding and head have ``padded_vocab_size`` rows (50304 for 50277 tokens) and the padding rows are never predicted.

The adapters are HF peft's (LoRA, prefix tuning, prompt tuning: ``stateft.methods.peft_methods``); peft's prompt
learning happens in its ``forward`` (virtual embeddings prepended, or a prefix of keys and values), so the prefill
goes through ``net`` and the decoding steps through the bare ``hf_model`` with the KV cache that prefill left.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
from torch import Tensor, nn

from stateft.models.backbone import device_of
from stateft.ops.backend import Backend


@dataclass
class PythiaConfig:
    """GPT-NeoX architecture numbers, named as ``MambaConfig``'s where they mean the same (``d_model``, ``n_layer``,
    ``vocab_size``, ``pad_vocab_size_multiple``); the rest as transformers' ``GPTNeoXConfig``."""

    d_model: int
    n_layer: int
    n_head: int
    vocab_size: int = 50277  # the tokenizer's tokens
    arch: Literal["gpt_neox"] = "gpt_neox"
    intermediate_size: int | None = None  # None = 4 * d_model (every Pythia)
    pad_vocab_size_multiple: int = 128  # 50277 -> 50304 embedding rows, as the Pythia checkpoints
    rotary_pct: float = 0.25  # share of each head's dimensions rotated by RoPE
    rotary_emb_base: int = 10000
    max_position_embeddings: int = 2048
    layer_norm_eps: float = 1e-5
    use_parallel_residual: bool = True  # h + attn(ln1(h)) + mlp(ln2(h))
    tie_embeddings: bool = False  # Pythia's head (embed_out) is its own matrix
    init_std: float = 0.02  # random init only (tests, smoke runs); irrelevant when weights are loaded

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return self.vocab_size if m <= 1 else math.ceil(self.vocab_size / m) * m

    @property
    def d_ff(self) -> int:
        return self.intermediate_size or 4 * self.d_model

    def to_hf(self) -> Any:
        """transformers' ``GPTNeoXConfig`` of this architecture."""
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(
            vocab_size=self.padded_vocab_size,
            hidden_size=self.d_model,
            num_hidden_layers=self.n_layer,
            num_attention_heads=self.n_head,
            intermediate_size=self.d_ff,
            rotary_pct=self.rotary_pct,
            rotary_emb_base=self.rotary_emb_base,
            max_position_embeddings=self.max_position_embeddings,
            layer_norm_eps=self.layer_norm_eps,
            use_parallel_residual=self.use_parallel_residual,
            tie_word_embeddings=self.tie_embeddings,
            initializer_range=self.init_std,
            bos_token_id=0,
            eos_token_id=0,  # <|endoftext|> of the gpt-neox-20b tokenizer
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PythiaConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; valid keys: {sorted(names)}")
        return cls(**values)


@dataclass
class KVCache:
    """A Transformer's decoding cache: transformers' ``DynamicCache`` (per layer keys and values, (b heads t
    head_dim), t growing by one per step; prefix tuning's P positions first) once the prefill has run."""

    past: Any = None
    started: bool = False

    def reorder(self, index: Tensor) -> None:
        self.past.reorder_cache(index)  # index_select on the batch dimension of every layer's keys and values


class PythiaLM(nn.Module):
    """GPT-NeoX language model behind the backbone contract (``stateft.models.backbone``)."""

    def __init__(self, config: PythiaConfig, hf_model: nn.Module | None = None) -> None:
        super().__init__()
        from transformers import GPTNeoXForCausalLM

        self.config = config
        self.net = hf_model if hf_model is not None else GPTNeoXForCausalLM(config.to_hf())
        self.peft_type: str | None = None  # peft's PeftType value once attach_peft has wrapped net (LORA...)
        self.name_or_path: str | None = None  # set by loading; stored in adapter records

    # -- the contract -------------------------------------------------------------------------------------------
    @property
    def hf_model(self) -> nn.Module:
        """The transformers model (LoRA's layers are injected into it in place; prompt learning leaves it as is)."""
        return self.net if self.peft_type is None else self.net.get_base_model()

    @property
    def lm_head(self) -> nn.Linear:
        return self.hf_model.get_output_embeddings()

    @property
    def backend(self) -> Backend:
        """Which implementation stateft's ops run (`stateft.ops.backend`); of those only the loss's cross-entropy
        chunks run on a Pythia: ``auto`` for the model's device (Triton's on CUDA)."""
        return Backend(device=device_of(self).type)

    def new_cache(self) -> KVCache:
        return KVCache()

    def hidden_states(self, input_ids: Tensor, cache: KVCache | None = None) -> Tensor:
        """input_ids (b l) -> final-norm hidden states (b l d) of the real tokens.

        A new sequence goes through ``net`` (peft's forward adds the virtual tokens or the prefix); with ``cache`` the
        keys and values are kept in it, and a started cache continues through ``hf_model`` (positions follow the
        cache's length: prefix and virtual tokens included, as in training).
        """
        common = {"output_hidden_states": True, "logits_to_keep": 1}  # no full-vocabulary logits
        if cache is not None and cache.started:
            out = self.hf_model(input_ids=input_ids, past_key_values=cache.past, use_cache=True, **common)
        else:
            out = self.net(input_ids=input_ids, use_cache=cache is not None, **common)
        if cache is not None:
            cache.past, cache.started = out.past_key_values, True
        h = out.hidden_states[-1]  # (b P+l d): transformers puts the final-norm output last
        return h[:, h.shape[1] - input_ids.shape[1] :]

    def forward(self, input_ids: Tensor, cache: KVCache | None = None) -> Tensor:
        """input_ids (b l) -> logits (b l V_padded)."""
        return self.lm_head(self.hidden_states(input_ids, cache))

    def step(self, input_ids: Tensor, cache: KVCache) -> Tensor:
        """One token per row: input_ids (b,) -> logits (b V_padded); starts the sequence if the cache is new."""
        return self.forward(input_ids[:, None], cache)[:, -1]

    # -- peft -----------------------------------------------------------------------------------------------------
    def attach_peft(self, peft_config: Any) -> list[str]:
        """Wrap ``net`` in peft's model for ``peft_config`` (which freezes the base); the sorted trainable names.
        New adapter tensors are made on the model's device (the meta device in dry runs)."""
        from peft import get_peft_model

        if self.peft_type is not None:
            raise ValueError("a peft method is already applied to this model (one adapter per run)")
        with torch.device(device_of(self)), warnings.catch_warnings():
            # peft asks transformers a deprecated question (is_gradient_checkpointing): not the user's concern
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            self.net = get_peft_model(self.net, peft_config)
        self.peft_type = peft_config.peft_type.value
        return sorted(name for name, p in self.named_parameters() if p.requires_grad)

    def generate_batch(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        num_beams: int = 1,
        eos_id: int | None = 0,
        length_penalty: float = 1.0,
    ) -> list[list[int]]:
        """New tokens per prompt (without EOS), the batch decoded at once by transformers' ``generate``."""
        from stateft.models.pythia_generation import generate_batch

        return generate_batch(self, prompts, max_new_tokens, num_beams, eos_id, length_penalty)


__all__ = ["KVCache", "PythiaConfig", "PythiaLM"]
