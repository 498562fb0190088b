"""The backbone contract: everything the methods, the training module, generation, the adapters and the parameter
summary need from a language model. A new backbone implements ``Backbone`` (and ``MambaBackbone`` or
``PeftBackbone`` for its methods) and is built by ``stateft.models.loading.model_from_config``; nothing else of the
app changes. Implementations: ``stateft.models.lm.MambaLM`` (Mamba-1, Mamba-2), ``stateft.models.pythia.PythiaLM``
(GPT-NeoX / Pythia through transformers and HF peft), ``stateft.vision.vim.VisionMamba`` (Vim, an image classifier:
``forward(images)`` gives class logits (b C), ``hidden_states(images)`` (b L d), ``lm_head`` is its head, ``vocab_size``
its classes; it does not decode; the training module runs image batches through ``stateft.vision.classify``).

Who uses what:

- ``config`` (``ModelConfig``): ``arch`` decides which methods apply (each method's ``archs``,
  ``stateft.methods.configs``; ``methods_for(arch)`` lists them) and the decoding branch;
  ``vocab_size`` bounds the predicted tokens (``lit_module``, ``generation``); the sizes go into adapter records.
- ``hidden_states(input_ids)`` (b l) -> (b l d): final-norm hidden states of the real tokens (virtual tokens of
  prompt tuning dropped). The loss (``stateft.loss.lm_loss``) multiplies the target positions only by
  ``lm_head.weight`` (V_padded, d) chunk by chunk, so full logits never exist; GLUE's one-step prediction
  (``lit_module.predict``) reads the last prompt position of a right-padded batch (causal: padding after a position
  never reaches it). ``forward(input_ids)`` = ``lm_head(hidden_states(input_ids))`` (b l V_padded).
  ``backend`` (``stateft.ops.backend.Backend``): the one decision of which implementation each op runs, on the
  model's device; the loss's cross-entropy chunks run ``backend.cross_entropy``.
- Decoding: ``new_cache()`` is empty; ``forward(input_ids, cache)`` is the prefill (the start-of-sequence adapters,
  prompt/prefix/initial state, apply there) and leaves the end state in the cache; ``step(tokens (b,), cache)`` ->
  logits (b V_padded) continues one token per row; ``cache.reorder(index)`` selects rows (beam search).
  Mamba's cache is the recurrent state, constant size: per layer the conv window (b c K-1) and the SSM state, fp32
  ((b E N) Mamba-1, (b H P N) Mamba-2), ``stateft.models.cache``. A Transformer's is its KV cache, per layer
  keys and values (b heads t head_dim), growing by one position per step (``stateft.models.pythia.KVCache``).
- Generation (``stateft.generation.generate_batch``): a Mamba backbone decodes prompt by prompt with stateft's
  greedy/beam search over ``step`` (CUDA graphs on a GPU); a ``PeftBackbone`` decodes the whole batch at once with
  its ``generate_batch`` (transformers' ``generate``: left-padded batch, KV cache, beams).
- Methods (``stateft.methods.registry.apply_method``): a ``MambaBackbone`` offers its mixers with the explicit
  adapter slots (``init_state``, ``state_offset``, ``prefix``, ``extra_states``; ``prompt`` on the model) that
  stateft's own methods fill; a ``PeftBackbone`` is tuned by HF peft (``stateft.methods.peft_methods``), which wraps
  ``hf_model``. Either way ``apply`` returns the sorted names of the trainable parameters (``named_parameters``).
- Parameters: ``parameters()`` yields every tensor once (tied weights once), ``requires_grad`` marks the trainable
  ones: ``stateft.models.lm.count_parameters`` / ``format_parameter_summary`` (peft's wording) work on any backbone,
  also on the meta device (dry runs). The optimiser reads ``_no_weight_decay`` tags on parameters.
- Device and dtype: those of the parameters, ``device_of(model)`` / ``dtype_of(model)`` (an nn.Module has no
  ``.device``; a method attaches its tensors there rather than next to one of the mixer's).
- Adapters: ``name_or_path`` (set by loading) and ``config`` go into the adapter record; Mamba adapters are
  stateft's format (``stateft.adapters``), a ``PeftBackbone``'s are peft's (``stateft.methods.peft_adapters``).

This module imports neither torch nor transformers (annotations only), so start-up checks can read the arch names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from stateft.ops.backend import Backend

# arch -> family; a family decides how methods are implemented (stateft's own on a Mamba, HF peft's on a Transformer)
# and how decoding runs. vim: Vision Mamba (``stateft.vision``), an image classifier whose mixers are Mamba-1 scans
# in both directions: stateft's own methods and adapters, no decoding.
MAMBA_ARCHS = ("mamba1", "mamba2", "vim")
TRANSFORMER_ARCHS = ("gpt_neox",)
VISION_ARCHS = ("vim",)  # models of images: batches of pixel_values and labels, no tokenizer
# s4d, s4: the SDT paper's deep S4 models (``stateft.s4``) with S4D (diagonal) or S4 (DPLR) layers: not language
# models. They implement the part of the contract the method registry reads (``config.arch``, ``named_parameters``);
# ``stateft.s4.runner`` trains them (regression or classification heads), not the language-model app.
S4_ARCHS = ("s4d", "s4")


@runtime_checkable
class ModelConfig(Protocol):
    """Architecture numbers every backbone's config has (``MambaConfig``, ``PythiaConfig``)."""

    arch: str  # "mamba1" | "mamba2" | "gpt_neox"
    d_model: int
    n_layer: int
    vocab_size: int  # the tokenizer's tokens: logits past it are never predicted

    @property
    def padded_vocab_size(self) -> int: ...  # rows of the embedding and of the LM head


