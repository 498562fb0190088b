"""Our Mamba-2 against an independent implementation (transformers' Mamba2ForCausalLM) on random weights."""

from __future__ import annotations

import importlib.util
import inspect

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM
from transformers.models.mamba2 import modeling_mamba2

from stateft.generation import generate
from stateft.models.loading import load_pretrained
from tests.models.layouts import rel_err, save_mamba_ssm_layout

VOCAB = 104


@pytest.fixture(scope="module", params=[1, 2], ids=["groups1", "groups2"])
def hf_model(request):
    torch.manual_seed(request.param)
    # chunk_size 8 so that both implementations run several chunks, on lengths that are not multiples of it
    cfg = Mamba2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        num_heads=8,
        head_dim=16,
        state_size=16,
        n_groups=request.param,
        num_hidden_layers=3,
        expand=2,
        conv_kernel=4,
        chunk_size=8,
        tie_word_embeddings=True,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=0,
    )
    model = Mamba2ForCausalLM(cfg).eval()
    with torch.no_grad():  # move every per-head parameter off its init so each term of the model matters
        for layer in model.backbone.layers:
            mixer = layer.mixer
            for p in (mixer.A_log, mixer.D, mixer.dt_bias, mixer.norm.weight):
                p.add_(0.4 * torch.randn_like(p))
            mixer.conv1d.bias.normal_(0.0, 0.2)  # transformers initialises it to zero
    return model


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mamba_ssm_folder(hf_model, tmp_path_factory):
    """The same weights in mamba_ssm's layout: config.json with d_model/n_layer/ssm_cfg, pytorch_model.bin."""
    cfg = hf_model.config
    ssm_cfg = {
        "layer": "Mamba2",
        "d_state": cfg.state_size,
        "headdim": cfg.head_dim,
        "ngroups": cfg.n_groups,
        "chunk_size": cfg.chunk_size,
    }
    raw = {
        "d_model": cfg.hidden_size,
        "d_intermediate": 0,
        "n_layer": cfg.num_hidden_layers,
        "vocab_size": VOCAB,
        "ssm_cfg": ssm_cfg,
        "attn_layer_idx": [],
        "attn_cfg": {},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 16,
        "tie_embeddings": True,
    }
    # the embedding padded to a multiple of 16 rows (104 -> 112), as mamba_ssm stores it
    return save_mamba_ssm_layout(tmp_path_factory.mktemp("mamba_ssm"), hf_model, raw, vocab_rows=112, drop_head=True)


def test_transformers_runs_its_torch_path():
    """No mamba_ssm / causal_conv1d / hub kernels here: transformers' reference PyTorch Mamba-2 is the peer."""
    for package in ("mamba_ssm", "causal_conv1d", "kernels"):
        assert importlib.util.find_spec(package) is None, f"{package} installed: transformers would use its kernels"
    for fn in (modeling_mamba2.mamba2_chunk_scan, modeling_mamba2.mamba2_selective_state_update):
        assert inspect.getclosurevars(fn).nonlocals["is_new_implementation"] is False


@pytest.mark.parametrize("layout", ["transformers", "mamba_ssm"])
def test_logits_and_greedy_match_transformers(layout, hf_model, hf_folder, mamba_ssm_folder):
    model = load_pretrained(str(hf_folder if layout == "transformers" else mamba_ssm_folder)).eval()
    assert model.config.arch == "mamba2"
    assert model.config.ngroups == hf_model.config.n_groups
    ids = torch.randint(1, VOCAB, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf_model(ids).logits
        ours = model(ids)[..., :VOCAB]
    assert rel_err(ours, ref) < 1e-4
    ref_tokens = hf_model.generate(
        ids[:1], max_new_tokens=12, do_sample=False, num_beams=1, eos_token_id=None, pad_token_id=0
    )[0, ids.shape[1] :]
    our_tokens = generate(model, ids[0].tolist(), max_new_tokens=12, num_beams=1, eos_id=None)
    assert our_tokens == ref_tokens.tolist()
