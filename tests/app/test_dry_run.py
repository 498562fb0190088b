"""dry_run=true prints the parameter summary and writes nothing: no run folder, no Hydra files, no temporary left."""

from __future__ import annotations

import subprocess

from tests.app.conftest import PYTHON, REPO, subprocess_env


def test_dry_run_leaves_no_folder_behind(tmp_path):
    work, scratch = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    scratch.mkdir()
    env = {**subprocess_env(), "TMPDIR": str(scratch)}
    for args in (["model=mamba-1.4b", "method=lora"], ["-m", "model=mamba-130m", "method=lora,bitfit"]):
        result = subprocess.run(
            [PYTHON, str(REPO / "train.py"), *args, "dry_run=true"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "trainable params:" in result.stdout
        assert list(work.iterdir()) == []  # no outputs/ nor multirun/
        # Hydra's job folder was a temporary one, removed at exit (torch keeps its own cache folder there)
        assert [p.name for p in scratch.iterdir() if p.name.startswith("stateft")] == []
