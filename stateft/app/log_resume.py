"""Logger files across a resume: appended, never deleted, and without the rows a resumed run logs again.

- CSV: Lightning's writer deletes an existing ``metrics.csv`` and rewrites it in place when a column appears.
  ``KeptRowsWriter`` instead starts a resumed run's file from the rows its checkpoint counted (the rows logged
  after the checkpoint are logged again by the resumed run) and rewrites through a temporary file and a rename.
- TensorBoard: the killed run's event files stay (copied when the resumed run writes elsewhere); the new writer
  starts with ``purge_step`` = the checkpoint's step, so TensorBoard hides the older events from that step on.
- W&B: the resumed run continues the same run id (``resume="allow"``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from stateft.app.files import copy_atomic, remove_leftovers
from stateft.atomic import replacing


def csv_row_count(path: Path) -> int:
    """Data rows of a CSV file (0 if missing)."""
    if not path.is_file():
        return 0
    with open(path, newline="") as handle:
        return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


def read_kept_rows(path: Path, rows: int | None, global_step: int) -> tuple[list[str], list[dict[str, str]]]:
    """Header and the first ``rows`` data rows of ``path`` (when the checkpoint predates row counts: the rows of
    the steps before ``global_step``). A partly written last line is never among them."""
    if not path.is_file():
        return [], []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        kept = []
        for row in reader:
            if rows is not None and len(kept) >= rows:
                break
            if rows is None and not _before(row.get("step"), global_step):
                break
            kept.append(row)
    return header, kept


def _before(step: str | None, global_step: int) -> bool:
    try:
        return int(float(step or "")) < global_step
    except ValueError:
        return False


def _writer_class() -> type:
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class KeptRowsWriter(ExperimentWriter):
        """Lightning's CSV writer that starts from ``kept`` rows (a resumed run) instead of deleting the file, and
        rewrites the file atomically when a new column appears."""

        def __init__(self, log_dir: str, kept: tuple[list[str], list[dict[str, str]]] | None) -> None:
            self._kept = kept
            super().__init__(log_dir)
            if kept is not None:
                header, rows = kept
                self._write_all(header, rows)
                self.metrics_keys = list(header)

        def _check_log_dir_exists(self) -> None:
            if self._kept is None:  # a new run: Lightning's behaviour (an old metrics.csv is replaced)
                super()._check_log_dir_exists()

        def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
            with open(self.metrics_file_path, newline="") as handle:
                rows = list(csv.DictReader(handle))
            self._write_all(fieldnames, rows)

        def _write_all(self, header: list[str], rows: list[dict[str, str]]) -> None:
            if not header:  # nothing kept: the first save writes a new file with its header
                Path(self.metrics_file_path).unlink(missing_ok=True)
                return
            with replacing(Path(self.metrics_file_path)) as tmp, open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=header)
                writer.writeheader()
                writer.writerows(rows)

    return KeptRowsWriter


def prepare_csv(logger: Any, resume: Any, out: Path) -> None:
    """Give a CSVLogger the writer above: for a resumed run, seeded with the rows its checkpoint counted (from the
    interrupted run's file, which stays as it is when the resumed run writes to another directory)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # Lightning writes the CSV on rank 0 only
        return
    log_dir = Path(logger.log_dir)
    kept = None
    if resume is not None:
        remove_leftovers(log_dir)
        relative = os.path.relpath(log_dir / "metrics.csv", out)
        source = (resume.run_dir or out) / relative
        remove_leftovers(source.parent)
        kept = read_kept_rows(source, resume.record.get("csv_rows", {}).get(relative), resume.global_step)
    log_dir.mkdir(parents=True, exist_ok=True)
    logger._experiment = _writer_class()(str(log_dir), kept)  # CSVLogger.experiment returns this one from now on


def tensorboard_kwargs(node: Any, resume: Any, out: Path) -> dict[str, Any]:
    """For a resumed run's TensorBoardLogger: copy the interrupted run's event files into its log directory and
    start the writer with ``purge_step`` (events of the steps the resumed run logs again are hidden)."""
    if resume is None:
        return {}
    from hydra.utils import get_class
    from lightning.pytorch.loggers import TensorBoardLogger

    if not issubclass(get_class(node._target_), TensorBoardLogger):
        return {}
    if resume.run_dir is not None and resume.run_dir.resolve() != out.resolve():
        target = Path(str(node.save_dir)) / str(node.name) / str(node.get("version") or "")
        source = resume.run_dir / os.path.relpath(target, out)
        for events in sorted(source.glob("events.out.tfevents.*")) if source.is_dir() else []:
            copy_atomic(events, target / events.name)
    return {"purge_step": resume.global_step}


def wandb_kwargs(resume: Any) -> dict[str, Any]:
    """For a resumed run's WandbLogger: the interrupted run's id."""
    run_id = resume.record.get("wandb_id") if resume is not None else None
    return {"id": run_id, "resume": "allow"} if run_id else {}
