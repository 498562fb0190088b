"""Dry-run parameter counts (meta device, no download) against the papers' counts (tables in docs/reproducing.md)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from stateft.methods import apply_method
from stateft.models.lm import count_parameters
from stateft.models.loading import model_from_config
from tests.conftest import REPO

BASE = {"130m": 129_135_360, "1.4b": 1_372_178_432}
TABLE = {  # methods.md, "trainable per model for 130m / 1.4b"
    "state_offset_h": (589_824, 3_145_728),
    "state_offset_y": (36_864, 196_608),
    "init_state": (589_824, 3_145_728),
    "lora": (1_204_224, 6_402_048),
    "bitfit": (73_728, 393_216),
    "additional_scan": (884_736, 4_718_592),
    "prefix": (221_184, None),
    "full_s6": (5_566_464, None),
    "full": (BASE["130m"], BASE["1.4b"]),
}


CASES = [(n, s, c) for n, counts in sorted(TABLE.items()) for s, c in zip(BASE, counts) if c is not None]


@pytest.mark.parametrize(("name", "size", "expected"), CASES)
def test_counts_match_the_papers_table(name, size, expected):
    model = model_from_config(OmegaConf.load(REPO / "conf" / "model" / f"mamba-{size}.yaml"), device="meta")
    assert count_parameters(model) == (BASE[size], BASE[size])
    apply_method(name, model, OmegaConf.load(REPO / "conf" / "method" / f"{name}.yaml"))
    trainable, total = count_parameters(model)
    assert trainable == expected
    adds = name not in {"bitfit", "full", "full_s6"}
    assert total == BASE[size] + (trainable if adds else 0)


def test_sdt_count_follows_its_selection_rule():
    """130m, rho_s 0.75: 15 channels x 4 states of A_log + 2N x 15 of W_B/W_C + LoRA r 8 on out_proj, per layer."""
    model = model_from_config(OmegaConf.load(REPO / "conf" / "model" / "mamba-130m.yaml"), device="meta")
    apply_method("sdt", model, OmegaConf.load(REPO / "conf" / "method" / "sdt.yaml"))
    per_layer = 15 * 4 + 2 * 16 * 15 + 8 * (1536 + 768)
    assert count_parameters(model)[0] == 24 * per_layer == 455_328


@pytest.mark.parametrize(("size", "expected"), [("130m", 2_466_816), ("1.3b", 12_828_672)])
def test_mamba2_lora_takes_the_papers_rank_16_by_default(size, expected):
    """conf/method/lora.yaml leaves r/alpha to the architecture: r 16 on in_proj + out_proj of every Mamba-2 layer
    (the README's Mamba-2 table); an explicit r still wins."""
    conf = OmegaConf.load(REPO / "conf" / "model" / f"mamba2-{size}.yaml")
    model = model_from_config(conf, device="meta")
    apply_method("lora", model, OmegaConf.load(REPO / "conf" / "method" / "lora.yaml"))
    assert count_parameters(model)[0] == expected
    half = model_from_config(conf, device="meta")
    apply_method("lora", half, {"name": "lora", "r": 8})
    assert count_parameters(half)[0] * 2 == expected
