"""``python train.py experiment=sdt_s4/<synthetic|transfer>``: the SDT paper's deep-S4 experiments, run by
``stateft.app.training.train`` in place of the language-model loop when ``model.arch`` is an S4 architecture.

The config: ``model`` (``conf/model/s4-*.yaml``: the ``S4ModelConfig`` fields, ``name`` and ``arch``), ``dataset``
(``kind``: ``s4_synthetic`` or ``pixels``, ``stateft.s4.synthetic`` / ``stateft.s4.transfer``), ``method`` and
``s4.compare``: the methods to compare, each ``{label, method, <options>}`` over that method's defaults (and
optionally ``series``: entries of one series are joined by a line in the figure). An empty
``s4.compare`` runs ``method`` alone (its lr: ``optim.lr``). Writes ``results.json``, ``results.md`` and the figure
(``stateft.s4.report``) into ``output_dir``, logs them to the configured loggers, and returns ``val/<metric>`` of
``method`` (when it was run) for sweepers.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stateft.app.pairing import check_pairing
from stateft.errors import UserError
from stateft.models.backbone import S4_ARCHS

KINDS = ("s4_synthetic", "pixels")


def is_s4_run(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "model.arch") in S4_ARCHS


def check_config(cfg: DictConfig) -> None:
    """Start-up checks, torch-free (one line each): an S4 model with an S4 task and an S4 task with an S4 model; on
    an S4 run, every ``s4.compare`` entry and the pixel tasks' data folder."""
    check_pairing(
        cfg,
        lambda model: model.get("arch") in S4_ARCHS,
        lambda dataset: dataset.get("kind") in KINDS,
        "model {model} is a deep S4, which trains on the SDT paper's tasks only; use experiment=sdt_s4/synthetic or "
        "experiment=sdt_s4/transfer (dataset=s4_synthetic, pixel_transfer)",
        "dataset {dataset} is a deep-S4 task; use a deep S4 model (model=s4-synthetic, s4-pixels)",
    )
    if not is_s4_run(cfg) or OmegaConf.select(cfg, "dataset") is None:
        return
    method_entries(cfg)
    path = OmegaConf.select(cfg, "dataset.path")
    if cfg.dataset.get("kind") == "pixels" and not Path(str(path)).expanduser().is_dir():
        raise UserError(
            f"dataset.path {path} is not a folder; put MNIST's idx files and CIFAR-10's binary version there "
            "(stateft/s4/pixels.py says where) or pass dataset.path=<folder>"
        )


