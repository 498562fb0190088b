"""One job per GPU for local parallel sweeps: each job locks a free GPU of the pool before CUDA is initialised."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path
from typing import Any

_HELD: list[Any] = []  # open lock files: the lock lasts as long as the job's process


def pool_ids(pool: Any) -> list[int]:
    """``gpu_pool``: an int N (GPUs 0..N-1), a list of ids, or ``auto`` (every GPU ``nvidia-smi -L`` lists)."""
    if pool == "auto":
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        return list(range(sum(line.startswith("GPU ") for line in listing.splitlines())))
    if isinstance(pool, int):
        return list(range(pool))
    return [int(i) for i in pool]


def acquire_gpu(pool: Any, lock_dir: Path, poll_s: float = 5.0) -> int:
    """Block until one GPU of the pool is free, lock it, and make it the only visible device of this process."""
    ids = pool_ids(pool)
    if not ids:
        raise RuntimeError(f"gpu_pool={pool!r} names no GPU")
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for gpu in ids:
            handle = open(lock_dir / f"gpu{gpu}.lock", "w")  # noqa: SIM115  (kept open while the job runs)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _HELD.append(handle)
            os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
            return gpu
        time.sleep(poll_s)


def release_gpus() -> None:
    """Give back the GPUs this process locked (the end of the process does the same)."""
    while _HELD:
        _HELD.pop().close()
