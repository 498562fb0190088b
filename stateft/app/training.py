"""``train(cfg)``: build the model, apply the method, fit, test the best epoch, save the adapter and the results.

Files of a run (``cfg.output_dir``): ``adapter/`` (best epoch, adapter only, with ``run_config.json``),
``checkpoints/last.ckpt`` (resume), ``metrics.json``, ``predictions_validation.jsonl`` (last validation),
``predictions_test.jsonl``, logger folders (``csv/``, ``wandb/``, ``tensorboard/``), Hydra's ``.hydra/``, ``train.log``.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from stateft.app.checks import to_container
from stateft.app.exact import resolve_exact
from stateft.app.fast_path import resolve_fast_path
from stateft.app.precision import PURE_BF16, cast_trainable_to_bf16, lightning_precision
from stateft.app.protocol import protocol_record
from stateft.errors import UserError
from stateft.hub import check_push_config, push_run
from stateft.models.backbone import is_vision
from stateft.s4.runner import is_s4_run  # torch-free
from stateft.vision.app import bind_vision


class _NoAdverts(logging.Filter):
    """Drops Lightning's "Tip: try installing ..." line from a run's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def dry_run(cfg: DictConfig) -> dict[str, Any]:
    """Build the model on the meta device (no download), apply the method, print the parameter summary."""
    from stateft.methods.compose import part_summary
    from stateft.models.lm import count_parameters, format_parameter_summary
    from stateft.models.loading import model_from_config

    model = model_from_config(cfg.model, device="meta")
    _apply(cfg, model, train_batches=None)
    print(format_parameter_summary(model))
    for line in part_summary(model):  # a composition: each part's count and learning rate, and the total
        print(line)
    trainable, total = count_parameters(model)
    return {"params/trainable": trainable, "params/total": total}


def _apply(cfg: DictConfig, model: Any, train_batches: Any) -> list[str]:
    from stateft.methods import apply_method

    try:
        return apply_method(cfg.method.name, model, cfg.method, train_batches=train_batches)
    except NotImplementedError as err:  # e.g. sdt on Mamba-2: a choice the user can change
        raise UserError(f"method {cfg.method.name} on {cfg.model.name}: {err}") from None


