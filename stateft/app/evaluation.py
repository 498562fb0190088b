"""``evaluate(cfg)``: a saved adapter on its dataset's test (or validation) split, or a predictions file alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stateft.errors import UserError

RUN_CONFIG = "run_config.json"  # written by train.py beside the adapter: the dataset (and everything else) it used


def _run_config_near(path: Path) -> dict[str, Any] | None:
    """The training run's config for an adapter dir or a predictions file (adapter/run_config.json)."""
    for candidate in (path / RUN_CONFIG, path.parent / "adapter" / RUN_CONFIG, path.parent / RUN_CONFIG):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def _dataset_node(cfg: DictConfig, near: Path) -> Any:
    if cfg.get("dataset") is not None:
        return cfg.dataset
    run_config = _run_config_near(near)
    if run_config is None or "dataset" not in run_config:
        raise UserError(f"cannot tell which dataset {near} belongs to; pass dataset=<name> (e.g. dataset=glue_rte)")
    return OmegaConf.create(run_config["dataset"])


def score_predictions(path: Path, dataset_cfg: Any, split: str) -> dict[str, float]:
    """Score a predictions file against its split of the dataset (rebuilt from the dataset config); no model.

    The split comes from the file name (``predictions_<split>.jsonl``) when it names one, else ``split``.
    """
    from stateft.data.predictions import score_predictions_file

    named = path.stem.removeprefix("predictions_")
    split = named if named in ("test", "validation") else split
    scores = score_predictions_file(dataset_cfg, path, split)
    return {f"{split}/{k}": float(v) for k, v in scores.items()}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.adapter`` on ``cfg.split``, or score ``cfg.predictions``; writes ``metrics.json``
    (and ``predictions_<split>.jsonl``) to ``cfg.output_dir``."""
    from stateft.app.files import write_json_atomic, write_predictions
    from stateft.app.protocol import scoring_record

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.get("predictions"):
        path = Path(str(cfg.predictions)).expanduser()
        dataset = _dataset_node(cfg, path)
        metrics = {**score_predictions(path, dataset, cfg.split), "protocol": scoring_record(dataset)}
        write_json_atomic(out / "metrics.json", metrics)
        _print(metrics, out)
        return metrics
    if not cfg.get("adapter"):
        raise UserError("pass adapter=PATH (an adapter directory) or predictions=PATH (a predictions JSONL)")
    if cfg.split not in ("test", "validation"):
        raise UserError(f"split must be test or validation, got {cfg.split!r}")
    adapter = Path(str(cfg.adapter)).expanduser()
    if not (adapter / "adapter_config.json").is_file():  # answer before torch and Lightning are imported
        raise UserError(f"{adapter} is not an adapter directory (no adapter_config.json): pass <run>/adapter")
    records, metrics, tokenizer = _run_adapter(cfg, adapter)
    write_json_atomic(out / "metrics.json", metrics)
    write_predictions(out / f"predictions_{cfg.split}.jsonl", records, tokenizer)
    _print(metrics, out)
    return metrics


def _run_adapter(cfg: DictConfig, adapter: Path) -> tuple[list[dict[str, Any]], dict[str, Any], Any]:
    import lightning as L
    from hydra.utils import instantiate

    from stateft.adapters import load_adapter, read_adapter_config
    from stateft.app.data import ResumableDataModule
    from stateft.lit_module import FineTuneModule
    from stateft.models.loading import model_from_config
    from stateft.tokenizer import load_tokenizer

    meta = read_adapter_config(adapter)
    model_cfg = cfg.model if cfg.get("model") is not None else OmegaConf.create(meta["base_model"])
    L.seed_everything(cfg.seed)
    model = model_from_config(model_cfg)
    trainable = load_adapter(adapter, model)
    dataset = _dataset_node(cfg, adapter)
    datamodule = ResumableDataModule(instantiate(dataset))
    tokenizer = load_tokenizer(model_cfg.get("tokenizer") or "EleutherAI/gpt-neox-20b")
    module = FineTuneModule(model, trainable, {"lr": 0.0, "weight_decay": 0.0}, datamodule.task, tokenizer)
    from stateft.app.precision import lightning_precision

    precision = lightning_precision(cfg.trainer.precision)  # bf16-true: the base is loaded in bf16 as trained
    trainer = instantiate(cfg.trainer, precision=precision, logger=False, callbacks=[], enable_checkpointing=False)
    stage = "test" if cfg.split == "test" else "val"
    if stage == "test":
        trainer.test(module, datamodule=datamodule, verbose=False)
    else:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {k.replace("val/", "validation/", 1): v for k, v in module.metrics.get(stage, {}).items()}
    from stateft.app.protocol import scoring_record

    info = {"adapter": str(adapter), "split": cfg.split, "method": meta["method"]["name"]}
    info["protocol"] = scoring_record(dataset)
    return module.predictions.get(stage, []), {**metrics, **info}, tokenizer


def _print(metrics: dict[str, Any], out: Path) -> None:
    print(", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    print(f"metrics and predictions in {out}")


__all__ = ["evaluate", "score_predictions"]
