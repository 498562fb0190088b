"""Evaluate a saved adapter, or score an existing predictions file.

python eval.py adapter=outputs/glue_rte/state_offset_h/mamba-130m/<time>/adapter
python eval.py adapter=PATH split=validation
python eval.py predictions=outputs/.../predictions_test.jsonl
"""

import sys

import hydra
from omegaconf import DictConfig

from stateft.app.checks import preflight
from stateft.app.entry import run_main


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    from stateft.app.evaluation import evaluate
    from stateft.app.runner import run_job

    return run_job(cfg, evaluate)


if __name__ == "__main__":
    preflight("eval", sys.argv[1:])
    run_main(main)
