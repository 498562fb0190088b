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
    "sdt": (663_552, 3_538_944),
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


@pytest.mark.parametrize(("size", "channels", "expected"), [("130m", 15, 455_328), ("1.4b", 41, 2_430_144)])
def test_sdlora_count_follows_its_selection_rule(size, channels, expected):
    """SSP's sd_lora: E - round(0.99 E) channels x 4 states of A_log + all 2N rows of W_B/W_C at those channels +
    LoRA r 8 on out_proj (d x E), per layer."""
    conf = OmegaConf.load(REPO / "conf" / "model" / f"mamba-{size}.yaml")
    model = model_from_config(conf, device="meta")
    E, N, d, layers = model.config.d_inner, model.config.d_state, model.config.d_model, model.config.n_layer
    assert channels == E - round(0.99 * E)
    apply_method("sdlora", model, OmegaConf.load(REPO / "conf" / "method" / "sdlora.yaml"))
    per_layer = channels * 4 + 2 * N * channels + 8 * (E + d)
    assert count_parameters(model)[0] == layers * per_layer == expected


def test_sdt_count_is_half_the_channels_without_lora():
    """The State-offset paper's SDT: c = E/2 channels, 4 states of A_log + 2N rows of W_B/W_C each; nothing else."""
    model = model_from_config(OmegaConf.load(REPO / "conf" / "model" / "mamba-130m.yaml"), device="meta")
    names = apply_method("sdt", model, OmegaConf.load(REPO / "conf" / "method" / "sdt.yaml"))
    assert not [n for n in names if "lora" in n]
    per_mixer = {n.split(".mixer.", 1)[1] for n in names}
    assert per_mixer == {"parametrizations.A_log.0.values", "x_proj.parametrizations.weight.0.values"}
    assert count_parameters(model)[0] == 24 * (768 * 4 + 2 * 16 * 768)


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


@pytest.mark.parametrize(("size", "expected"), [("130m", 2_359_296), ("1.3b", 12_582_912)])
def test_mamba2_additional_scan_takes_32_extra_states_by_default(size, expected):
    """conf/method/additional_scan.yaml leaves n to the architecture: 32 extra states per group on Mamba-2, whose B
    and C rows W_B, W_C (G n, E) are read from the conv output; no A of their own (they decay with the head's A)."""
    conf = OmegaConf.load(REPO / "conf" / "model" / f"mamba2-{size}.yaml")
    model = model_from_config(conf, device="meta")
    base = count_parameters(model)[1]
    names = apply_method("additional_scan", model, OmegaConf.load(REPO / "conf" / "method" / "additional_scan.yaml"))
    c = model.config
    assert {n.rsplit(".", 1)[-1] for n in names} == {"W_B", "W_C"}
    assert count_parameters(model) == (expected, base + expected)
    assert expected == c.n_layer * 2 * c.ngroups * 32 * c.expand * c.d_model
