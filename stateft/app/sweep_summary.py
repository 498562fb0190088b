"""Rank the jobs of a learning-rate sweep by final training loss and pick the learning rate (the papers' rule).

    python -m stateft.app.sweep_summary multirun/glue_rte/lora/mamba-130m/2026-01-01_12-00-00 [--launch]
    python -m stateft.app.sweep_summary multirun/          (one summary per sweep found under it)
    python -m stateft.app.sweep_summary --search multirun/<...>   (a sweep=peft_search run: its best trials)

A folder holding several sweeps (``multirun/``) gets one summary per sweep: jobs of different sweeps (datasets,
methods, models, times) are never ranked together. A chosen rate on the grid's edge is flagged: the best rate may lie
beyond it. ``--launch`` starts the full run with the chosen learning rate (the best job's overrides, minus the sweep);
it needs a single sweep. The same summary prints when a ``sweep=lr_grid`` multirun ends (``SweepSummaryCallback``).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from stateft.app.commands import command

LOSS_KEY = "train/loss_epoch"  # mean training loss of the last epoch
_DROP = ("sweep=", "lr_grid.", "peft_search.", "hydra/launcher=", "hydra.", "gpu_pool=")  # sweep-only overrides


@dataclass
class Job:
    """One sweep job: its directory, overrides, learning rate, final training loss, status and metrics.json (None
    when missing or damaged; read once, by ``collect``)."""

    path: Path
    overrides: list[str] = field(default_factory=list)
    lr: float | None = None
    loss: float | None = None
    status: str = "ok"  # ok | failed: <first line> | running or missing
    metrics: dict[str, Any] | None = None

    @property
    def rankable(self) -> bool:
        return self.status == "ok" and self.loss is not None and math.isfinite(self.loss)

    @cached_property
    def choices(self) -> list[str]:
        """``model=... method=... dataset=...`` as Hydra chose them for the job (its ``hydra.yaml``, read once)."""
        return _choices(self.path)


def _read_yaml_list(path: Path) -> list[str]:
    from omegaconf import OmegaConf

    return [str(x) for x in OmegaConf.load(path)] if path.is_file() else []


def _lr_from(overrides: list[str]) -> float | None:
    for o in overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key in ("optim.lr", "method.lr"):
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _read_metrics(path: Path) -> dict[str, Any] | None:
    """A job's metrics.json, or None when it is damaged (a job killed mid-write, a full disk)."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def collect(sweep_dir: Path, loss_key: str = LOSS_KEY) -> list[Job]:
    """Every job under ``sweep_dir`` (a folder holding ``.hydra/overrides.yaml``)."""
    jobs = []
    for overrides_file in sorted(Path(sweep_dir).rglob(".hydra/overrides.yaml")):
        path = overrides_file.parent.parent
        job = Job(path, _read_yaml_list(overrides_file))
        metrics_file, error_file = path / "metrics.json", path / "error.txt"
        metrics = job.metrics = _read_metrics(metrics_file) if metrics_file.is_file() else None
        if metrics_file.is_file() and metrics is None:
            job.lr, job.status = _lr_from(job.overrides), "unreadable metrics.json"
        elif metrics is not None:
            job.lr = metrics.get("lr", _lr_from(job.overrides))
            loss = metrics.get(loss_key)
            job.loss = float(loss) if isinstance(loss, (int, float)) else None
            if job.loss is None or not math.isfinite(job.loss):
                job.status = "diverged" if job.loss is not None else f"no {loss_key}"
        elif error_file.is_file():
            job.lr = _lr_from(job.overrides)
            first = next(
                (line for line in reversed(error_file.read_text(errors="replace").splitlines()) if line.strip()), ""
            )
            job.status = f"failed: {first.strip()[:100]}"
        else:
            job.lr, job.status = _lr_from(job.overrides), "running or killed (no metrics.json)"
        jobs.append(job)
    return jobs


def ranked(jobs: list[Job]) -> list[Job]:
    """Jobs with a finite loss by increasing loss, then the others by learning rate."""
    good = sorted((j for j in jobs if j.rankable), key=lambda j: j.loss)
    rest = sorted((j for j in jobs if not j.rankable), key=lambda j: j.lr or 0.0)
    return good + rest


def _choices(job_dir: Path) -> list[str]:
    """``model=... method=... dataset=...`` as Hydra chose them for the job (explicit in the launch command)."""
    from omegaconf import OmegaConf

    hydra_file = job_dir / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return []
    choices = OmegaConf.load(hydra_file).hydra.runtime.choices
    return [f"{group}={choices[group]}" for group in ("model", "method", "dataset") if choices.get(group)]


def launch_overrides(job: Job) -> list[str]:
    """The overrides of the full training run for ``job``'s settings: its own without the sweep-only ones (Hydra
    syntax as Hydra recorded them, so they only need shell quoting)."""
    keep = [o for o in job.overrides if not o.lstrip("+~").startswith(_DROP)]
    groups = {o.split("=", 1)[0] for o in keep}
    chosen = [c for c in job.choices if c.split("=", 1)[0] not in groups]
    return [*chosen, *keep]


