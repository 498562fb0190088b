"""A dry run writes nothing: Hydra's job folder (``.hydra/``, ``train.log``) goes to a temporary folder that is
removed when the program exits, so ``dry_run=true`` leaves no empty run folder under ``outputs/``."""

from __future__ import annotations

import atexit
import shutil
import tempfile

from stateft.app.commands import hydra_arg


def scratch_overrides() -> list[str]:
    """Hydra overrides that put the run (or sweep) folder in a fresh temporary folder, removed at exit."""
    folder = tempfile.mkdtemp(prefix="stateft-dry-run-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return [hydra_arg("hydra.run.dir", folder), hydra_arg("hydra.sweep.dir", folder)]
