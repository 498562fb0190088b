"""Every dataset config composes, instantiates and builds on its fixture data through Hydra."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from hydra import compose, initialize_config_dir

from tests.data.conftest import REPO

CONF = REPO / "conf"
# the text datasets (images: tests/vision; the deep-S4 tasks, which have a `kind`: tests/s4)
NAMES = sorted(
    p.stem
    for p in (CONF / "dataset").glob("*.yaml")
    if p.stem not in ("glue_base", "vtab_base") and not p.stem.startswith("vtab_") and "\nkind:" not in p.read_text()
)
KEYS = {"_target_", "name", "metric", "path", "batch_size", "eval_batch_size", "max_length", "protocol",
        "subset_size", "seed", "cache_dir", "num_workers", "tokenizer", "num_beams", "max_new_tokens",
        "max_eval_examples", "prefix_tokenization"}  # fmt: skip


def compose_dataset(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(overrides=[f"+dataset={name}", *overrides]).dataset


@pytest.mark.parametrize("name", NAMES)
def test_dataset_config_builds_on_fixture_data(name, tmp_path):
    fixture = "glue_rte" if name == "demo" else name
    overrides = [f"dataset.cache_dir={tmp_path}"] + (
        [] if name == "demo" else [f"dataset.path=tests/fixtures/{fixture}"]
    )
    cfg = compose_dataset(name, overrides)
    assert set(cfg) >= KEYS
    assert cfg.name == (fixture if name != "demo" else "glue_rte")
    assert cfg.protocol == "clean"
    assert cfg.seed == 123
    assert cfg.max_length == 1536
    dm = hydra.utils.instantiate(cfg)
    dm.prepare_data()
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["input_ids"].shape[0] == cfg.batch_size
    assert dm.task.metric == cfg.metric
    examples = [it["example"] for it in dm.split_items("validation")]
    assert cfg.metric in dm.task.score([""] * len(examples), examples)
    if dm.task.generative:
        assert (dm.task.num_beams, dm.task.max_new_tokens) == (5, 1024)


def test_glue_task_files_are_small_and_share_the_base():
    for path in (CONF / "dataset").glob("glue_*.yaml"):
        if path.stem != "glue_base":
            text = path.read_text()
            assert text.startswith("defaults: [glue_base, _self_]")
            assert len(text.splitlines()) <= 5
    assert Path(CONF / "dataset" / "spider.yaml").read_text().count("db_dir:") == 1
