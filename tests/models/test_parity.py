"""Our Mamba-1 against an independent implementation (transformers' MambaForCausalLM) on random weights."""

from __future__ import annotations

import pytest
import torch
from transformers import MambaConfig as HFMambaConfig
from transformers import MambaForCausalLM

from stateft.generation import generate
from stateft.models.loading import load_pretrained
from tests.models.layouts import rel_err, save_mamba_ssm_layout

VOCAB = 104


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    cfg = HFMambaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        state_size=8,
        num_hidden_layers=3,
        expand=2,
        conv_kernel=4,
        time_step_rank=4,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=0,
    )
    model = MambaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial A_log and D so every term of the recurrence matters
        for layer in model.backbone.layers:
            layer.mixer.A_log.add_(0.3 * torch.randn_like(layer.mixer.A_log))
            layer.mixer.D.add_(0.5 * torch.randn_like(layer.mixer.D))
    return model


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    hf_model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mamba_ssm_folder(hf_model, tmp_path_factory):
    """The same weights written in mamba_ssm's layout (config.json with d_model/n_layer, pytorch_model.bin)."""
    cfg = hf_model.config
    raw = {
        "d_model": cfg.hidden_size,
        "n_layer": cfg.num_hidden_layers,
        "vocab_size": VOCAB,
        "ssm_cfg": {"d_state": cfg.state_size, "dt_rank": cfg.time_step_rank},
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 8,
    }
    return save_mamba_ssm_layout(tmp_path_factory.mktemp("mamba_ssm"), hf_model, raw)


@pytest.mark.parametrize("layout", ["transformers", "mamba_ssm"])
def test_logits_and_greedy_match_transformers(layout, hf_model, hf_folder, mamba_ssm_folder):
    model = load_pretrained(str(hf_folder if layout == "transformers" else mamba_ssm_folder)).eval()
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


def test_step_matches_parallel(tiny_model):
    ids = torch.randint(0, 64, (3, 19), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        parallel = tiny_model(ids)
        cache = tiny_model.new_cache()
        stepped = torch.stack([tiny_model.step(ids[:, t], cache) for t in range(ids.shape[1])], dim=1)
    assert rel_err(stepped, parallel) < 1e-5


def test_prefill_then_step_matches_parallel(tiny_model):
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        parallel = tiny_model(ids)
        cache = tiny_model.new_cache()
        first = tiny_model(ids[:, :9], cache)
        rest = torch.stack([tiny_model.step(ids[:, t], cache) for t in range(9, 16)], dim=1)
        chunked = tiny_model(ids[:, 9:], cache=None)
    assert rel_err(torch.cat([first, rest], dim=1), parallel) < 1e-5
    assert rel_err(chunked, parallel[:, 9:]) > 1e-3  # without the cache the second chunk starts from zero state


def test_beam_search_matches_transformers(hf_model, hf_folder):
    model = load_pretrained(str(hf_folder)).eval()
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        ids = torch.randint(1, VOCAB, (1, 9), generator=g)
        with torch.no_grad():  # an EOS that the model actually likes, so hypotheses finish at different lengths
            eos = int(hf_model(ids).logits[0, -1].topk(3).indices[2])
        ref = hf_model.generate(
            ids,
            max_new_tokens=10,
            do_sample=False,
            num_beams=5,
            eos_token_id=eos,
            pad_token_id=eos,
            length_penalty=1.0,
            early_stopping=False,
        )[0, ids.shape[1] :].tolist()
        ref = ref[: ref.index(eos)] if eos in ref else ref
        ours = generate(model, ids[0].tolist(), max_new_tokens=10, num_beams=5, eos_id=eos)
        assert ours == ref
