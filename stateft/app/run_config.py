"""What a shared adapter or predictions folder says about its run, read as data: the dataset and the base model.

A run folder written by ``train.py`` holds ``adapter/run_config.json`` (the whole resolved config) and the adapter's
``adapter_config.json`` records the base model. Someone else's folder may hold anything, so ``eval.py`` never
instantiates, imports or interpolates what those files say. It takes:

- the dataset's NAME, which must be one of our own configs (``conf/dataset/<name>.yaml`` whose ``name`` is that
  name); the dataset is built from OUR config of that name (its ``_target_`` comes from our file), with the options
  of ``DATASET_OPTIONS`` taken from the foreign file when each has the right type and a sane value. The keys that
  say where to write or how many processes to start (``cache_dir``, ``num_workers``) are checked and then left as
  ours; the ones that name code or a download (``_target_``, ``name``, ``task``, ``hub_id``, ``hub_revision``,
  ``tokenizer``) must equal ours. Anything else (an unknown key, a wrong type, ``NaN``, an interpolation) is refused
  with one line.
- the base model's record: for one of our models (``conf/model/<name>.yaml``) its architecture must equal ours and
  only ``dtype``, ``pretrained`` and ``seed`` are taken (and ``name_or_path`` / ``tokenizer`` when they equal ours or
  name a folder on this machine); for another name every size is bounded and the whole model must stay under
  ``MAX_BASE_PARAMS``, before anything is built.

The user's own ``dataset=...`` / ``model=...`` on the command line is used as it is (``DatasetSpec.from_cli``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stateft.app.checks import CONF_DIR, group_options
from stateft.errors import UserError
from stateft.foreign import (
    MiB,
    read_json,
    short,
    want_bool,
    want_dict,
    want_float,
    want_int,
    want_str,
)
from stateft.models.backbone import is_vision  # torch-free
from stateft.models.config import RUN_KEYS

RUN_CONFIG = "run_config.json"  # written by train.py beside the adapter: the dataset (and everything else) it used
MAX_RUN_CONFIG_BYTES = 16 * MiB
MAX_BASE_PARAMS = 8_000_000_000  # a base model named by no config of ours: at most this size (mamba-2.8b: 2.8e9)
_METRIC = re.compile(r"^[A-Za-z0-9_]{1,64}$")


# -- our own configs ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _our_config(group: str, name: str, conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """``conf/<group>/<name>.yaml`` composed (its ``defaults`` list: options of the same group and ``_self_``) and
    resolved, as plain Python: what ``group=name`` on the command line gives (a test compares with Hydra's)."""
    path = conf_dir / group / f"{name}.yaml"
    raw = OmegaConf.load(path)
    defaults = raw.pop("defaults", None) or ["_self_"]
    merged = OmegaConf.create({})
    for entry in defaults:
        if entry == "_self_":
            merged = OmegaConf.merge(merged, raw)
        elif isinstance(entry, str) and entry in group_options(group, conf_dir):
            merged = OmegaConf.merge(merged, OmegaConf.create(_our_config(group, entry, conf_dir)))
        else:
            raise RuntimeError(f"{path}: defaults entry {entry!r} is not supported by stateft.app.run_config")
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def our_config(group: str, name: str) -> dict[str, Any]:
    """A copy of our composed ``conf/<group>/<name>.yaml`` (plain Python, resolved)."""
    import copy

    return copy.deepcopy(_our_config(group, name))


def dataset_names() -> list[str]:
    """The dataset names a run config may name: our dataset configs whose ``name`` is their own file name (so not
    ``glue_base``, nor ``demo``, which is ``glue_rte`` on the fixture rows), but not the deep-S4 experiments' tasks
    (a ``kind``: those runs write results, never an adapter to evaluate)."""
    return [
        d
        for d in group_options("dataset")
        if _our_config("dataset", d).get("name") == d and "kind" not in _our_config("dataset", d)
    ]


# -- the dataset --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """A dataset to evaluate on: ``node`` is our config (or the user's command-line one), never a foreign file's."""

    name: str
    node: DictConfig
    source: str  # "the command line" or the run config it came from

    @classmethod
    def from_cli(cls, node: DictConfig) -> DatasetSpec:
        return cls(str(node.get("name")), node, "the command line")

    def build(self) -> Any:
        """The DataModule. ``_target_`` is ours (or the user's own on the command line)."""
        from hydra.utils import instantiate

        return instantiate(self.node)


def _location(value: Any, where: str) -> str | None:
    """A local path read as data (a folder of data files, tables.json, the Spider databases)."""
    return want_str(value, where, nullable=True)


def _dataset_options() -> dict[str, Any]:
    """``{key: check(value, where) -> value}``: the options a foreign run config may set (a test asserts that every
    key of every conf/dataset file is here, in OURS_ONLY or in SAME_AS_OURS)."""
    from stateft.data.base import PREFIX_TOKENIZATIONS
    from stateft.data.splits import PROTOCOLS
    from stateft.metrics.spider.gold import GOLD_SQL
    from stateft.metrics.spider.match import SEMANTICS

    def metric(v: Any, w: str) -> str:
        if not isinstance(v, str) or not _METRIC.match(v):
            raise UserError(f"{w} must be a metric name (letters, digits, _), got {short(v)}")
        return v

    return {
        "metric": metric,
        "path": _location,
        "tables": _location,
        "db_dir": _location,
        "batch_size": lambda v, w: want_int(v, w, 1, 1 << 16),
        "eval_batch_size": lambda v, w: want_int(v, w, 1, 1 << 16),
        "max_length": lambda v, w: want_int(v, w, 1, 1 << 20),
        "protocol": lambda v, w: want_str(v, w, choices=PROTOCOLS),
        "subset_size": lambda v, w: want_int(v, w, 1, 1 << 40, nullable=True),
        "seed": lambda v, w: want_int(v, w, 0, (1 << 63) - 1),
        "num_beams": lambda v, w: want_int(v, w, 1, 64),
        "max_new_tokens": lambda v, w: want_int(v, w, 1, 1 << 16),
        "max_eval_examples": lambda v, w: want_int(v, w, 1, 1 << 40, nullable=True),
        "prefix_tokenization": lambda v, w: want_str(v, w, choices=PREFIX_TOKENIZATIONS),
        "drop_out_of_class": want_bool,
        "semantics": lambda v, w: want_str(v, w, choices=SEMANTICS),
        "gold_sql": lambda v, w: want_str(v, w, choices=GOLD_SQL),
        "timeout": lambda v, w: want_float(v, w, 0.0, 86400.0, open_lo=True),
        "max_rows": lambda v, w: want_int(v, w, 1, 1 << 31),
        "max_memory_mb": lambda v, w: want_float(v, w, 0.0, float(1 << 20), open_lo=True),
        "cutoff_len": lambda v, w: want_int(v, w, 2, 1 << 20),
        "heldout_size": lambda v, w: want_int(v, w, 1, 1 << 40),
        "heldout_seed": lambda v, w: want_int(v, w, 0, (1 << 63) - 1),
        "train_on_inputs": want_bool,
        "batch_invariant": want_bool,
        "image_size": lambda v, w: want_int(v, w, 1, 4096),
    }


# checked, then ours kept: where this machine writes its cache, how many processes it starts
OURS_ONLY = {
    "cache_dir": lambda v, w: want_str(v, w, nullable=True),
    "num_workers": lambda v, w: want_int(v, w, 0, 1024),
}
# what code runs and what is downloaded: a foreign file may only repeat our value
SAME_AS_OURS = ("_target_", "name", "task", "hub_id", "hub_revision", "tokenizer")


def dataset_from_run_config(run_config: Any, where: str) -> DatasetSpec:
    """The dataset a run config names, as our config of that name with its checked options (module docstring)."""
    run_config = want_dict(run_config, where)
    if "dataset" not in run_config:
        raise UserError(f"{where} names no dataset; pass dataset=<name> (e.g. dataset=glue_rte)")
    block = want_dict(run_config["dataset"], f"{where}: dataset")
    names = dataset_names()
    name = block.get("name")
    if not isinstance(name, str) or name not in names:
        raise UserError(f"{where}: dataset {short(name)} is not one of ours ({', '.join(names)}); pass dataset=<name>")
    ours = our_config("dataset", name)
    options = _dataset_options()
    for key, value in block.items():
        at = f"{where}: dataset.{key}"
        if key not in ours:
            raise UserError(f"{at}: dataset {name} has no such option (its options: {', '.join(ours)})")
        if key in options:
            ours[key] = options[key](value, at)
        elif key in OURS_ONLY:
            OURS_ONLY[key](value, at)
        elif value != ours[key]:  # SAME_AS_OURS, or a key of our config that no table knows yet
            hint = "; a run config names a dataset, never code" if key == "_target_" else ""
            raise UserError(
                f"{at}={short(value)} differs from ours ({ours[key]!r}){hint}; "
                f"to use it, pass dataset={name} dataset.{key}=... yourself"
            )
    return DatasetSpec(name, OmegaConf.create(ours), where)


def find_run_config(near: Path) -> Path | None:
    """The run config of an adapter directory or a predictions file: ``<adapter>/run_config.json``,
    ``<run>/adapter/run_config.json`` or ``<folder>/run_config.json``."""
    for candidate in (near / RUN_CONFIG, near.parent / "adapter" / RUN_CONFIG, near.parent / RUN_CONFIG):
        if candidate.is_symlink() or candidate.exists():
            return candidate
    return None


def dataset_near(near: Path) -> DatasetSpec:
    """The dataset of the run an adapter directory or a predictions file belongs to; UserError if none is found."""
    path = find_run_config(near)
    if path is None:
        raise UserError(f"cannot tell which dataset {near} belongs to; pass dataset=<name> (e.g. dataset=glue_rte)")
    return dataset_from_run_config(read_json(path, "run config", MAX_RUN_CONFIG_BYTES), str(path))


# -- the base model -----------------------------------------------------------------------------------------------
MODEL_DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")  # stateft.models.loading.DTYPES
SCAN_IMPLS = ("auto", "ref", "triton", "mamba_ssm")
_ARCH_BOUNDS = {  # sane maxima, well above the largest Mamba checkpoints (d_model 2560, 64 layers, d_state 128)
    "d_model": 16384,
    "n_layer": 256,
    "vocab_size": 1 << 20,
    "d_state": 1024,
    "d_conv": 16,
    "expand": 8,
    "headdim": 1024,
    "ngroups": 1024,
    "chunk_size": 4096,
    "pad_vocab_size_multiple": 1024,
}
_VISION_BOUNDS = {  # Vision Mamba (stateft/vision/config.py): images and patches
    "num_classes": 1 << 20,
    "img_size": 8192,
    "patch_size": 1024,
    "stride": 1024,
    "channels": 64,
}
_PYTHIA_BOUNDS = {
    "n_head": 1024,
    "intermediate_size": 1 << 18,
    "rotary_emb_base": 1 << 30,
    "max_position_embeddings": 1 << 20,
}  # GPT-NeoX (stateft/models/pythia.py)
_BOOLS = (  # the true-or-false fields of a base-model record
    "pretrained", "recompute", "tie_embeddings", "use_parallel_residual", "conv_bias", "bias", "rmsnorm",
    "norm_before_gate", "divide_out",
)  # fmt: skip


@lru_cache(maxsize=1)
def _arch_keys() -> tuple[str, ...]:
    """Every architecture field of every backbone's config (``stateft.models.config.architecture_fields``): what a
    base-model record may hold besides ``RUN_KEYS``."""
    from stateft.models.config import MambaConfig, architecture_fields
    from stateft.models.pythia import PythiaConfig
    from stateft.vision.config import VimConfig

    keys = architecture_fields(MambaConfig)
    for other in (PythiaConfig, VimConfig):
        keys += tuple(k for k in architecture_fields(other) if k not in keys)
    return keys


def _check_model_value(key: str, value: Any, where: str) -> Any:
    """One value of a base-model record, type- and range-checked; a field with no check here is refused (a test
    asserts that every architecture field has one)."""
    at = f"{where}.{key}"
    if key in ("name", "name_or_path", "tokenizer"):
        return want_str(value, at, nullable=key != "name")
    if key in _BOOLS:
        return want_bool(value, at)
    if key == "dtype":
        return want_str(value, at, choices=MODEL_DTYPES)
    if key == "scan_impl":
        return want_str(value, at, choices=SCAN_IMPLS)
    if key == "seed":
        return want_int(value, at, 0, (1 << 63) - 1, nullable=True)
    if key == "arch":
        return want_str(value, at, choices=("mamba1", "mamba2", "gpt_neox", "vim"))
    if key == "dt_rank":
        return value if value == "auto" else want_int(value, at, 1, _ARCH_BOUNDS["d_model"])
    if key == "init_std":
        return want_float(value, at, 0.0, 10.0, open_lo=True)
    if key == "rotary_pct":
        return want_float(value, at, 0.0, 1.0)
    if key in ("layer_norm_eps", "rms_norm_eps"):
        return want_float(value, at, 0.0, 1.0, open_lo=True)
    if key in ("dt_min", "dt_max", "dt_init_floor"):
        return want_float(value, at, 0.0, 10.0, open_lo=True)
    if key == "drop_path_rate":
        return want_float(value, at, 0.0, 1.0)
    if key in _VISION_BOUNDS:
        return want_int(value, at, 1, _VISION_BOUNDS[key])
    if key == "dt_limit":  # (low, high) clamp of Mamba-2's dt
        if not isinstance(value, list) or len(value) != 2:
            raise UserError(f"{at} must be a list of two numbers, got {short(value)}")
        low, high = (want_float(v, at, 0.0, 1e6) for v in value)
        if low > high:
            raise UserError(f"{at}={value} must be [low, high] with low <= high")
        return value
    if key in _PYTHIA_BOUNDS:
        return want_int(value, at, 1, _PYTHIA_BOUNDS[key], nullable=key == "intermediate_size")
    if key in _ARCH_BOUNDS:
        return want_int(value, at, 1, _ARCH_BOUNDS[key])
    raise UserError(f"{at}: a model field stateft cannot check yet; pass model=<name> to choose the base model")


def _architecture(node: dict[str, Any]) -> dict[str, Any]:
    """The numbers that make two model configs the same network: every architecture field the node carries into its
    config (``stateft.models.loading.config_from_model_cfg``); on a Mamba ``dt_rank`` and the vocabulary padding as
    the sizes they give, without ``chunk_size`` (cost and rounding only) and, on Mamba-1, the Mamba-2 fields."""
    from stateft.models.config import MAMBA2_FIELDS
    from stateft.models.loading import config_from_model_cfg

    c = config_from_model_cfg(node)
    numbers = c.to_dict()
    if c.arch == "gpt_neox":
        return {**numbers, "padded_vocab_size": c.padded_vocab_size, "d_ff": c.d_ff}
    dropped = ("dt_rank", "pad_vocab_size_multiple", "chunk_size", *(MAMBA2_FIELDS if c.arch == "mamba1" else ()))
    numbers = {k: v for k, v in numbers.items() if k not in dropped}
    return {**numbers, "dt_rank": c.dt_rank_value, "padded_vocab_size": c.padded_vocab_size}


def _same_or_local(key: str, value: Any, ours: Any, name: str, where: str) -> Any:
    """``name_or_path`` / ``tokenizer`` of a foreign record: ours, or a path that exists on this machine (read as
    data: safetensors, a weights-only torch.load, tokenizer.json); never another download."""
    if value is None or value == ours:
        return ours
    if Path(str(value)).expanduser().exists():
        return value
    raise UserError(
        f"{where}.{key}={value!r} is neither ours ({ours!r}) nor a path on this machine; "
        f"pass model={name} model.{key}=... yourself"
    )


def base_model_node(record: Any, where: str) -> DictConfig:
    """The model config to build an adapter's base model from its ``base_model`` record (module docstring); every
    size is checked before anything is built."""
    record = want_dict(record, where)
    unknown = sorted(set(record) - set(RUN_KEYS) - set(_arch_keys()))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0][:60]!r}; pass model=<name> to choose the base model")
    if "name" not in record:
        raise UserError(f"{where} names no model; pass model=<name>")
    checked = {key: _check_model_value(key, value, where) for key, value in record.items()}
    name = checked["name"]
    if name in group_options("model"):
        node = our_config("model", name)
        if is_vision(str(node.get("arch"))) and "num_classes" in checked:  # the head has the task's classes, not ours
            node["num_classes"] = checked["num_classes"]
        theirs = _architecture({**node, **{k: v for k, v in checked.items() if k in _arch_keys()}})
        mine = _architecture(node)
        if theirs != mine:
            diff = [k for k in {**mine, **theirs} if theirs.get(k) != mine.get(k)]
            raise UserError(
                f"{where}: model {name} with {', '.join(f'{k}={theirs.get(k)}' for k in diff)}, "
                f"but conf/model/{name}.yaml says {', '.join(f'{k}={mine.get(k)}' for k in diff)}; "
                "pass model=<name> to choose the base model"
            )
        for key in ("dtype", "pretrained", "seed"):
            if key in checked:
                node[key] = checked[key]
        for key in ("name_or_path", "tokenizer") if node.get("pretrained") else ("tokenizer",):
            node[key] = _same_or_local(key, checked.get(key), node.get(key), name, where)
        return OmegaConf.create(node)
    return OmegaConf.create(_foreign_model(checked, where))