@runtime_checkable
class DecodingCache(Protocol):
    """What generation does with a cache besides handing it back to the model."""

    started: bool  # False until the prefill (or a first step) ran: the start-of-sequence adapters apply then

    def reorder(self, index: Tensor) -> None: ...  # select batch rows (b',) (beam search; may repeat rows)


@runtime_checkable
class Backbone(Protocol):
    """A language model the whole app can train, evaluate, decode and save adapters of (module docstring)."""

    config: ModelConfig
    name_or_path: str | None  # where the weights came from (recorded in adapters)

    @property
    def lm_head(self) -> nn.Linear: ...  # weight (V_padded d): the loss multiplies hidden states by it

    @property
    def backend(self) -> Backend: ...  # the ops' implementations (stateft.ops.backend); the loss's cross-entropy too

    def hidden_states(self, input_ids: Tensor, cache: Any = None) -> Tensor: ...  # (b l) -> (b l d)

    def forward(self, input_ids: Tensor, cache: Any = None) -> Tensor: ...  # (b l) -> logits (b l V_padded)

    def new_cache(self) -> DecodingCache: ...

    def step(self, input_ids: Tensor, cache: Any) -> Tensor: ...  # tokens (b,) -> logits (b V_padded)

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]: ...


@runtime_checkable
class MambaBackbone(Backbone, Protocol):
    """A backbone stateft's own methods attach to: mixers with explicit adapter slots."""

    prompt: nn.Module | None  # slot: prompt tuning's virtual token embeddings (P d)

    def mixers(self) -> Iterator[nn.Module]: ...  # one per layer; slots init_state, state_offset, prefix, extra_states


@runtime_checkable
class PeftBackbone(Backbone, Protocol):
    """A transformers model tuned by HF peft, decoded by transformers' ``generate``."""

    @property
    def hf_model(self) -> nn.Module: ...  # the PreTrainedModel (LoRA layers are injected into it in place)

    def attach_peft(self, peft_config: Any) -> list[str]: ...  # wrap in peft; sorted trainable names

    def generate_batch(
        self, prompts: list[list[int]], max_new_tokens: int, num_beams: int, eos_id: int | None, length_penalty: float
    ) -> list[list[int]]: ...  # new tokens per prompt, without EOS


def is_transformer(arch_or_model: Any) -> bool:
    """Whether an arch name, a model config or a model is a Transformer (tuned by peft) rather than a Mamba."""
    arch = arch_or_model if isinstance(arch_or_model, str) else _arch(arch_or_model)
    return arch in TRANSFORMER_ARCHS


def is_vision(arch_or_model: Any) -> bool:
    """Whether an arch name, a model config or a model is an image model (``VISION_ARCHS``)."""
    arch = arch_or_model if isinstance(arch_or_model, str) else _arch(arch_or_model)
    return arch in VISION_ARCHS


def device_of(model: nn.Module) -> torch.device:
    """The device of a backbone's parameters (a model lives on one device)."""
    return next(model.parameters()).device


def dtype_of(model: nn.Module) -> torch.dtype:
    """The storage dtype of a backbone's frozen weights (its first parameter: the embedding)."""
    return next(model.parameters()).dtype


def _arch(obj: Any) -> str | None:
    config = getattr(obj, "config", obj)
    return getattr(config, "arch", None)


__all__ = [
    "MAMBA_ARCHS",
    "TRANSFORMER_ARCHS",
    "VISION_ARCHS",
    "S4_ARCHS",
    "Backbone",
    "DecodingCache",
    "MambaBackbone",
    "ModelConfig",
    "PeftBackbone",
    "device_of",
    "dtype_of",
    "is_transformer",
    "is_vision",
]
