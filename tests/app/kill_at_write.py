"""``python tests/app/kill_at_write.py TARGET N WHEN <train.py overrides>``: train.py that SIGKILLs itself at the
N-th write of TARGET, as a crash or a pre-empted job would end it (tests only).

TARGET is the name of a file or directory a run writes through a rename (``last.ckpt``, ``adapter``,
``predictions_validation.jsonl``, ``predictions_test.jsonl``, ``metrics.json``, ``metrics.csv``): WHEN ``before``
kills with the new content in its temporary file and the rename not done (for ``adapter`` after an existing adapter
was set aside: between save_adapter's two renames), ``after`` right after the rename. TARGET ``csv-save`` is the
CSV logger appending its rows: ``before`` kills before the append, ``after`` after it with half a row appended.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

from lightning.fabric.loggers.csv_logs import _ExperimentWriter

TARGET, N, WHEN = sys.argv[1], int(sys.argv[2]), sys.argv[3]
_count = 0


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _nth() -> bool:
    global _count
    _count += 1
    return _count == N


_replace = os.replace


def _replace_or_die(src, dst, *args, **kwargs):
    hit = Path(dst).name == TARGET and _nth()
    if hit and WHEN == "before":
        _die()
    _replace(src, dst, *args, **kwargs)
    if hit:
        _die()


_save = _ExperimentWriter.save


def _save_or_die(self) -> None:
    hit = bool(self.metrics) and _nth()
    if hit and WHEN == "before":
        _die()
    _save(self)
    if hit:
        with open(self.metrics_file_path, "a") as handle:
            handle.write("0,0.1,")  # a torn row: the kill came in the middle of the append
        _die()


if TARGET == "csv-save":
    _ExperimentWriter.save = _save_or_die
else:
    os.replace = _replace_or_die
train_py = Path(__file__).resolve().parents[2] / "train.py"
sys.argv = [str(train_py), *sys.argv[4:]]
runpy.run_path(str(train_py), run_name="__main__")
