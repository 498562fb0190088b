"""Released Vim checkpoints: a tiny one written in the release's key layout (a .pth holding the state dict under
"model" beside DeiT's training arguments, or a .safetensors) loads into the same network; bad files are one line."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import save_file

from stateft.errors import UserError
from stateft.vision.loading import build_vim, from_ours, load_vim, to_ours
from tests.vision.conftest import tiny_config


def _released_state(config, seed=3):
    """A random Vim's tensors under the release's names (A_b_log, conv1d_b, x_proj_b, dt_proj_b, D_b...)."""
    model = build_vim(config, seed=seed, backend="ref")
    torch.nn.init.normal_(model.head.weight)
    state = from_ours({k: v.clone() for k, v in model.state_dict().items()})
    return model, state


def test_release_layout_names():
    _, state = _released_state(tiny_config())
    names = set(state)
    for name in (
        "patch_embed.proj.weight",
        "cls_token",
        "pos_embed",
        "norm_f.weight",
        "head.weight",
        "head.bias",
        "layers.0.norm.weight",
        "layers.0.mixer.in_proj.weight",
        "layers.0.mixer.out_proj.weight",
        "layers.1.mixer.A_log",
        "layers.1.mixer.A_b_log",
        "layers.1.mixer.D",
        "layers.1.mixer.D_b",
        "layers.1.mixer.conv1d_b.bias",
        "layers.1.mixer.x_proj_b.weight",
        "layers.1.mixer.dt_proj_b.bias",
    ):
        assert name in names, name
    assert not any("scan" in n for n in names)
    assert to_ours(state).keys() == build_vim(tiny_config(), device="meta").state_dict().keys()


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_a_checkpoint_in_the_release_layout_loads_into_the_same_network(tmp_path, fmt):
    config = tiny_config()
    source, state = _released_state(config)
    folder = tmp_path / "vim"
    folder.mkdir()
    if fmt == "pth":
        raw = {"model": state, "epoch": 299, "args": argparse.Namespace(model="vim_tiny", lr=5e-4)}
        torch.save(raw, folder / "vim_t_midclstok_76p1acc.pth")
    else:
        save_file(state, str(folder / "vim.safetensors"))
    loaded = load_vim(str(folder), config, backend="ref").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source.eval()(x))
    assert loaded.name_or_path == str(folder)
    assert loaded.layers[1].mixer.backward_scan.A_log.dtype == torch.float32


def test_another_tasks_classes_get_a_fresh_zero_head(tmp_path):
    _, state = _released_state(tiny_config(num_classes=5))
    torch.save({"model": state}, tmp_path / "vim.pth")
    loaded = load_vim(str(tmp_path / "vim.pth"), tiny_config(num_classes=3), backend="ref")
    assert loaded.head.weight.shape == (3, 32)
    assert not loaded.head.weight.any()
    assert not loaded.head.bias.any()
    torch.testing.assert_close(loaded.pos_embed, state["pos_embed"])


def test_bad_checkpoints_are_one_line(tmp_path):
    _, state = _released_state(tiny_config())
    torch.save({"model": state}, tmp_path / "vim.pth")
    with pytest.raises(UserError, match="does not fit the model config: .*shapes"):
        load_vim(str(tmp_path), tiny_config(d_state=8), backend="ref")
    (tmp_path / "other.pth").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="should hold one Vim checkpoint"):
        load_vim(str(tmp_path), tiny_config(), backend="ref")
    with pytest.raises(UserError, match="cannot read .* as a tensor checkpoint"):
        load_vim(str(tmp_path / "other.pth"), tiny_config(), backend="ref")
    with pytest.raises(UserError, match="does not exist"):
        load_vim(str(tmp_path / "missing" / "x"), tiny_config(), backend="ref")


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"model": {"x": torch.zeros(1)}, "payload": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="cannot read"):
        load_vim(str(tmp_path / "evil.pth"), tiny_config(), backend="ref")