def launch_command(job: Job, script: str = "train.py") -> list[str]:
    """The full training run for ``job``'s settings as an argument list (this interpreter, ``script``)."""
    return [sys.executable, script, *launch_overrides(job)]


def sweep_of(job_dir: Path, root: Path) -> Path:
    """The sweep folder of a job: the nearest folder above it (within ``root``) holding Hydra's ``multirun.yaml``,
    else the job's parent folder (``multirun/<dataset>/<method>/<model>/<time>/<job>``)."""
    root = Path(root).resolve()
    for folder in Path(job_dir).resolve().parents:
        if (folder / "multirun.yaml").is_file():
            return folder
        if folder == root or root not in folder.parents:
            break
    return Path(job_dir).resolve().parent


def sweeps(root: Path, loss_key: str = LOSS_KEY) -> dict[Path, list[Job]]:
    """The jobs under ``root`` grouped by sweep, sweeps in path order (time order within one dataset/method/model)."""
    groups: dict[Path, list[Job]] = {}
    for job in collect(root, loss_key):
        groups.setdefault(sweep_of(job.path, root), []).append(job)
    return {folder: groups[folder] for folder in sorted(groups)}


def edge_warning(best: Job, jobs: list[Job]) -> str | None:
    """A warning when the chosen rate is the lowest or the highest rate the sweep tried."""
    rates = sorted({j.lr for j in jobs if j.lr is not None})
    if best.lr is None or len(rates) < 2:
        return "warning: the sweep tried a single rate: widen lr_grid.min/max" if len(rates) == 1 else None
    if best.lr == rates[0]:
        return (
            f"warning: the best rate is the grid's lowest ({best.lr:g}): widen lr_grid.min (the loss may fall further)"
        )
    if best.lr == rates[-1]:
        return (
            f"warning: the best rate is the grid's highest ({best.lr:g}): widen lr_grid.max (the loss may fall further)"
        )
    return None


def summarize(sweep_dir: Path, jobs: list[Job], loss_key: str = LOSS_KEY) -> tuple[str, Job | None]:
    """The ranking of one sweep's ``jobs`` as text, and the chosen job (None if no job finished)."""
    jobs = ranked(jobs)
    if not jobs:
        return f"no sweep jobs under {sweep_dir}", None
    lines = [
        f"learning-rate sweep in {sweep_dir}: {len(jobs)} jobs, ranked by final training loss ({loss_key})",
        f"{'rank':>4}  {'lr':>9}  {'loss':>10}  status",
    ]
    for i, job in enumerate(jobs, 1):
        lr = f"{job.lr:.0e}" if job.lr is not None else "?"
        loss = f"{job.loss:.4f}" if job.loss is not None else "-"
        lines.append(f"{i if job.rankable else '-':>4}  {lr:>9}  {loss:>10}  {job.status}")
    best = jobs[0] if jobs[0].rankable else None
    if best is None:
        lines.append("no job finished with a finite loss: no learning rate chosen")
    else:
        lines.append(f"chosen learning rate: {best.lr:g}")
        warning = edge_warning(best, jobs)
        if warning:
            lines.append(warning)
        lines.append("full run: " + command("train.py", launch_overrides(best)))
    return "\n".join(lines), best


def summaries(
    root: Path, loss_key: str = LOSS_KEY, groups: dict[Path, list[Job]] | None = None
) -> list[tuple[str, Job | None]]:
    """One summary per sweep under ``root`` (``groups``: its ``sweeps``, when already collected)."""
    groups = sweeps(root, loss_key) if groups is None else groups
    if not groups:
        return [(f"no sweep jobs under {root}", None)]
    return [summarize(folder, jobs, loss_key) for folder, jobs in groups.items()]


def summary(
    sweep_dir: Path, loss_key: str = LOSS_KEY, parts: list[tuple[str, Job | None]] | None = None
) -> tuple[str, Job | None]:
    """The summary of the sweep(s) under ``sweep_dir`` as one text, and the chosen job when there is one sweep
    (``parts``: its ``summaries``, when already made)."""
    parts = summaries(sweep_dir, loss_key) if parts is None else parts
    text = "\n\n".join(t for t, _ in parts)
    if len(parts) > 1:
        text = f"{len(parts)} sweeps under {sweep_dir}, one summary each\n\n{text}"
    return text, parts[0][1] if len(parts) == 1 else None


# -- sweep=peft_search: trials ranked by the value each returned to the sweeper ----------------------------------
def trial_value(job: Job, metric: str) -> float | None:
    """The value the job's run returned to the sweeper (``runner.metric_value`` of its metrics.json)."""
    from stateft.app.runner import metric_value

    value = metric_value(job.metrics or {}, metric)
    return value if value is not None and math.isfinite(value) else None


