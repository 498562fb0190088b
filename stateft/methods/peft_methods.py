"""HF peft's LoRA, prefix tuning and prompt tuning on a Transformer backbone (``PeftBackbone``: Pythia), behind the
same method names and options as stateft's Mamba methods. peft is used as a library: its configs, ``get_peft_model``
and its save format (``stateft.methods.peft_adapters``).

The mapping (``conf/method/<name>.yaml`` option -> peft option):

- ``lora`` -> ``LoraConfig``: r (null: 8) -> r; alpha (null: r, scale 1 as the papers) -> lora_alpha; dropout ->
  lora_dropout; target_modules (null: [query_key_value], peft's default for GPT-NeoX; any of ``PYTHIA_LINEARS``)
  -> target_modules; bias none. Init (peft's): A Kaiming-uniform, B zero.
- ``prefix`` -> ``PrefixTuningConfig``: num_virtual_tokens -> num_virtual_tokens: P keys and values per layer,
  trained directly (no reparametrisation MLP: prefix_projection false), init N(0, 1). This is Li & Liang's prefix
  tuning, not Mamba's affix (which prepends vectors to the in_proj output).
- ``prompt`` -> ``PromptTuningConfig``: num_virtual_tokens -> num_virtual_tokens; init vocab -> SAMPLE_VOCAB (copies
  of random rows of the embedding, its padding rows included), normal -> RANDOM (N(0, 1), not rescaled to the
  vocabulary's norm as stateft's Mamba prompt is).
- ``lr`` stays stateft's (the optimiser's), not peft's.

Every other method acts on Mamba's selective scan or its parameters (state offsets, initial states, extra states,
SDT's sparse S6 deltas, BitFit on the mixers' biases, the S6/SSD subsets): its config's ``archs`` names no
Transformer, so ``apply_method`` refuses it on one with a line naming the methods that apply
(``stateft.methods.configs.refusal``). Initial values come from the global torch generator, seeded by the run's seed.
"""

from __future__ import annotations

from typing import Any

from stateft.errors import UserError
from stateft.methods.configs import LoraConfig, MethodConfig, PrefixConfig, PromptConfig

# the linears of a GPT-NeoX layer, as peft's target_modules name them (suffixes of the module names)
PYTHIA_LINEARS = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
DEFAULT_LORA_TARGETS = ["query_key_value"]  # peft's default for GPT-NeoX
DEFAULT_LORA_RANK = 8


def peft_config_for(cfg: MethodConfig) -> Any:
    """peft's config for a stateft method config (the table in the module docstring)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import PrefixTuningConfig, PromptTuningConfig, TaskType

    if isinstance(cfg, LoraConfig):
        targets = list(cfg.target_modules or DEFAULT_LORA_TARGETS)
        unknown = [t for t in targets if t not in PYTHIA_LINEARS]
        if unknown:
            raise UserError(
                f"lora: target_modules {unknown} are not linears of a GPT-NeoX layer; choose from: "
                f"{', '.join(PYTHIA_LINEARS)}"
            )
        r = cfg.r or DEFAULT_LORA_RANK
        return PeftLoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=r,
            lora_alpha=r if cfg.alpha is None else cfg.alpha,
            lora_dropout=cfg.dropout,
            target_modules=targets,
            bias="none",
        )
    if isinstance(cfg, PrefixConfig):
        if cfg.position != "inner":
            raise UserError(f"prefix: position {cfg.position!r} is Mamba's; on a Transformer use position=inner")
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens)
    if isinstance(cfg, PromptConfig):
        inits = {"vocab": "SAMPLE_VOCAB", "normal": "RANDOM"}
        if cfg.init not in inits:
            raise UserError(f"prompt: init {cfg.init!r} has no peft counterpart; use vocab or normal")
        if cfg.reparam:
            raise UserError("prompt: reparam (MambaPEFT's MLP) is for Mamba; on a Transformer use reparam=false")
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init=inits[cfg.init],
        )
    # a method whose archs name a Transformer needs its peft counterpart here (the tests apply each one)
    raise NotImplementedError(f"{cfg.name} has no HF peft counterpart in stateft.methods.peft_methods")


def apply(model: Any, cfg: MethodConfig) -> list[str]:
    """Wrap ``model`` (a ``PeftBackbone``) in peft for ``cfg`` (a method whose ``archs`` name the model's: the registry
    checked); the sorted names of the trainable parameters."""
    return model.attach_peft(peft_config_for(cfg))


__all__ = ["DEFAULT_LORA_TARGETS", "PYTHIA_LINEARS", "apply", "peft_config_for"]
