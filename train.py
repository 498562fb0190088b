"""Fine-tune a Mamba model with one PEFT method.

    python train.py method=state_offset_h dataset=spider model=mamba-1.4b
    python train.py -m sweep=lr_grid method=lora dataset=glue_rte      (learning-rate search)
    python train.py model=mamba-1.4b method=lora dry_run=true          (parameter summary, no download)

The config is composed and checked before torch and Lightning are imported, so --help and config errors are fast.
"""

import sys

import hydra
from omegaconf import DictConfig

from stateft.app.checks import preflight
from stateft.app.entry import run_main


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from stateft.app.runner import run_job
    from stateft.app.training import train

    return run_job(cfg, train)


if __name__ == "__main__":
    cfg = preflight("train", sys.argv[1:])
    if cfg is not None and cfg.get("dry_run"):
        from stateft.app.scratch import scratch_overrides

        sys.argv += scratch_overrides()  # a dry run leaves no run folder behind
    run_main(main)
