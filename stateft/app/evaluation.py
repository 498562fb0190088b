"""``evaluate(cfg)``: a saved adapter on its dataset's test (or validation) split, or a predictions file alone.

An adapter or predictions folder may come from someone else: what its files say is read as data
(``stateft.app.run_config`` for the run config and the base-model record, ``stateft.adapters`` for the adapter), and
nothing read from them is instantiated, imported or unpickled (docs/security.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stateft.errors import UserError


def _dataset_spec(cfg: DictConfig, near: Path) -> Any:
    """The command line's ``dataset=...`` as given, else our config of the dataset the run folder names."""
    from stateft.app.run_config import DatasetSpec, dataset_near

    if cfg.get("dataset") is not None:
        return DatasetSpec.from_cli(cfg.dataset)
    return dataset_near(near)


def score_predictions(path: Path, dataset: Any, split: str) -> dict[str, float]:
    """Score a predictions file against its split of ``dataset`` (a DataModule, or a ``DatasetSpec`` to build it);
    no model. The split comes from the file name (``predictions_<split>.jsonl``) when it names one, else ``split``.
    """
    from stateft.data.predictions import score_predictions_file

    named = path.stem.removeprefix("predictions_")
    split = named if named in ("test", "validation") else split
    datamodule = dataset.build() if hasattr(dataset, "build") else dataset
    scores = score_predictions_file(datamodule, path, split)
    return {f"{split}/{k}": float(v) for k, v in scores.items()}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.adapter`` on ``cfg.split``, or score ``cfg.predictions``; writes ``metrics.json``
    (and ``predictions_<split>.jsonl``) to ``cfg.output_dir``."""
    from stateft.app.files import write_json_atomic
    from stateft.app.protocol import scoring_record

    if cfg.get("predictions"):
        path = Path(str(cfg.predictions)).expanduser()
        dataset = _dataset_spec(cfg, path)
        scores = score_predictions(path, dataset, cfg.split)
        return _metrics_only(cfg, {**scores, "protocol": scoring_record(dataset.node)})
    if cfg.get("harness") is not None:  # lm-evaluation-harness tasks (stateft/harness/tasks.py)
        from stateft.harness.tasks import evaluate_harness

        return _metrics_only(cfg, evaluate_harness(cfg))
    if not cfg.get("adapter"):
        raise UserError("pass adapter=PATH (an adapter directory) or predictions=PATH (a predictions JSONL)")
    if cfg.split not in ("test", "validation"):
        raise UserError(f"split must be test or validation, got {cfg.split!r}")
    # hf://owner/name[@rev] (or owner/name with no such local folder): pulled and checked (stateft/hub.py)
    from stateft.hub import resolve_adapter_dir

    adapter, source = resolve_adapter_dir(str(cfg.adapter))  # answered before torch and Lightning are imported
    records, metrics, tokenizer = _run_adapter(cfg, adapter)
    metrics["adapter"] = source  # a hub adapter as hf://owner/name@<commit>
    out = _output_dir(cfg)
    write_json_atomic(out / "metrics.json", metrics)
    from stateft.data.predictions import write_predictions  # stateft.data imports torch: not before the checks

    write_predictions(out / f"predictions_{cfg.split}.jsonl", records, tokenizer)
    _print(metrics, out)
    return metrics


def _metrics_only(cfg: DictConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """An evaluation that writes only ``metrics.json`` (no predictions file): written, printed, returned."""
    from stateft.app.files import write_json_atomic

    out = _output_dir(cfg)
    write_json_atomic(out / "metrics.json", metrics)
    _print(metrics, out)
    return metrics


def _output_dir(cfg: DictConfig) -> Path:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _run_adapter(cfg: DictConfig, adapter: Path) -> tuple[list[dict[str, Any]], dict[str, Any], Any]:
    import lightning as L
    from hydra.utils import instantiate

    from stateft.adapters import read_adapter, read_adapter_config
    from stateft.app.checks import check_tokenizers
    from stateft.app.data import ResumableDataModule
    from stateft.app.fast_path import base_dtype
    from stateft.app.run_config import base_model_node
    from stateft.lit_module import FineTuneModule
    from stateft.models.backbone import is_vision
    from stateft.models.loading import config_from_model_cfg, model_from_config
    from stateft.tokenizer import DEFAULT_NAME, load_tokenizer

    # everything the folder says is checked before a model is built or data is loaded
    meta = read_adapter_config(adapter)
    dataset = _dataset_spec(cfg, adapter)
    if cfg.get("model") is not None:
        from stateft.vision.app import bind_vision

        # an image model takes its task's classes; the pairing of model and data is checked either way
        model_cfg = bind_vision(OmegaConf.create({"model": cfg.model, "dataset": dataset.node})).model
    else:
        model_cfg = base_model_node(meta.get("base_model"), f"{adapter / 'adapter_config.json'}: base_model")
    verified = read_adapter(adapter, config_from_model_cfg(model_cfg))  # config, method, tensors, digests
    check_tokenizers(model_cfg.get("tokenizer") or DEFAULT_NAME, dataset.node.get("tokenizer"))
    settled = base_dtype(OmegaConf.create({"model": model_cfg, "trainer": cfg.trainer}))  # model.dtype=auto
    model_cfg = OmegaConf.merge(model_cfg, {"dtype": settled})
    L.seed_everything(cfg.seed)
    model = model_from_config(model_cfg)
    trainable = verified.apply(model)
    datamodule = ResumableDataModule(dataset.build())
    tokenizer = None if is_vision(model) else load_tokenizer(model_cfg.get("tokenizer") or DEFAULT_NAME)
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
    info["examples_per_sec"] = module.examples_per_sec.get(stage)  # the evaluation loop's rate, decoding included
    info["protocol"] = scoring_record(dataset.node)
    return module.predictions.get(stage, []), {**metrics, **info}, tokenizer


def _print(metrics: dict[str, Any], out: Path) -> None:
    print(", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    print(f"metrics and predictions in {out}")


__all__ = ["evaluate", "score_predictions"]
