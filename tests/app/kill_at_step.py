"""``python tests/app/kill_at_step.py STEP <train.py overrides>``: train.py that SIGKILLs itself right after the
checkpoint of optimizer step STEP is written, as a crash or a pre-empted job would end it (tests only)."""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

from stateft.app import callbacks

STEP = int(sys.argv[1])
_save = callbacks.LastCheckpoint.on_train_batch_end


def _save_then_die(self, trainer, *args):
    _save(self, trainer, *args)
    if trainer.global_step == STEP:
        os.kill(os.getpid(), signal.SIGKILL)


callbacks.LastCheckpoint.on_train_batch_end = _save_then_die
train_py = Path(__file__).resolve().parents[2] / "train.py"
sys.argv = [str(train_py), *sys.argv[2:]]
runpy.run_path(str(train_py), run_name="__main__")
