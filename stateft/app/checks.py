"""Start-up checks: compose the config and validate it before anything heavy is imported.

A misspelt key, an unknown method/dataset/model or a bad method option ends the program with ONE line naming the
valid choices (exit code 2). Only Hydra and OmegaConf are imported here (about 0.3 s).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stateft.app import resolvers  # noqa: F401  (registers ${lr_ladder:...})
from stateft.app.fast_path import accumulated_batches, several_devices
from stateft.app.precision import PURE_BF16, requested_precision
from stateft.app.ranges import check_ranges
from stateft.errors import UserError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
HELP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}


def group_options(group: str, conf_dir: Path = CONF_DIR) -> list[str]:
    """The options of a config group: ``conf/<group>/**/*.yaml`` without the suffix (``paper/glue``)."""
    root = conf_dir / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def config_groups(conf_dir: Path = CONF_DIR) -> list[str]:
    """Top-level config groups that a user selects on the command line (hydra/* is Hydra's own)."""
    return sorted(p.name for p in conf_dir.iterdir() if p.is_dir() and p.name != "hydra")


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def check_choices(overrides: Sequence[Any], conf_dir: Path = CONF_DIR) -> None:
    """Every ``group=option`` override names an existing option (sweeps: every value)."""
    groups = set(config_groups(conf_dir))
    for override in overrides:
        key = override.key_or_group
        if key not in groups or override.is_delete():
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        valid = group_options(key, conf_dir)
        for value in values:
            if value is None:
                raise UserError(f"{key}=null is not an option (~{key} drops it); choose one of: {', '.join(valid)}")
            if str(value) not in valid:
                raise UserError(f"unknown {key} {value!r}; choose one of: {', '.join(valid)}")


def _first_value_overrides(overrides: Sequence[Any]) -> list[str]:
    """Override strings for one composition: a sweep contributes its first value; hydra.* is left to Hydra."""
    out = []
    for o in overrides:
        if o.key_or_group.startswith("hydra") or o.is_delete():
            continue
        if not o.is_sweep_override():
            out.append(o.input_line)
            continue
        prefix = {"ADD": "+", "FORCE_ADD": "++"}.get(o.type.name, "")
        value = next(iter(o.sweep_string_iterator()))
        out.append(f"{prefix}{o.key_or_group}{'@' + o.package if o.package else ''}={value}")
    return out


def compose_checked(config_name: str, overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` (no sweeps), turning errors into one-line UserErrors."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise UserError(f"cannot parse the command line: {_one_line(err)}") from None
    check_choices(parsed, conf_dir)
    plain = _first_value_overrides(parsed)
    groups = set(config_groups(conf_dir))
    choices = [
        s
        for s, o in zip(plain, [p for p in parsed if not p.key_or_group.startswith("hydra")])
        if o.key_or_group in groups
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        try:
            base = compose(config_name, overrides=choices)
        except (HydraException, OmegaConfBaseException) as err:
            raise UserError(_one_line(err)) from None
        for o in parsed:
            if o.key_or_group.startswith("hydra") or o.key_or_group in groups or o.type.name != "CHANGE":
                continue
            _check_key(base, o.key_or_group)
        try:
            cfg = compose(config_name, overrides=plain)
        except (HydraException, OmegaConfBaseException) as err:
            raise UserError(_one_line(err)) from None
    GlobalHydra.instance().clear()
    return cfg


def _check_key(cfg: DictConfig, dotted: str) -> None:
    node: Any = cfg
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig) or part not in node:
            where = ".".join(parts[:i]) or "the top level"
            valid = ", ".join(str(k) for k in node.keys()) if isinstance(node, DictConfig) else "(not a mapping)"
            # method options are typed (a new key cannot be added); elsewhere +key=... adds one
            addable = i == len(parts) - 1 and parts[0] != "method"
            hint = f" (to add a new key use +{dotted}=...)" if addable else ""
            raise UserError(f"unknown key {dotted!r}{hint}; valid keys of {where}: {valid}")
        node = node._get_node(part)


def _check_lr_grid(grid: DictConfig) -> None:
    from stateft.app.resolvers import lr_ladder

    try:
        ladder = lr_ladder(grid.min, grid.max)
    except (ValueError, TypeError) as err:
        raise UserError(f"sweep=lr_grid: {err}") from None
    if not ladder:
        raise UserError(f"sweep=lr_grid: no value of the ladder {{1, 2, 4}} x 10^k lies in [{grid.min}, {grid.max}]")


def validate_cfg(cfg: DictConfig) -> None:
    """Checks that need the composed config: method options (typed) and the model architectures the method applies
    to, the data's tokenizer against the model's, learning rate, value ranges (``stateft.app.ranges``), extra
    top-level keys."""

    sweeping_lr = cfg.get("lr_grid") is not None  # sweep=lr_grid sets optim.lr per job
    if sweeping_lr:
        _check_lr_grid(cfg.lr_grid)
    if "method" in cfg and cfg.method is not None:
        no_lr = cfg.method.get("lr") is None and OmegaConf.select(cfg, "optim.lr") is None
        if no_lr and not sweeping_lr:  # experiment=paper/* has no value for this pair, and none was given
            dataset = OmegaConf.select(cfg, "dataset.name")
            raise UserError(
                f"no learning rate for {cfg.method.name} on {dataset} (the papers report none); "
                "pass method.lr=... (or run sweep=lr_grid to find one)"
            )
        from stateft.methods.configs import validate_method_cfg  # torch-free

        _check_method_arch(cfg, validate_method_cfg(cfg.method))
    check_tokenizers(OmegaConf.select(cfg, "model.tokenizer"), OmegaConf.select(cfg, "dataset.tokenizer"))
    from stateft.vision.app import check_pairing  # torch-free

    check_pairing(cfg)  # images with an image model, text with a language model
    from stateft.s4.runner import check_config as check_s4_config  # torch-free

    check_s4_config(cfg)  # a deep S4 with the SDT paper's S4 tasks only; its methods and data folder
    optim = cfg.get("optim")
    if optim is not None and not sweeping_lr:
        lr = optim.get("lr")
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
            raise UserError(f"optim.lr must be a finite number > 0, got {lr!r} (set method.lr=... or optim.lr=...)")
    check_ranges(cfg)
    _check_part_ranges(cfg)
    graph = cfg.get("cuda_graph", False)
    if graph not in (True, False, "auto"):
        raise UserError(f"cuda_graph={graph!r} must be auto, true or false")
    if graph is True:
        _check_cuda_graph(cfg)
    _check_precision(cfg)
    resume = cfg.get("resume") or cfg.get("ckpt_path")
    if resume is not None and not Path(str(resume)).expanduser().exists():
        raise UserError(f"resume checkpoint {resume} does not exist (pass a last.ckpt or the run directory)")


def _check_method_arch(cfg: DictConfig, method: Any) -> None:
    """The method (a composition: each of its parts) applies to the model's architecture (its config's ``archs``:
    the declaration ``apply_method`` reads too), answered before the model is built."""
    from stateft.methods.configs import arch_refusal

    name, arch = cfg.method.name, OmegaConf.select(cfg, "model.arch")
    reason = None if arch is None else arch_refusal(method, arch)
    if reason is not None:
        raise UserError(f"method {name} on {OmegaConf.select(cfg, 'model.name')}: {reason}")


def _check_part_ranges(cfg: DictConfig) -> None:
    """method=compose: each part's options against the value ranges of the method's own keys, named as the part's
    (``method.lora.r``); under sweep=lr_grid, a part with its own lr would ignore the swept optim.lr."""
    if OmegaConf.select(cfg, "method.name") != "compose":
        return
    own = [part for part in cfg.method.parts if cfg.method[part].get("lr") is not None]
    if cfg.get("lr_grid") is not None and own:
        raise UserError(
            f"sweep=lr_grid sweeps optim.lr, which compose part {own[0]} ignores (it has its own lr); set "
            f"method.{own[0]}.lr=null for each part to sweep together, or search the rates with sweep=peft_search"
        )
    for part in cfg.method.parts:
        try:
            check_ranges(OmegaConf.create({"method": cfg.method[part]}))
        except UserError as err:
            raise UserError(str(err).replace("method.", f"method.{part}.", 1)) from None


def check_tokenizers(model_tokenizer: Any, dataset_tokenizer: Any) -> None:
    """The data is tokenised with the tokenizer the model reads and decodes with. ``dataset.tokenizer`` follows
    ``model.tokenizer`` (an interpolation in conf/dataset/), so they differ only when one was set apart."""
    if None not in (model_tokenizer, dataset_tokenizer) and model_tokenizer != dataset_tokenizer:
        raise UserError(
            f"dataset.tokenizer={dataset_tokenizer} differs from model.tokenizer={model_tokenizer}: the data would be "
            "tokenised with another vocabulary than the model's; set the tokenizer on the model only "
            "(model.tokenizer=...; the dataset follows it) and drop dataset.tokenizer=..."
        )


def _check_cuda_graph(cfg: DictConfig) -> None:
    """cuda_graph=true replays recorded graphs on one CUDA GPU (stateft/train_graph.py)."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator") or "auto")
    if accelerator == "cpu" or (accelerator == "auto" and not _cuda_available()):
        raise UserError("cuda_graph=true needs a CUDA GPU (trainer=gpu); set cuda_graph=false on this machine")
    several = several_devices(cfg)
    if several is not None:
        raise UserError(f"cuda_graph=true is for one GPU (got {several}); set trainer.devices=1 or cuda_graph=false")
    bucket = cfg.get("cuda_graph_bucket", 0)
    if not isinstance(bucket, int) or isinstance(bucket, bool) or bucket < 0:
        raise UserError(f"cuda_graph_bucket={bucket!r} must be an integer >= 0 (0: one shape, dataset.max_length)")
    if accumulated_batches(cfg) != 1:
        # make_graphed_callables hands out its gradient buffers: the next replay would overwrite an accumulated one
        raise UserError("cuda_graph=true cannot accumulate gradients; set trainer.accumulate_grad_batches=1")


def _check_precision(cfg: DictConfig) -> None:
    """paper.exact is a boolean; trainer.precision=bf16-true trains the weights in bf16 (stateft/app/precision.py)."""
    exact = OmegaConf.select(cfg, "paper.exact", default=False)
    if not isinstance(exact, bool):
        raise UserError(f"paper.exact={exact!r} must be true or false (true: train as the released runs, bf16-true)")
    dtype = OmegaConf.select(cfg, "model.dtype")
    if requested_precision(cfg) == PURE_BF16 and str(dtype) in ("float16", "fp16"):
        raise UserError(
            f"model.dtype={dtype} contradicts bf16-true, which stores and trains the weights in bfloat16; "
            "drop model.dtype=... or set model.dtype=bfloat16"
        )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def preflight(config_name: str, argv: Sequence[str]) -> DictConfig | None:
    """Compose and validate the command line's config; on a UserError print one line and exit 2.

    Returns the composed config (None for --help and a user's own config tree). The device request is checked
    against this machine unless the jobs run elsewhere (a Slurm launcher) or nothing trains (``dry_run=true``).
    """
    if HELP_FLAGS.intersection(argv):
        return None
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(list(argv))
    if args.config_name not in (None, config_name) or args.config_dir is not None:
        return None  # a user's own config tree: let Hydra report
    try:
        cfg = compose_checked(config_name, args.overrides)
        validate_cfg(cfg)
        _check_ddp_launch(cfg, args)
        if not cfg.get("dry_run") and not _remote_launcher(args.overrides):
            from stateft.app.devices import check_devices

            check_devices(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return cfg


def _remote_launcher(overrides: Sequence[str]) -> bool:
    """A launcher that runs the jobs on other machines (Slurm): their devices are checked where they run."""
    return any(o.replace(" ", "").startswith("hydra/launcher=") and "slurm" in o for o in overrides)


def _check_ddp_launch(cfg: DictConfig, args: Any) -> None:
    """Lightning's DDP launcher re-runs ``sys.argv`` for each extra GPU: inside a local multirun every rank would
    start the whole sweep again. Slurm starts the ranks itself, so DDP sweeps go there."""
    multirun = (
        args.multirun
        or OmegaConf.select(cfg, "sweep") is not None
        or any(o.startswith("sweep=") for o in args.overrides)
    )
    slurm = any(o.replace(" ", "") == "hydra/launcher=slurm" for o in args.overrides)
    if multirun and not slurm and OmegaConf.select(cfg, "trainer.strategy") == "ddp":
        raise UserError(
            "trainer=ddp inside a local multirun is not supported (Lightning's DDP launcher re-runs the "
            "whole command line); sweep with one GPU per job (hydra/launcher=local_gpus gpu_pool=N) or on "
            "Slurm (hydra/launcher=slurm hydra.launcher.tasks_per_node=<GPUs>)"
        )


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python (for loggers and saved run configs)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
