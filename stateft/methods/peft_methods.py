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
(``stateft.methods.configs.refusal``); so are Mamba's options of the three (prefix position=outer, prompt
reparam=true) and LoRA targets that are not ``PYTHIA_LINEARS``, by their configs' ``option_refusal``. Initial values
come from the global torch generator, seeded by the run's seed.
"""

from __future__ import annotations

from typing import Any

from stateft.methods.configs import PYTHIA_LINEARS, LoraConfig, MethodConfig, PrefixConfig, PromptConfig

DEFAULT_LORA_TARGETS = ["query_key_value"]  # peft's default for GPT-NeoX
DEFAULT_LORA_RANK = 8


def peft_config_for(cfg: MethodConfig) -> Any:
    """peft's config for a stateft method config (the table in the module docstring) that ``arch_refusal`` accepts on
    gpt_neox (``apply_method`` and the start-up check ask it: options that are Mamba's never reach here)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import PrefixTuningConfig, PromptTuningConfig, TaskType

    if isinstance(cfg, LoraConfig):
        targets = list(cfg.target_modules or DEFAULT_LORA_TARGETS)
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
        return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.num_virtual_tokens)
    if isinstance(cfg, PromptConfig):
        inits = {"vocab": "SAMPLE_VOCAB", "normal": "RANDOM"}
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
