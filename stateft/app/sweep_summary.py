"""Rank the jobs of a learning-rate sweep by final training loss and pick the learning rate (the papers' rule).

    python -m stateft.app.sweep_summary multirun/glue_rte/lora/mamba-130m/2026-01-01_12-00-00 [--launch]

``--launch`` starts the full run with the chosen learning rate (the best job's overrides, minus the sweep).
The same summary prints when a ``sweep=lr_grid`` multirun ends (``SweepSummaryCallback``).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

LOSS_KEY = "train/loss_epoch"  # mean training loss of the last epoch
_DROP = ("sweep=", "lr_grid.", "hydra/launcher=", "hydra.", "gpu_pool=")  # sweep-only overrides


@dataclass
class Job:
    """One sweep job: its directory, overrides, learning rate, final training loss and status."""

    path: Path
    overrides: list[str] = field(default_factory=list)
    lr: float | None = None
    loss: float | None = None
    status: str = "ok"  # ok | failed: <first line> | running or missing

    @property
    def rankable(self) -> bool:
        return self.status == "ok" and self.loss is not None and math.isfinite(self.loss)


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


def collect(sweep_dir: Path, loss_key: str = LOSS_KEY) -> list[Job]:
    """Every job under ``sweep_dir`` (a folder holding ``.hydra/overrides.yaml``)."""
    jobs = []
    for overrides_file in sorted(Path(sweep_dir).rglob(".hydra/overrides.yaml")):
        path = overrides_file.parent.parent
        job = Job(path, _read_yaml_list(overrides_file))
        metrics_file, error_file = path / "metrics.json", path / "error.txt"
        if metrics_file.is_file():
            metrics: dict[str, Any] = json.loads(metrics_file.read_text())
            job.lr = metrics.get("lr", _lr_from(job.overrides))
            loss = metrics.get(loss_key)
            job.loss = float(loss) if isinstance(loss, (int, float)) else None
            if job.loss is None or not math.isfinite(job.loss):
                job.status = "diverged" if job.loss is not None else f"no {loss_key}"
        elif error_file.is_file():
            job.lr = _lr_from(job.overrides)
            first = next((line for line in reversed(error_file.read_text().splitlines()) if line.strip()), "")
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


def launch_command(job: Job, script: str = "train.py") -> list[str]:
    """The full training run for ``job``'s settings: its overrides without the sweep-only ones."""
    keep = [o for o in job.overrides if not o.lstrip("+~").startswith(_DROP)]
    groups = {o.split("=", 1)[0] for o in keep}
    chosen = [c for c in _choices(job.path) if c.split("=", 1)[0] not in groups]
    return [sys.executable, script, *chosen, *keep]


def summary(sweep_dir: Path, loss_key: str = LOSS_KEY) -> tuple[str, Job | None]:
    """The ranking as text, and the chosen job (None if no job finished)."""
    jobs = ranked(collect(sweep_dir, loss_key))
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
        lines.append("full run: " + shlex.join(["python", *launch_command(best)[1:]]))
    return "\n".join(lines), best


class SweepSummaryCallback(Callback):
    """Hydra callback (``hydra.callbacks``): prints the summary when the multirun ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        text, _ = summary(Path(config.hydra.sweep.dir))
        print("\n" + text, flush=True)


def main(argv: list[str] | None = None) -> int:
    """CLI: print the ranking; ``--launch`` runs the chosen full run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory of the sweep")
    parser.add_argument("--launch", action="store_true", help="start the full run with the chosen learning rate")
    parser.add_argument("--loss-key", default=LOSS_KEY, help=f"metric to rank by (lower is better; {LOSS_KEY})")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    text, best = summary(args.sweep_dir, args.loss_key)
    print(text)
    if args.launch:
        if best is None:
            return 1
        script = str(Path(__file__).resolve().parents[2] / "train.py")
        return subprocess.call(launch_command(best, script))
    return 0 if best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
