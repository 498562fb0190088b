"""The VTAB-1k table of a sweep: each task's top-1 test accuracy, the three groups' means and the overall averages.

    python -m stateft.vision.summary multirun/vtab/lora/vim-small/2026-01-01_12-00-00

Every run under the folder (a ``metrics.json`` with the run's ``adapter/run_config.json`` naming its dataset) gives
its task's ``test/accuracy``; a task run twice keeps the run whose ``metrics.json`` was written last. Printed as a
Markdown table in the papers' order (natural, specialized, structured), then the group means and two averages, both
named: the mean of the 19 tasks and the mean of the three group means (VTAB tables report one or the other). A group
with a missing task has no mean (marked incomplete). Also written beside the runs as ``vtab_summary.json``.
The same table prints when a ``-m experiment=mambapeft/vtab`` multirun ends (``VtabSummaryCallback``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from stateft.vision.tasks import GROUPS, VTAB_TASKS

METRIC = "test/accuracy"
_MAX_BYTES = 64 << 20


def _read(path: Path) -> Any:
    from stateft.foreign import read_json

    return read_json(path, "run file", _MAX_BYTES)


def collect(folder: Path) -> dict[str, tuple[float, Path]]:
    """``{task key: (test accuracy, run folder)}`` of the VTAB runs under ``folder``."""
    found: dict[str, tuple[float, Path]] = {}
    for metrics_path in sorted(folder.rglob("metrics.json"), key=lambda p: p.stat().st_mtime):  # the latest wins
        run = metrics_path.parent
        config_path = run / "adapter" / "run_config.json"
        if not config_path.is_file():
            continue
        name = str(((_read(config_path) or {}).get("dataset") or {}).get("name", ""))
        task = name.removeprefix("vtab_")
        value = _read(metrics_path).get(METRIC)
        if name.startswith("vtab_") and task in VTAB_TASKS and isinstance(value, (int, float)):
            found[task] = (float(value), run)
    return found


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def table(results: dict[str, float]) -> dict[str, Any]:
    """Per task, per group (None where a task is missing) and the two averages (None unless all 19 are there)."""
    groups = {}
    for group in GROUPS:
        keys = [k for k, t in VTAB_TASKS.items() if t.group == group]
        groups[group] = _mean([results[k] for k in keys]) if all(k in results for k in keys) else None
    complete = all(k in results for k in VTAB_TASKS)
    return {
        "tasks": {k: results.get(k) for k in VTAB_TASKS},
        "groups": groups,
        "mean_of_tasks": _mean([results[k] for k in VTAB_TASKS]) if complete else None,
        "mean_of_groups": _mean(list(groups.values())) if complete else None,
    }


def render(summary: dict[str, Any]) -> str:
    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    lines = ["| task | group | top-1 (%) |", "|---|---|---|"]
    for key, value in summary["tasks"].items():
        lines.append(f"| {key} | {VTAB_TASKS[key].group} | {cell(value)} |")
    lines.append("")
    missing = [k for k, v in summary["tasks"].items() if v is None]
    for group, value in summary["groups"].items():
        lines.append(f"{group}: {cell(value)}" + (" (incomplete)" if value is None else ""))
    lines.append(f"mean of the 19 tasks: {cell(summary['mean_of_tasks'])}")
    lines.append(f"mean of the 3 group means: {cell(summary['mean_of_groups'])}")
    if missing:
        lines.append(f"missing: {', '.join(missing)}")
    return "\n".join(lines)


def summarize(folder: Path) -> str:
    """Collect, tabulate, write ``vtab_summary.json`` into ``folder``; returns the printed table."""
    found = collect(folder)
    summary = table({k: v for k, (v, _) in found.items()})
    summary["runs"] = {k: str(run) for k, (_, run) in found.items()}
    from stateft.app.files import write_json_atomic

    write_json_atomic(folder / "vtab_summary.json", summary)
    return render(summary)


class VtabSummaryCallback(Callback):
    """Hydra callback (``hydra.callbacks``): prints the table when the multirun ends."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        print("\n" + summarize(Path(config.hydra.sweep.dir)), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a multirun folder of VTAB runs (or any folder holding them)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a directory", file=sys.stderr)
        return 2
    print(summarize(args.folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
