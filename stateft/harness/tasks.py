"""A set of lm-eval tasks (``conf/harness/*.yaml``) on one model: every metric lm-eval computes, and per task the one
the paper reports, with their mean.

metrics.json keys: ``harness/<task>/<metric>`` (e.g. ``harness/hellaswag/acc_norm``, ``.../acc_stderr``),
``harness/<task>`` (the reported metric) and ``harness/average`` (their mean), fractions in [0, 1].
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from stateft.errors import UserError


def check_tasks(names: list[str], manager: Any) -> None:
    """Every task name is known to lm-eval (its own tasks and those of ``include_path``); else one line."""
    missing = [name for name in names if name not in manager.all_tasks]
    if missing:
        raise UserError(
            f"lm-eval has no task {missing[0]!r} (check the name with `lm-eval ls tasks`, or add the folder of its "
            "YAML with harness.include_path=...)"
        )


def task_manager(names: list[str], include_path: str | list[str] | None = None) -> Any:
    """lm-eval's index of the tasks: of ``include_path`` alone when every name is a plain task there (indexing
    lm-eval's own few thousand YAML files takes seconds), else of both; any unknown name is one line."""
    from lm_eval.tasks import TaskManager

    if include_path:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(name in local.all_subtasks for name in names):
            return local
    manager = TaskManager(include_path=include_path)
    check_tasks(names, manager)
    return manager


def run_tasks(
    lm: Any,
    tasks: dict[str, str],
    num_fewshot: int = 0,
    include_path: str | list[str] | None = None,
    limit: int | float | None = None,
    log_samples: bool = False,
    manager: Any = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Evaluate ``tasks`` (``{task: reported metric}``) with lm-eval on ``lm``; returns (our metrics, lm-eval's
    whole output). ``manager``: ``task_manager``'s index when the caller made it already."""
    from lm_eval import simple_evaluate

    manager = manager if manager is not None else task_manager(list(tasks), include_path)
    output = simple_evaluate(
        model=lm, tasks=list(tasks), num_fewshot=num_fewshot, task_manager=manager, limit=limit,
        log_samples=log_samples,
    )  # fmt: skip
    return task_metrics(output["results"], tasks), output


def task_metrics(results: dict[str, dict[str, Any]], tasks: dict[str, str]) -> dict[str, float]:
    """lm-eval's ``results`` (``{task: {"acc,none": ..., "acc_stderr,none": ...}}``) as our metric keys."""
    metrics: dict[str, float] = {}
    reported = []
    for task, metric in tasks.items():
        values = {
            key.split(",")[0]: float(value)
            for key, value in results[task].items()
            if key.endswith(",none") and isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        if metric not in values:
            raise UserError(f"lm-eval task {task} has no metric {metric!r} (it has {', '.join(sorted(values))})")
        metrics.update({f"harness/{task}/{name}": value for name, value in values.items()})
        metrics[f"harness/{task}"] = values[metric]
        reported.append(values[metric])
    metrics["harness/average"] = sum(reported) / len(reported)
    return metrics


def evaluate_harness(cfg: DictConfig) -> dict[str, Any]:
    """``eval.py harness=<name>``: the adapter (or, with no adapter, ``model=...`` alone) on ``cfg.harness``'s tasks."""
    import torch

    from stateft.app.fast_path import base_dtype
    from stateft.harness.backbone import load_model
    from stateft.harness.lm import StateftLM

    harness = cfg.harness
    tasks = OmegaConf.to_container(harness.tasks)
    if not isinstance(tasks, dict) or not tasks:
        raise UserError("harness.tasks must map each lm-eval task to the metric to report, e.g. {boolq: acc}")
    if not cfg.get("adapter") and cfg.get("model") is None:
        raise UserError("pass adapter=PATH (an adapter directory), or model=<name> to evaluate a base model alone")
    include = harness.get("include_path")
    include = OmegaConf.to_container(include) if OmegaConf.is_list(include) else include
    manager = task_manager(list(tasks), include)  # an unknown task is answered before a model is built
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    device = "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
    model_cfg = cfg.get("model")
    dtype = base_dtype(OmegaConf.create({"model": model_cfg or {}, "trainer": cfg.trainer}))
    model, tokenizer, source = load_model(None, cfg.get("adapter"), dtype=dtype, device=device, node=model_cfg)
    lm = StateftLM(
        model=model, tokenizer=tokenizer, batch_size=harness.batch_size, max_length=harness.max_length,
        max_gen_toks=harness.max_gen_toks, device=device,
    )  # fmt: skip
    metrics, output = run_tasks(lm, tasks, harness.num_fewshot, include, harness.get("limit"), manager=manager)
    versions = {task: output.get("versions", {}).get(task) for task in tasks}
    info = {
        "harness": harness.name, "num_fewshot": harness.num_fewshot, "task_versions": versions,
        "adapter": source, "model": getattr(model, "name_or_path", None), "dtype": dtype,
    }  # fmt: skip
    return {**metrics, **info}
