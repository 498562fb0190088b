"""The deep-S4 methods' registry entries (``stateft.methods.registry``): each config of ``stateft.methods.configs``
(s4_frozen, s4_full, s4_lora, s4_sdt, s4_sdlora) with the ``apply`` that ``apply_method`` calls on a ``DeepS4``.

``train_batches``: an iterable of (x, y) training batches (the model's head decides the loss, ``DeepS4.loss``);
s4_sdt and s4_sdlora in hard mode choose their dimensions from them (``stateft.s4.choose``) unless the config
already holds a ``selection``, which is then reused. The choice is written back into the config, so the recorded
config (``model.peft_config``) says which dimensions were tuned.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from stateft.errors import UserError
from stateft.methods.base import MethodSpec
from stateft.methods.configs import METHOD_CONFIGS
from stateft.s4 import peft
from stateft.s4.choose import choose
from stateft.s4.model import DeepS4
from stateft.s4.selection import LayerSelection


def apply(model: DeepS4, cfg, train_batches: Iterable | None = None) -> list[str]:
    selection = None
    if peft.is_hard(cfg):
        if cfg.selection is None:
            if train_batches is None:
                raise UserError(f"{cfg.name} chooses its dimensions from training batches; none were given")
            batches = iter(train_batches)
            first = next(batches)
            chosen = choose(model, cfg, itertools.chain([first], batches), seq_len=first[0].shape[1])
            cfg.selection = [s.as_dict() for s in chosen]
        selection = [LayerSelection(**s) for s in cfg.selection]
    return peft.apply(model, cfg, selection)


SPECS = {name: MethodSpec(config=METHOD_CONFIGS[name], apply=apply, needs_data=True) for name in peft.METHODS}