def model_config(node: DictConfig):
    """The ``S4ModelConfig`` of ``conf/model/s4-*.yaml`` (``name`` and ``arch`` aside)."""
    from stateft.s4.model import S4ModelConfig

    raw = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in ("name", "arch")}
    valid = {f.name for f in fields(S4ModelConfig)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise UserError(f"unknown S4 model key {unknown[0]!r}; valid keys: name, arch, {', '.join(sorted(valid))}")
    cfg = S4ModelConfig(**raw)
    if node.get("arch") != cfg.arch:
        raise UserError(f"model.arch={node.get('arch')} contradicts model.layer={cfg.layer}; drop model.arch=...")
    return cfg


def compare_node(cfg: DictConfig) -> Any:
    return OmegaConf.select(cfg, "s4.compare") or OmegaConf.create([])


def method_entries(cfg: DictConfig) -> list[tuple[str, Any]]:
    """(label, typed method config) per method to run; every method must apply to S4."""
    from stateft.methods.configs import arch_refusal, validate_method_cfg

    arch = cfg.model.arch
    compare = OmegaConf.to_container(compare_node(cfg), resolve=True)
    if not compare:
        raw = {**OmegaConf.to_container(cfg.method, resolve=True), "lr": float(cfg.optim.lr)}
        compare = [
            {"label": cfg.method.name, "method": cfg.method.name, **{k: v for k, v in raw.items() if k != "name"}}
        ]
    entries = []
    for i, entry in enumerate(compare):
        if not isinstance(entry, dict) or "method" not in entry:
            raise UserError(f"s4.compare[{i}] must be a mapping with a method, e.g. {{label: SDT, method: s4_sdt}}")
        options = {k: v for k, v in entry.items() if k not in ("label", "method", "series")}
        method = validate_method_cfg({"name": entry["method"], **options})
        reason = arch_refusal(method, arch)
        if reason is not None:
            raise UserError(f"s4.compare[{i}]: method {method.name} on {cfg.model.name}: {reason}")
        entries.append((str(entry.get("label", method.name)), method))
    labels = [label for label, _ in entries]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise UserError(f"s4.compare: label {repeated[0]!r} is used twice; give each entry its own label")
    return entries


def _task(cls, node: DictConfig):
    """A dataclass of the dataset's task settings from ``cfg.dataset`` (name, kind and metric aside)."""
    raw = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in ("name", "kind", "metric")}
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise UserError(f"unknown dataset key {unknown[0]!r} for {node.kind}; valid keys: {', '.join(sorted(valid))}")
    return cls(**raw)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run the experiment of ``cfg`` (module docstring); the metrics."""
    from stateft.s4 import report as rep

    if cfg.get("dry_run"):
        raise UserError("dry_run=true is for the language models; a deep-S4 run lists each method's trainable "
                        "parameters in its results table")  # fmt: skip

    threads = OmegaConf.select(cfg, "s4.threads")
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise UserError(f"s4.threads must be an integer >= 1 or null, got {threads!r}")
        import torch

        torch.set_num_threads(threads)
    model_cfg = model_config(cfg.model)
    entries = method_entries(cfg)
    kind = cfg.dataset.kind
    if kind == "s4_synthetic":
        from stateft.s4 import synthetic

        task = _task(synthetic.SyntheticTask, cfg.dataset)
        report = synthetic.run(model_cfg, task, entries, int(cfg.seed), _device(cfg))
        report["title"] = f"deep S4 ({model_cfg.n_layers} layers) fitted to a random S4 ({task.target_layers} layer)"
    elif kind == "pixels":
        from stateft.s4 import transfer

        task = _task(transfer.TransferTask, cfg.dataset)
        report = transfer.run(model_cfg, task, entries, int(cfg.seed), _device(cfg))
        report["title"] = f"deep S4 pretrained on {task.pretrain}, tuned on {task.finetune}"
    else:
        raise UserError(f"unknown dataset.kind {kind!r} for a deep S4; choose one of: {', '.join(KINDS)}")
    series = {str(e.get("label", e.get("method"))): e.get("series") for e in OmegaConf.to_container(compare_node(cfg))}
    for r in report["results"]:
        r["series"] = series.get(r["label"]) or r["label"]
    report["model"] = model_cfg.as_dict()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = rep.write(out, report)
    _log(cfg, report, paths["figure"])
    print(rep.table(report))
    for what, path in paths.items():
        print(f"{what + ':':<8} {path}")
    metric = report["metric"]
    own = [r for r in report["results"] if r["method"] == cfg.method.name]
    metrics: dict[str, Any] = {f"{r['label']}/{metric}": r[metric] for r in report["results"]}
    if own:
        metrics[f"val/{metric}"] = own[0][metric]
    return metrics


def _device(cfg: DictConfig):
    """CUDA when the trainer asks for a GPU (trainer=gpu) or leaves it to auto on a machine with one; else the CPU
    (start-up already refused a GPU request on a machine without one: stateft.app.devices)."""
    import torch

    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator") or "auto")
    wants = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if wants and torch.cuda.is_available() else "cpu")


def _log(cfg: DictConfig, report: dict, figure: Path) -> None:
    if not cfg.get("logger"):
        return
    from stateft.app.loggers import build_loggers, close_wandb, finish_wandb
    from stateft.s4.report import log

    loggers = build_loggers(cfg)
    try:
        log(loggers, report, figure)
        for line in finish_wandb(loggers, None, "s4-results"):
            print(line)
    finally:
        close_wandb()