def _parts_of(job: Job) -> list[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in job.overrides:
        if o.lstrip("+").startswith("method.parts="):
            value = OverridesParser.create().parse_overrides([o])[0].value()
            return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return []


def search_overrides(job: Job) -> list[str]:
    """The full run of a search trial: its overrides without the sweep's, and without the learning rates of the
    parts that were off in it (drawn by the search, read by no one)."""
    parts = set(_parts_of(job))
    keep = []
    for o in launch_overrides(job):
        key = o.lstrip("+").split("=", 1)[0]
        fields = key.split(".")
        if len(fields) == 3 and fields[0] == "method" and fields[2] == "lr" and fields[1] not in parts:
            continue
        keep.append(o)
    return keep


def search_summary(sweep_dir: Path, metric: str, maximize: bool, top: int = 5) -> tuple[str, Job | None]:
    """The ``top`` trials of a ``sweep=peft_search`` run by their value (best first), the failed ones counted, and
    the command of the best trial's full run."""
    jobs = collect(sweep_dir)
    scored = [(trial_value(job, metric), job) for job in jobs]
    done = sorted(((v, j) for v, j in scored if v is not None), key=lambda vj: -vj[0] if maximize else vj[0])
    if not jobs:
        return f"no search trials under {sweep_dir}", None
    lines = [
        f"PEFT search in {sweep_dir}: {len(jobs)} trials, {len(done)} with {metric} "
        f"({'higher' if maximize else 'lower'} is better); the best {min(top, len(done))}:",
        f"{'rank':>4}  {metric:>12}  parts and learning rates",
    ]
    for rank, (value, job) in enumerate(done[:top], 1):
        pairs = [o.lstrip("+").split("=", 1) for o in search_overrides(job)]
        lrs = {key.split(".")[1]: value for key, value in pairs if key.startswith("method.") and key.endswith(".lr")}
        shown = ", ".join(f"{part} lr={lrs.get(part, '?')}" for part in _parts_of(job))
        lines.append(f"{rank:>4}  {value:>12.4f}  {shown}")
    failed = [j for v, j in scored if v is None]
    if failed:
        lines.append(f"{len(failed)} trials without a value, e.g. {failed[0].path.name}: {failed[0].status}")
    if not done:
        lines.append("no trial finished with a value: nothing chosen")
        return "\n".join(lines), None
    best = done[0][1]
    lines.append("best trial: " + best.path.name)
    lines.append("full run: " + command("train.py", search_overrides(best)))
    return "\n".join(lines), best


class SearchSummaryCallback(Callback):
    """Hydra callback of ``sweep=peft_search``: prints the best trials and the best one's command when it ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        maximize = config.checkpoint.mode == "max"
        text, _ = search_summary(Path(config.hydra.sweep.dir), config.optimized_metric, maximize)
        print("\n" + text, flush=True)


class SweepSummaryCallback(Callback):
    """Hydra callback (``hydra.callbacks``): prints the summary when the multirun ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        text, _ = summary(Path(config.hydra.sweep.dir))
        print("\n" + text, flush=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the ranking of each sweep; ``--launch`` runs the chosen full run of a single sweep."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory of the sweep (or a folder of sweeps)")
    parser.add_argument("--launch", action="store_true", help="start the full run with the chosen learning rate")
    parser.add_argument("--loss-key", default=LOSS_KEY, help=f"metric to rank by (lower is better; {LOSS_KEY})")
    parser.add_argument("--search", action="store_true", help="a sweep=peft_search run: its best trials")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    if args.search:
        return _search_main(args.sweep_dir, args.launch)
    groups = sweeps(args.sweep_dir, args.loss_key)
    if args.launch and len(groups) > 1:
        names = ", ".join(str(folder) for folder in groups)
        print(f"error: --launch needs one sweep and {args.sweep_dir} holds {len(groups)}; pass one of: {names}",
              file=sys.stderr)  # fmt: skip
        return 2
    parts = summaries(args.sweep_dir, args.loss_key, groups)
    text, best = summary(args.sweep_dir, args.loss_key, parts)
    print(text)
    if args.launch:
        if best is None:
            return 1
        script = str(Path(__file__).resolve().parents[2] / "train.py")
        return subprocess.call(launch_command(best, script))
    return 0 if all(job is not None for _, job in parts) else 1


def _search_main(sweep_dir: Path, launch: bool) -> int:
    """``--search``: the objective and its direction from the search's own ``multirun.yaml``."""
    from omegaconf import OmegaConf

    config_file = sweep_dir / "multirun.yaml"
    if not config_file.is_file():
        print(f"error: {sweep_dir} holds no multirun.yaml; pass the folder of one sweep=peft_search run",
              file=sys.stderr)  # fmt: skip
        return 2
    config = OmegaConf.load(config_file)
    metric = OmegaConf.select(config, "optimized_metric", throw_on_resolution_failure=False)
    maximize = OmegaConf.select(config, "checkpoint.mode", default="max") == "max"
    text, best = search_summary(sweep_dir, str(metric), maximize)
    print(text)
    if best is None:
        return 1
    if launch:
        script = str(Path(__file__).resolve().parents[2] / "train.py")
        return subprocess.call([sys.executable, script, *search_overrides(best)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
