"""Checkpoint loading: round trips, and one clear error line for every kind of bad input."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from stateft.errors import UserError
from stateft.models.loading import KNOWN_MODELS, build_model, load_pretrained, save_pretrained
from tests.conftest import TINY


def test_save_then_load_round_trip(tmp_path):
    model = build_model(TINY, seed=3).eval()
    save_pretrained(model, tmp_path / "ckpt")
    loaded = load_pretrained(str(tmp_path / "ckpt")).eval()
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))
    assert loaded.lm_head.weight is loaded.backbone.embedding.weight  # tied after loading


def test_bf16_keeps_A_log_and_D_in_fp32(tmp_path):
    save_pretrained(build_model(TINY), tmp_path / "ckpt")
    model = load_pretrained(str(tmp_path / "ckpt"), dtype=torch.bfloat16)
    mixer = next(model.mixers())
    assert mixer.A_log.dtype == torch.float32
    assert mixer.D.dtype == torch.float32
    assert mixer.A_log._no_weight_decay
    assert mixer.D._no_weight_decay
    assert mixer.in_proj.weight.dtype == torch.bfloat16


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(UserError, match="known models: mamba-130m") as err:
        load_pretrained("mamba-13m")
    assert "\n" not in str(err.value)


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_pretrained(str(tmp_path / "nope"))


def test_folder_without_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 16, "n_layer": 2, "vocab_size": 64}))
    with pytest.raises(UserError, match="holds no checkpoint"):
        load_pretrained(str(tmp_path))
    with pytest.raises(UserError, match="no config.json"):
        load_pretrained(str(tmp_path.parent))


def test_shapes_that_do_not_match_the_config(tmp_path):
    save_pretrained(build_model(TINY), tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["ssm_cfg"]["d_state"] = 8  # config now disagrees with the stored A_log, x_proj
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="does not fit its config.json"):
        load_pretrained(str(tmp_path))


def test_corrupt_weights(tmp_path):
    save_pretrained(build_model(TINY), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_pretrained(str(tmp_path))


def test_missing_tensor(tmp_path):
    model = build_model(TINY)
    save_pretrained(model, tmp_path)
    state = {k: v for k, v in model.state_dict().items() if "norm_f" not in k and k != "lm_head.weight"}
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError, match="missing"):
        load_pretrained(str(tmp_path))


def test_unreachable_hub_says_how_to_pass_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="model.name_or_path=/path/to/folder"):
        load_pretrained("mamba-130m")


def test_checkpoint_that_contradicts_the_model_config(tmp_path):
    save_pretrained(build_model(TINY), tmp_path)
    other = TINY.__class__(**{**TINY.to_dict(), "d_model": 32})
    with pytest.raises(UserError, match="d_model=16"):
        load_pretrained(str(tmp_path), expected=other)


def test_known_models_match_the_model_configs():
    from omegaconf import OmegaConf

    from tests.conftest import REPO

    for name, repo_id in KNOWN_MODELS.items():
        cfg = OmegaConf.load(REPO / "conf" / "model" / f"{name}.yaml")
        assert cfg.name == name
        assert cfg.name_or_path == repo_id


def test_mamba2_round_trip_keeps_non_default_settings(tmp_path):
    from tests.conftest import TINY2

    config = TINY2.__class__(**{**TINY2.to_dict(), "dt_limit": (0.001, 0.5), "norm_before_gate": True})
    model = build_model(config, seed=2).eval()
    save_pretrained(model, tmp_path)
    loaded = load_pretrained(str(tmp_path)).eval()
    assert loaded.config.dt_limit == (0.001, 0.5)
    assert loaded.config.norm_before_gate
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


def test_model_config_backend_reaches_the_mixers():
    """conf/model's ``scan_impl`` and ``recompute`` (Mamba-1's backward recomputation) make the model's backend, which
    every mixer holds; a non-bool recompute is one clear error."""
    from omegaconf import OmegaConf

    from stateft.models.loading import model_from_config
    from tests.conftest import REPO

    conf = OmegaConf.load(REPO / "conf" / "model" / "mamba-tiny.yaml")
    conf.pretrained = False
    conf.scan_impl = "ref"
    model = model_from_config(conf)
    assert (model.backend.impl, model.backend.recompute) == ("ref", True)
    assert all(m.backend is model.backend for m in model.mixers())
    conf.recompute = False
    assert not model_from_config(conf).backend.recompute
    conf.recompute = "yes"
    with pytest.raises(UserError, match="model.recompute"):
        model_from_config(conf)


def _other(value):
    """A value of the same kind that is not ``value`` (a tuple as the list YAML gives)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, tuple):
        return [0.001, 0.5]
    return 3 if value == "auto" else value * 2


@pytest.mark.parametrize("config", ["TINY", "TINY2", "TINY_PYTHIA"])
def test_a_model_node_carries_every_architecture_field(config):
    """Every field of the backbone's config class, set to a value other than its default in a conf/model node
    (YAML gives a tuple as a list), reaches the config: none is dropped (stateft.models.config.config_from_node)."""
    from dataclasses import fields

    from omegaconf import OmegaConf

    from stateft.models.loading import config_from_model_cfg
    from tests import conftest
    from tests.models.tiny_pythia import TINY_PYTHIA

    base = TINY_PYTHIA if config == "TINY_PYTHIA" else getattr(conftest, config)
    changed = {f.name: _other(getattr(base, f.name)) for f in fields(base) if f.name != "arch"}
    node = OmegaConf.create({"name": "x", "pretrained": False, "dtype": "float32", **base.to_dict(), **changed})
    expected = {**base.to_dict(), **{k: tuple(v) if isinstance(v, list) else v for k, v in changed.items()}}
    assert config_from_model_cfg(node).to_dict() == expected


def test_a_model_node_key_that_is_no_setting_is_refused_in_one_line():
    from omegaconf import OmegaConf

    from stateft.models.loading import config_from_model_cfg, model_from_config
    from tests.conftest import REPO

    conf = OmegaConf.load(REPO / "conf" / "model" / "mamba-tiny.yaml")
    conf.n_head = 4  # a Pythia setting: a Mamba has none
    for build in (config_from_model_cfg, model_from_config):
        with pytest.raises(UserError, match=r"^model\.n_head is not a setting of a mamba1 model") as err:
            build(conf)
        assert "\n" not in str(err.value)
