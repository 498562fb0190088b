"""Architecture numbers of a Mamba language model: enough to build it (also on ``meta``) without a download.

Also the one definition of which keys a ``conf/model`` node holds, for every backbone: its config class's fields
(``architecture_fields``: ``MambaConfig`` here, ``PythiaConfig`` in ``stateft.models.pythia``) and ``RUN_KEYS``
(where the weights come from and how they are stored and run). ``config_from_node`` carries every architecture field
of a node into the config and refuses any other key, so a number is never silently dropped; loading
(``stateft.models.loading``), the adapters (``stateft.adapters``: ``ADAPTER_ARCH_FIELDS``) and foreign base-model
records (``stateft.app.run_config``) all read these lists.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from stateft.errors import UserError

# the keys of a conf/model node that are not architecture numbers: what the model is called, where its weights and
# tokenizer come from, how they are stored and run, the random-init seed
RUN_KEYS = ("name", "name_or_path", "pretrained", "dtype", "scan_impl", "recompute", "tokenizer", "seed")
# The numbers an adapter records (adapter_config.json "architecture") and must find equal on the model it is loaded
# into: the shapes of the tensors a method attaches to a Mamba follow from them (the mixer width E = expand d_model,
# the states N, the conv window, the layers; the vocabulary rows for tied weights). The other fields are either
# checked through those shapes when the method is re-applied (headdim, ngroups, dt_rank) or do not change which
# adapter fits (norms, init ranges, chunk size). Fixed: adapters saved with these keys must keep loading.
ADAPTER_ARCH_FIELDS = ("arch", "d_model", "n_layer", "d_state", "d_conv", "expand", "padded_vocab_size")
# the fields only a Mamba-2 reads (a Mamba-1 node may carry them; they do not change the Mamba-1 network)
MAMBA2_FIELDS = ("headdim", "ngroups", "chunk_size", "norm_before_gate", "rmsnorm", "dt_limit")


def dt_rank_of(d_model: int, dt_rank: int | str) -> int:
    """R, the rank of the S6 step-size projection: ceil(d_model / 16) for ``"auto"`` (mamba_ssm's rule)."""
    return math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)


class SelectiveDims:
    """The widths a Mamba mixer derives from ``d_model``, ``expand`` and ``dt_rank`` (the language models' config and
    Vim's)."""

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank_value(self) -> int:
        return dt_rank_of(self.d_model, self.dt_rank)


@dataclass
class MambaConfig(SelectiveDims):
    """Mamba-1 (``arch="mamba1"``) or Mamba-2 (``arch="mamba2"``) language-model architecture.

    Names follow mamba_ssm's ``MambaConfig`` so its ``config.json`` maps one to one.
    """

    d_model: int
    n_layer: int
    vocab_size: int = 50277
    arch: Literal["mamba1", "mamba2"] = "mamba1"
    d_state: int = 16  # N
    d_conv: int = 4  # K
    expand: int = 2  # E = expand * d_model
    dt_rank: int | str = "auto"  # R = ceil(d_model / 16)
    pad_vocab_size_multiple: int = 8  # 50277 -> 50280
    rms_norm_eps: float = 1e-5
    conv_bias: bool = True
    bias: bool = False  # in_proj / out_proj bias
    tie_embeddings: bool = True
    # random-init ranges for dt (mamba_ssm's defaults); irrelevant when weights are loaded
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    init_std: float = 0.02  # std of the random embedding init (mamba_ssm: 0.02); irrelevant when weights are loaded
    # Mamba-2 only
    headdim: int = 64  # P
    ngroups: int = 1
    chunk_size: int = 256  # SSD chunk length Q (cost and rounding only, not the result)
    norm_before_gate: bool = False  # False: y = RMSNorm(y * silu(z)) (all state-spaces checkpoints)
    rmsnorm: bool = True  # gated RMSNorm after the scan; False: y * silu(z) without a norm
    dt_limit: tuple[float, float] = (0.0, math.inf)  # clamp of softplus(dt + dt_bias)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return self.vocab_size if m <= 1 else ((self.vocab_size + m - 1) // m) * m

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MambaConfig:
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; valid keys: {sorted(names)}")
        return cls(**values)


def architecture_fields(config_class: type) -> tuple[str, ...]:
    """The architecture fields of a backbone's config class (``MambaConfig``, ``PythiaConfig``): its dataclass fields,
    in declaration order. Every reader of a model node takes this list, never one of its own."""
    return tuple(f.name for f in fields(config_class))


def config_from_node(config_class: type, node: Any) -> Any:
    """The config a ``conf/model`` node (a mapping) describes: every architecture field it sets (null: the field's
    default; a list for a tuple field, as YAML and JSON give it). A key that is neither an architecture field of
    ``config_class`` nor one of ``RUN_KEYS`` is refused with one line naming it: it would otherwise be dropped."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    known = architecture_fields(config_class)
    for key in raw:
        if key not in known and key not in RUN_KEYS:
            raise UserError(
                f"model.{key} is not a setting of a {raw.get('arch', 'mamba1')} model, so it would be ignored; "
                f"remove it (architecture settings: {', '.join(known)}; others: {', '.join(RUN_KEYS)})"
            )
    defaults = {f.name: f.default for f in fields(config_class)}
    values = {}
    for key in known:
        if raw.get(key) is not None:
            value = raw[key]
            values[key] = tuple(value) if isinstance(defaults[key], tuple) and isinstance(value, list) else value
    return config_class(**values)