def load_adapter_weights(directory: Path, model: Any, names: list[str]) -> None:
    """Copy a saved adapter's tensors into a model that already has the method applied."""
    import torch
    from safetensors.torch import load_file

    from stateft.adapters import WEIGHTS_NAME
    from stateft.methods.peft_adapters import is_peft_adapter, load_peft_weights

    if is_peft_adapter(directory):
        load_peft_weights(directory, model)
        return

    tensors = load_file(str(Path(directory) / WEIGHTS_NAME))
    if set(tensors) != set(names):
        raise UserError(f"adapter {directory} does not hold this run's trainable tensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in names:
            params[name].copy_(tensors[name])


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune, test the best epoch, write the results; returns the metrics (also in ``metrics.json``)."""
    if is_s4_run(cfg):  # the SDT paper's deep-S4 experiments (experiment=sdt_s4/*): their own runner
        from stateft.s4.runner import run as run_s4

        return run_s4(cfg)
    cfg = resolve_exact(cfg)  # paper.exact applied; under bf16-true model.dtype is bfloat16
    cfg = bind_vision(cfg)  # an image model: the task's classes on the head, no tokenizer nor CUDA graphs
    check_push_config(cfg)  # hub.push_to: a bad repo id ends the run now, not after training (stateft/hub.py)
    cfg, fast_path_lines = resolve_fast_path(cfg)  # model.dtype and cuda_graph: auto settled for this machine
    if cfg.dry_run:
        return dry_run(cfg)
    import lightning as L
    from hydra.utils import instantiate

    from stateft.app import callbacks as cb
    from stateft.app.data import ResumableDataModule, TrainBatches
    from stateft.app.loggers import build_loggers, close_wandb, finish_wandb, log_run_info
    from stateft.app.resume import open_resume
    from stateft.lit_module import FineTuneModule
    from stateft.models.lm import count_parameters, format_parameter_summary
    from stateft.models.loading import model_from_config
    from stateft.tokenizer import load_tokenizer

    out = Path(cfg.output_dir)
    # an unreadable checkpoint, or one of another method, dataset or model: one line, before anything is written
    resume = open_resume(cfg)
    out.mkdir(parents=True, exist_ok=True)
    # stateft.app.data skips the batches a mid-epoch checkpoint already trained on: the loader is resumable
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdverts())
    L.seed_everything(cfg.seed, workers=True)
    model = model_from_config(cfg.model)
    tokenizer = None if is_vision(model) else load_tokenizer(cfg.model.tokenizer)
    datamodule = ResumableDataModule(instantiate(cfg.dataset), seed=cfg.seed)  # the run seed orders the data
    trainable = _apply(cfg, model, TrainBatches(datamodule))
    if resume is not None:
        resume.check_tensors(model, trainable)
    if cfg.trainer.precision == PURE_BF16:  # the adapters in bf16 too (AdamW's moments follow them)
        cast_trainable_to_bf16(model)
    print(f"{config_summary(cfg)}; outputs in {_short(out)}")
    print(format_parameter_summary(model))
    for line in fast_path_lines:
        print(line)
    n_trainable, n_total = count_parameters(model)
    counts = {
        "params/trainable": n_trainable,
        "params/total": n_total,
        "params/trainable_pct": 100 * n_trainable / n_total,
    }

    graphed = None
    if cfg.get("cuda_graph"):
        from stateft.train_graph import GraphedLoss

        bucket = int(cfg.get("cuda_graph_bucket", 0) or 0)
        pad_id = getattr(tokenizer, "pad_id", 0)
        graphed = GraphedLoss(model, cfg.dataset.batch_size, cfg.dataset.max_length, pad_id, bucket)
        if bucket:
            lengths = f"a multiple of {bucket} tokens (at most {cfg.dataset.max_length})"
        else:
            lengths = f"{cfg.dataset.max_length} tokens (dataset.max_length)"
        print(f"cuda_graph: training batches padded to {cfg.dataset.batch_size} rows x {lengths}, replayed as graphs")
    module = FineTuneModule(model, trainable, to_container(cfg.optim), datamodule.task, tokenizer, graphed)
    run_config = {k: v for k, v in to_container(cfg).items() if k != "hydra"}
    best = cb.BestAdapter(
        out / "adapter",
        cfg.checkpoint.monitor,
        cfg.checkpoint.mode,
        model.peft_config,
        to_container(cfg.model),
        extra_files={"run_config.json": run_config},
    )
    if resume is not None:  # the killed run's temporary files go; its best adapter and predictions come along
        resume.prepare(out)
    loggers = build_loggers(cfg, resume)
    trainer = instantiate(
        cfg.trainer,
        precision=lightning_precision(cfg.trainer.precision),
        logger=loggers or False,
        callbacks=_callbacks(cfg, out, best, loggers, tokenizer),
        plugins=[cb.AtomicCheckpointIO()],
        enable_checkpointing=False,  # LastCheckpoint + BestAdapter replace Lightning's ModelCheckpoint
    )
    protocol = protocol_record(cfg)
    log_run_info(loggers, cfg, counts, protocol)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=None if resume is None else str(resume.checkpoint))
        if best.best is None and trainer.is_global_zero:  # no validation ran (e.g. a learning-rate sweep)
            best.save(module)
        trainer.strategy.barrier("adapter_saved")
        metrics: dict[str, Any] = {
            **counts,
            "lr": float(cfg.optim.lr),
            "protocol": protocol,
            "best_epoch": best.best_epoch,
            cfg.checkpoint.monitor + "_best": best.best,
        }
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})
        if cfg.test:
            load_adapter_weights(best.directory, model, trainable)
            trainer.test(module, datamodule=datamodule, verbose=False)
            metrics.update(module.metrics.get("test", {}))
        metrics.update({f"last_{k}": v for k, v in module.metrics.get("val", {}).items()})
        if trainer.is_global_zero:
            lines = finish_wandb(loggers, best.directory, f"adapter-{cfg.method.name}-{cfg.dataset.name}")
            _write_results(out, metrics, module)
            _print_report(cfg, out, metrics, module.epoch_losses, lines)
            for line in push_run(cfg, best.directory):  # hub.push_to: the best adapter and a model card
                print(line)
        return metrics
    finally:
        close_wandb()


def _callbacks(cfg: DictConfig, out: Path, best: Any, loggers: list[Any], tokenizer: Any) -> list[Any]:
    from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar

    from stateft.app import callbacks as cb
    from stateft.app.resume import run_identity

    log_every = cfg.trainer.get("log_every_n_steps") or 10  # the throughput window and the progress bar's refresh
    callbacks: list[Any] = [
        best,
        cb.ValidationPredictions(out / "predictions_validation.jsonl"),
        cb.LastCheckpoint(out / "checkpoints" / "last.ckpt", cfg.checkpoint.every_n_train_steps, run_identity(cfg)),
    ]
    if tokenizer is not None:  # token batches (images: no tokens to count)
        callbacks.append(cb.Throughput(log_every))
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if cfg.trainer.get("enable_progress_bar", True):
        # a refresh reads the step's loss from the device (a synchronisation): refresh as often as the loggers read
        callbacks.append(TQDMProgressBar(refresh_rate=log_every))
    wandb_loggers = [lg for lg in loggers if type(lg).__name__ == "WandbLogger"]
    if tokenizer is None:  # images: no generated text to show
        return callbacks
    return callbacks + [cb.SampleTable(lg, tokenizer, cfg.samples_per_validation) for lg in wandb_loggers]


def _write_results(out: Path, metrics: dict[str, Any], module: Any) -> None:
    from stateft.app.files import write_json_atomic
    from stateft.data.predictions import write_predictions

    write_json_atomic(out / "metrics.json", metrics)
    if module.predictions.get("test"):
        write_predictions(out / "predictions_test.jsonl", module.predictions["test"], module.tokenizer)


def _print_report(
    cfg: DictConfig, out: Path, metrics: dict[str, Any], losses: list[float], extra_lines: list[str]
) -> None:
    from stateft.app.commands import eval_command, resume_command  # quoted for the shell and for Hydra

    shown = {k: v for k, v in metrics.items() if k.startswith("test/") or k.endswith("_best")}
    if not any(isinstance(v, (int, float)) for v in shown.values()):  # no validation nor test (a sweep job)
        shown = {k: v for k, v in metrics.items() if k.startswith("train/")}
    print("\n" + "-" * 80)
    if losses:
        print("training loss by epoch: " + " -> ".join(f"{x:.3f}" for x in losses))
    print("results: " + ", ".join(f"{k}={v:.4f}" for k, v in shown.items() if isinstance(v, (int, float))))
    out = _short(out)
    print(f"run directory:   {out}")
    print(f"adapter:         {out / 'adapter'}")
    print(f"metrics:         {out / 'metrics.json'}")
    if (out / "predictions_test.jsonl").exists():
        print(f"predictions:     {out / 'predictions_test.jsonl'}")
    print(f"resume with:     {resume_command(out)}")
    print(f"evaluate with:   {eval_command(out / 'adapter')}")
    for line in extra_lines:
        print(line)
    if cfg.get("next_steps"):
        print("next, try:")
        for line in cfg.next_steps:
            print(f"  {line}")
    sys.stdout.flush()


def _short(path: Path) -> Path:
    """``path`` relative to the working directory when it lies inside it (shorter lines to copy)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def config_summary(cfg: DictConfig) -> str:
    """One line naming the run (printed at start-up)."""
    line = f"training {cfg.method.name} on {cfg.dataset.name} with {cfg.model.name}, lr={cfg.optim.lr:g}"
    if OmegaConf.select(cfg, "trainer.precision") == PURE_BF16:
        line += ", bf16-true (bf16 weights, adapters and AdamW state; A_log, D, dt_bias fp32)"
    return line
