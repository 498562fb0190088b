"""The one pairing check of a model kind with its data kind (images, deep S4): each mismatch is refused with its own
line, naming the nodes; matching kinds and a config without a model or dataset pass."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from stateft.app.pairing import check_pairing
from stateft.errors import UserError
from stateft.s4.runner import check_config
from stateft.vision.app import check_pairing as check_vision_pairing


def _check(model_arch: str, data_kind: str | None) -> None:
    cfg = OmegaConf.create({"model": {"name": "m1", "arch": model_arch}, "dataset": {"name": "d1", "kind": data_kind}})
    check_pairing(
        cfg,
        lambda model: model.arch == "special",
        lambda dataset: dataset.kind == "special",
        "model {model} needs special data, not {dataset}",
        "dataset {dataset} needs a special model, not {model}",
    )


def test_each_mismatch_has_its_line_and_matches_pass():
    _check("special", "special")
    _check("plain", None)
    with pytest.raises(UserError, match="^model m1 needs special data, not d1$"):
        _check("special", None)
    with pytest.raises(UserError, match="^dataset d1 needs a special model, not m1$"):
        _check("plain", "special")


@pytest.mark.parametrize(
    ("model", "dataset", "message"),
    [
        ({"name": "vim-test", "arch": "vim"}, {"name": "glue_rte"}, "classifies images but dataset glue_rte is text"),
        ({"name": "s4-synthetic", "arch": "s4d"}, {"name": "glue_rte"}, "model s4-synthetic is a deep S4"),
        ({"name": "mamba-tiny", "arch": "mamba1"}, {"name": "s4_synthetic", "kind": "s4_synthetic"}, "deep-S4 task"),
    ],
)
def test_the_image_and_s4_checks_refuse_their_mismatches(model, dataset, message):
    def start_up(cfg):  # in the order of stateft.app.checks
        check_vision_pairing(cfg)
        check_config(cfg)

    with pytest.raises(UserError, match=message):
        start_up(OmegaConf.create({"model": model, "dataset": dataset}))
    start_up(OmegaConf.create({"model": model}))  # no dataset node: nothing to pair
    start_up(OmegaConf.create({"dataset": dataset}))