def _foreign_model(checked: dict[str, Any], where: str) -> dict[str, Any]:
    """A base model named by no config of ours: its record's sizes, bounded, and at most MAX_BASE_PARAMS."""
    from stateft.models.loading import build_model, config_from_model_cfg
    from stateft.tokenizer import DEFAULT_NAME, load_tokenizer

    name = checked["name"]
    for key in ("d_model", "n_layer", "vocab_size"):
        if key not in checked:
            raise UserError(f"{where}: model {name!r} is not one of ours and its record has no {key}; pass model=...")
    node = {"scan_impl": "auto", "dtype": "float32", "pretrained": False, **checked}
    node["tokenizer"] = _same_or_local("tokenizer", checked.get("tokenizer"), DEFAULT_NAME, name, where)
    if node["pretrained"]:
        path = checked.get("name_or_path")
        if path is None or not Path(str(path)).expanduser().is_dir():
            raise UserError(
                f"{where}: model {name!r} is not one of ours and its weights ({path!r}) are not a folder on this "
                "machine; pass model=<name> (or model.name_or_path=<folder>) yourself"
            )
    config = config_from_model_cfg(node)
    if config.arch == "mamba2" and (config.d_inner % config.headdim or config.nheads % config.ngroups):
        raise UserError(f"{where}: model {name!r}: heads (expand * d_model / headdim) do not split into ngroups")
    vocabulary = load_tokenizer(node["tokenizer"]).vocab_size
    if config.padded_vocab_size < vocabulary:  # token ids past the embedding would fail mid-evaluation
        raise UserError(f"{where}: model {name!r} has {config.padded_vocab_size} embeddings for {vocabulary} tokens")
    try:
        shadow = build_model(config, device="meta")
    except Exception as err:  # sizes that do not make a network
        raise UserError(f"{where}: model {name!r} cannot be built ({type(err).__name__}); pass model=...") from None
    total = sum(p.numel() for p in shadow.parameters())
    if total > MAX_BASE_PARAMS:
        raise UserError(
            f"{where}: model {name!r} would have {total:,} parameters (at most {MAX_BASE_PARAMS:,} from a shared "
            "record); pass model=<name> yourself"
        )
    return node


__all__ = [
    "DatasetSpec",
    "RUN_CONFIG",
    "base_model_node",
    "dataset_from_run_config",
    "dataset_names",
    "dataset_near",
    "find_run_config",
    "our_config",
]
