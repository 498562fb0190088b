"""Several adapters over one base model, decoded together row by row.

``AdapterBank(model)`` puts routed modules (`stateft.serve.routing`, `stateft.serve.routed_lora`) into the base
model's ``state_offset`` and ``init_state`` slots and in place of the linears LoRA adapters update; ``load(name,
directory)`` reads an adapter as data (`stateft.adapters.read_adapter`: config, architecture, method options,
safetensors header and digests, all checked against this model's config), computes what it puts in each slot of each
layer with the method's own modules, and keeps it for the banks, which are stacked once before the next decoding reads
them (`Routing.pending`: N adapters loaded cost one stacking); ``generate(prompts, adapters)`` decodes a batch whose
rows name different adapters (or none: the base model).

Served methods, mixed freely in one bank: State-offset Tuning (``state_offset_h``, full or low-rank h';
``state_offset_y``) and Initial State Tuning (``init_state``, with or without the conv window) add per-sequence
tensors to the state path; LoRA (``lora``, any targets) adds a low-rank update to the frozen linears' outputs, computed
per row from that row's factors (the base weights stay shared); prompt tuning (``prompt``) and prefix tuning
(``prefix``, inner or outer) act at the start of a sequence only, so their modules run in their adapter's prefill
group and decoding reads nothing of them. Methods that change the weights themselves (BitFit, full, SDT, ...) or add
states (``additional_scan``) are refused at load.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch
from torch import nn

from stateft.adapters import VerifiedAdapter, read_adapter
from stateft.errors import UserError
from stateft.foreign import short
from stateft.models.backbone import device_of
from stateft.serve.routed_lora import RoutedLinear
from stateft.serve.routing import NO_ADAPTER, RoutedInitialState, RoutedStateOffset, Routing

SERVED_METHODS = ("state_offset_h", "state_offset_y", "init_state", "lora", "prompt", "prefix")
SLOTS = {"h_bank": "state_offset", "y_bank": "state_offset", "h0_bank": "init_state", "conv_bank": "init_state"}
LORA = "lora."  # a value named lora.<linear>: one adapter's LoRA factors (A, scaled B) of that mixer linear
START = "start."  # start.prompt: the adapter's model.prompt module (one); start.prefix: its mixer.prefix per layer
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def slot_values(adapter: VerifiedAdapter, model: nn.Module) -> dict[str, list]:
    """``{bank name: one fp32 tensor per layer}`` for the slots ``adapter`` fills on ``model``'s architecture, and
    ``{lora.<linear>: one (A (k r, in), s B (out, k r)) pair per layer}`` for the linears it wraps in a LoRALinear,
    ``{start.prompt: [its prompt module]}``, ``{start.prefix: its prefix module per layer}``.

    The method is applied to a shell of the model on the meta device (nothing allocated), the adapter's tensors
    assigned into it on ``model``'s device, and the slot modules asked as the mixers ask them (``h_prime()``,
    ``y_prime()``, ``h0``, ``conv``; ``update_factors()`` and ``scaling``): a low-rank h' = U V is the same product,
    on the same device, as when the adapter alone is applied. fp32 holds a bf16 or f16 adapter's values exactly.
    """
    from stateft.methods import apply_method
    from stateft.methods.lora import LoRALinear
    from stateft.models.loading import build_model

    device = device_of(model)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        shell = build_model(model.config, device="meta")
        apply_method(adapter.method.name, shell, copy.deepcopy(adapter.method))
    shell.load_state_dict({k: v.to(device) for k, v in adapter.tensors.items()}, strict=False, assign=True)
    values: dict[str, list] = {}
    shell.requires_grad_(False)
    if shell.prompt is not None:  # start modules in fp32, as the method makes them
        values[START + "prompt"] = [shell.prompt.float()]
    with torch.no_grad():
        for mixer, own in zip(shell.mixers(), model.mixers()):
            prefix = getattr(mixer, "prefix", None)  # a Mamba-1 slot
            if prefix is not None:
                if "mixer" in vars(prefix):  # an outer prefix runs through its mixer's in_proj: the model's
                    object.__setattr__(prefix, "mixer", own)
                values.setdefault(START + "prefix", []).append(prefix.float())
            for name, child in mixer.named_children():
                if isinstance(child, LoRALinear):
                    A, B = child.update_factors()
                    pair = (A.detach().float(), (B.detach() * child.scaling).float())  # B * s as LoRALinear scales
                    values.setdefault(LORA + name, []).append(pair)
            found = {}
            if mixer.state_offset is not None:
                found["h_bank"], found["y_bank"] = mixer.state_offset.h_prime(), mixer.state_offset.y_prime()
            if mixer.init_state is not None:
                found["h0_bank"], found["conv_bank"] = mixer.init_state.h0, mixer.init_state.conv
            for name, tensor in found.items():
                if tensor is not None:
                    values.setdefault(name, []).append(tensor.detach().float())
    return values


class AdapterBank:
    """Adapters of the served methods loaded over one base ``model`` (a fresh one: no method applied), decoded per
    row. The model keeps working as the base model when no adapter is routed (``generation.generate`` on it).
    ``load`` and decoding are not meant to run at the same time: a server loads on its decoding thread, between two
    steps (`stateft.serve.batcher.Batcher.load`)."""

    def __init__(self, model: nn.Module) -> None:
        if getattr(model, "peft_config", None) is not None or getattr(model, "prompt", None) is not None:
            raise ValueError("AdapterBank needs the base model itself: a method has been applied to this one")
        for mixer in model.mixers():
            filled = [s for s in ("init_state", "state_offset", "prefix", "extra_states") if getattr(mixer, s, None)]
            if filled:
                raise ValueError(f"AdapterBank needs the base model itself: its mixers' {filled[0]} slot is filled")
        self.model, self.routing = model, Routing()
        self.names: list[str] = []
        self.directories: list[Path] = []
        self.methods: list[str] = []
        self._values: list[dict[str, list]] = []

    # -- loading ------------------------------------------------------------------------------------------------
    def load(self, name: str, directory: str | Path, stack: bool = False) -> int:
        """Read, check and add the adapter in ``directory`` under ``name``; returns its index. One UserError for an
        adapter of another base model or size, a method that cannot be served per row, a damaged file, a bad or
        taken name; the bank is unchanged then.

        Loading appends: the adapters loaded before keep their indices, and the zero row stays the last row of every
        bank (``NO_ADAPTER``, -1), so rows decoding with an index taken before a load read the same tensors after it.
        ``stack``: build the banks now (a running server, `Batcher.load`): a failure there (out of memory) fails this
        load only, the bank as before it (rebuilt before the next routed call). The name is listed (``names``,
        ``index``) only once the adapter is in: a request naming it from another thread never sees it half loaded."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise UserError(f"adapter name {short(name)} must be 1-64 letters, digits, '.', '_' or '-'")
        if name in self.names:
            raise UserError(f"adapter name {name!r} is taken (by {self.directories[self.names.index(name)]})")
        adapter = read_adapter(directory, self.model.config)
        method = adapter.method.name
        if method not in SERVED_METHODS:
            raise UserError(
                f"adapter {directory}: method {method} cannot be decoded per row beside other adapters; a served "
                f"adapter's method is one of: {', '.join(SERVED_METHODS)}"
            )
        self._values.append(slot_values(adapter, self.model))
        self.routing.pending = self._stack  # stacked once, before the next routed call reads the banks
        if stack:
            try:
                self.stack()
            except BaseException:
                self._values.pop()  # the banks are rebuilt without it before the next routed call
                self.routing.pending = self._stack
                raise
        self.directories.append(Path(directory))
        self.methods.append(method)
        self.names.append(name)
        return len(self.names) - 1

    def stack(self) -> None:
        """Build the banks of the adapters loaded so far now (a server calls it once after loading, so a failure such
        as running out of memory shows at start-up, not on a first request); decoding does it otherwise."""
        self.routing.run_pending()

    def _stack(self) -> None:
        """Rebuild every layer's banks: (adapters + 1, ...) with each adapter's tensor or zeros, then the zero row.
        Run by the routing before the first routed call after a load (`Routing.pending`). Routed modules no adapter
        fills any more (a load taken back after its stacking failed) give their place back to what was there."""
        zeros_like = {}
        for values in self._values:
            for name, layers in values.items():
                if name in SLOTS:
                    zeros_like.setdefault(name, [torch.zeros_like(t) for t in layers])
        linears = sorted({name for values in self._values for name in values if name.startswith(LORA)})
        for i, mixer in enumerate(self.model.mixers()):
            for child_name, child in list(mixer.named_children()):
                if isinstance(child, RoutedLinear) and LORA + child_name not in linears:
                    setattr(mixer, child_name, child.base)
            for name in linears:
                self._stack_lora(mixer, i, name)
            for name, slot in SLOTS.items():
                module = getattr(mixer, slot)
                if name not in zeros_like:
                    if module is not None:
                        module.set_bank(name, None, [])
                        if not any(True for _ in module.buffers(recurse=False)):  # no bank left: the base's None
                            setattr(mixer, slot, None)
                    continue
                if module is None:
                    module = (
                        RoutedStateOffset(self.routing) if slot == "state_offset" else RoutedInitialState(self.routing)
                    )
                    setattr(mixer, slot, module)
                zero = zeros_like[name][i]
                rows = [values[name][i] if name in values else zero for values in self._values]
                has = [name in values for values in self._values] + [False]
                module.set_bank(name, torch.stack([*rows, zero]), has)
        starts = []
        for slot, owners in (("prompt", [self.model]), ("prefix", list(self.model.mixers()))):
            for layer, owner in enumerate(owners):
                modules = {i: v[START + slot][layer] for i, v in enumerate(self._values) if START + slot in v}
                if modules:
                    starts.append((owner, slot, modules))
        self.routing.starts = starts

    def _stack_lora(self, mixer: nn.Module, layer: int, name: str) -> None:
        """The LoRA banks of one mixer linear (a RoutedLinear around the base one): every adapter's factors of that
        layer zero-padded to the largest rank, adapters that leave it alone zeros, then the zero row."""
        linear = name[len(LORA) :]
        module = getattr(mixer, linear)
        if not isinstance(module, RoutedLinear):
            module = RoutedLinear(module, self.routing)
            setattr(mixer, linear, module)
        pairs = [values[name][layer] if name in values else None for values in self._values]
        ranks = [0 if pair is None else pair[0].shape[0] for pair in pairs] + [0]
        width = max(ranks)
        weight = module.base.weight
        A_bank = weight.new_zeros(len(ranks), width, module.in_features, dtype=torch.float32)
        B_bank = weight.new_zeros(len(ranks), module.out_features, width, dtype=torch.float32)
        for i, pair in enumerate(pairs):
            if pair is not None:
                A_bank[i, : ranks[i]] = pair[0]
                B_bank[i, :, : ranks[i]] = pair[1]
        module.set_bank(A_bank, B_bank, ranks)

    # -- requests -----------------------------------------------------------------------------------------------
    def index(self, adapter: str | None) -> int:
        """The bank index of ``adapter`` (None: no adapter, the base model). UserError naming the loaded ones."""
        if adapter is None:
            return NO_ADAPTER
        if isinstance(adapter, str) and adapter in self.names:
            return self.names.index(adapter)
        loaded = ", ".join(self.names) if self.names else "none"
        shown = repr(adapter[:64]) if isinstance(adapter, str) else short(adapter)
        raise UserError(f"adapter {shown} is not loaded; loaded adapters: {loaded}")

    def check_prompt(self, prompt: list[int]) -> list[int]:
        """A prompt as decoding takes it: a non-empty list of token ids in the model's vocabulary."""
        vocab = self.model.config.vocab_size
        if not isinstance(prompt, list) or not prompt:
            raise UserError(f"a prompt must be a non-empty list of token ids, got {short(prompt)}")
        for token in prompt:
            if not isinstance(token, int) or isinstance(token, bool) or not 0 <= token < vocab:
                raise UserError(f"token id {short(token)} is not in this model's vocabulary [0, {vocab})")
        return prompt

    def generate(
        self,
        prompts: list[list[int]],
        adapters: list[str | None],
        max_new_tokens: int = 1024,
        num_beams: int = 1,
        eos_id: int | None = 0,
        length_penalty: float = 1.0,
    ) -> list[list[int]]:
        """Decode ``prompts`` as one batch, row i with adapter ``adapters[i]`` (None: the base model); each row's
        tokens as ``generation.generate`` gives them on the base model with that adapter alone applied."""
        from stateft.serve.decode import generate_routed

        if len(prompts) != len(adapters):
            raise UserError(f"{len(prompts)} prompts but {len(adapters)} adapter names: give one per prompt")
        rows = [self.index(a) for a in adapters]
        for prompt in prompts:
            self.check_prompt(prompt)
        if not isinstance(num_beams, int) or num_beams < 1:
            raise UserError(f"num_beams must be an integer >= 1, got {short(num_beams)}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise UserError(f"max_new_tokens must be an integer >= 0, got {short(max_new_tokens)}")
        return generate_routed(
            self.model, self.routing, prompts, rows, max_new_tokens, num_beams, eos_id, length_penalty
        )
