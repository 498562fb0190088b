"""experiment=paper/* resolves each cell to the released run configs (SST cfg/final/exps, SSP mamba-peft/cfg/exps)."""

from __future__ import annotations

import pytest
from hydra import compose

# (family, dataset, model, method) -> (lr, epochs, batch size), each read from the released config of that run
CELLS = [
    # SSP: full and full_s6 run 10 epochs on MNLI and QQP (bitfit and the State-offset methods 3)
    ("glue", "glue_mnli", None, "full", 1e-4, 10, 4),
    ("glue", "glue_qqp", None, "full_s6", 2e-4, 10, 4),
    ("glue", "glue_qqp", None, "bitfit", 2e-3, 3, 4),
    ("glue", "glue_qqp", None, "state_offset_h", 4e-5, 3, 4),
    # SSP bitfit: MRPC and SST-2 at 4e-3, the other GLUE tasks 2e-3, SAMSum 2e-3, Spider 4e-3
    ("glue", "glue_mrpc", None, "bitfit", 4e-3, 10, 4),
    ("glue", "glue_sst2", None, "bitfit", 4e-3, 10, 4),
    ("glue", "glue_rte", None, "bitfit", 2e-3, 10, 4),
    ("samsum", None, None, "bitfit", 2e-3, 10, 4),
    ("spider", None, None, "bitfit", 4e-3, 10, 4),
    # SSP full_s6 (layer_freeze A_log B C D delta conv): DART 1e-3, Spider 4e-4 at 1.4b and 2e-4 at 2.8b
    ("dart", None, None, "full_s6", 1e-3, 10, 4),
    ("spider", None, None, "full_s6", 4e-4, 10, 4),
    ("spider", None, "mamba-2.8b", "full_s6", 2e-4, 10, 4),
    ("spider", None, "mamba-2.8b", "full", 4e-5, 10, 4),
    # SST init_state on mamba-1.4b: batch 2 on SAMSum and Spider
    ("samsum", None, None, "init_state", 2e-4, 10, 2),
    ("spider", None, None, "init_state", 1e-3, 10, 2),
    ("spider", None, None, "state_offset_h", 2e-4, 10, 4),
    ("dart", None, None, "init_state", 2e-3, 10, 4),
    # SSP's SDLoRA (n0.75_d0.99 configs): its own rates, 3 epochs on MNLI
    ("glue", "glue_mrpc", None, "sdlora", 2e-3, 10, 4),
    ("glue", "glue_mnli", None, "sdlora", 1e-3, 3, 4),
    ("samsum", None, None, "sdlora", 4e-4, 10, 4),
    ("spider", None, None, "sdlora", 2e-3, 10, 4),
    # the State-offset paper's SDT (Table 5)
    ("glue", "glue_cola", None, "sdt", 1e-1, 10, 4),
]


@pytest.mark.parametrize(("family", "dataset", "model", "method", "lr", "epochs", "batch_size"), CELLS)
def test_each_cell_takes_its_released_config(hydra_ctx, family, dataset, model, method, lr, epochs, batch_size):
    overrides = [f"experiment=paper/{family}", f"method={method}", "output_dir=/tmp/x"]
    overrides += [f"dataset={dataset}"] * bool(dataset) + [f"model={model}"] * bool(model)
    cfg = compose("train", overrides=overrides)
    assert cfg.optim.lr == pytest.approx(lr)
    assert cfg.trainer.max_epochs == epochs
    assert cfg.dataset.batch_size == batch_size


def test_the_command_line_still_wins_over_a_cell(hydra_ctx):
    overrides = ["experiment=paper/spider", "method=init_state", "output_dir=/tmp/x"]
    cfg = compose("train", overrides=[*overrides, "dataset.batch_size=4", "trainer.max_epochs=3", "method.lr=1e-2"])
    assert (cfg.dataset.batch_size, cfg.trainer.max_epochs, cfg.optim.lr) == (4, 3, 1e-2)


def test_bitfit_has_no_released_dart_run(hydra_ctx):
    cfg = compose("train", overrides=["experiment=paper/dart", "method=bitfit", "output_dir=/tmp/x"])
    assert cfg.method.lr is None  # start-up then asks for method.lr=... (tests/app/test_configs.py)
