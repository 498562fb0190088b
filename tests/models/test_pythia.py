"""Pythia (GPT-NeoX) as a backbone: configs, loading, decoding (batched = alone = textbook), training on CPU."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from omegaconf import OmegaConf

from stateft.errors import UserError
from stateft.generation import generate, generate_batch
from stateft.models import count_parameters, model_from_config
from stateft.models.pythia_loading import load_pretrained
from tests.conftest import REPO
from tests.models.tiny_pythia import PEFT, TINY_PYTHIA, tiny_pythia

# total parameters of the EleutherAI checkpoints (their model cards), from conf/model's numbers alone
PUBLISHED = {"70m": 70_426_624, "160m": 162_322_944, "410m": 405_334_016, "1.4b": 1_414_647_808}
PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [3, 4, 5, 6, 7, 8, 9, 12], [40]]


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_model_configs_build_the_published_architectures_on_meta(size):
    node = OmegaConf.load(REPO / f"conf/model/pythia-{size}.yaml")
    model = model_from_config(node, device="meta")
    assert count_parameters(model) == (PUBLISHED[size], PUBLISHED[size])
    assert model.hf_model.config.vocab_size == model.config.padded_vocab_size == 50304
    assert model.config.vocab_size == 50277  # Mamba's tokenizer, Mamba's data


@pytest.mark.parametrize("method", PEFT)
def test_peft_forward_is_the_models_forward(method):
    """hidden_states goes through peft's own forward: the same logits for the real tokens (virtual ones dropped)."""
    model = tiny_pythia(method)
    ids = torch.tensor([PROMPTS[0]])
    with torch.no_grad():
        ours = model(ids)
        peft = model.net(input_ids=ids).logits
    torch.testing.assert_close(ours, peft[:, -ids.shape[1] :])
    assert not torch.allclose(ours, tiny_pythia(None)(ids))  # the adapter matters


def _textbook(model, prompt, max_new, num_beams, eos_id, vocab):
    """Beam search as stateft's Mamba decoder defines it, re-running the full sequences each step (no cache)."""
    beams, finished = [(0.0, [])], []
    for _ in range(max_new):
        with torch.no_grad():
            logits = model(torch.tensor([prompt + b for _, b in beams]))[:, -1, :vocab]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        candidates = []
        for (score, tokens), row in zip(beams, logprobs):
            top = row.topk(2 * num_beams)
            candidates += [(score + v, tokens + [t]) for v, t in zip(top.values.tolist(), top.indices.tolist())]
        candidates.sort(key=lambda c: -c[0])
        beams = []
        for rank, (score, tokens) in enumerate(candidates):
            if tokens[-1] == eos_id:
                if rank < num_beams:  # an EOS ranked below the beam width does not finish
                    finished.append((score / len(tokens), tokens[:-1]))
            else:
                beams.append((score, tokens))
            if len(beams) == num_beams:
                break
        worst = sorted(f[0] for f in finished)[-num_beams] if len(finished) >= num_beams else None
        if worst is not None and beams[0][0] / len(beams[0][1]) <= worst:
            return max(finished)[1]
    finished += [(s / len(t), t) for s, t in beams]
    return max(finished)[1]


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("method", [None, *PEFT])
def test_batched_generation_equals_each_prompt_alone_and_the_textbook(method, num_beams):
    """Left-padded batch (transformers' generate, KV cache) = each prompt alone = the textbook search over the full
    forward; the head's padding rows (60..63) are never chosen."""
    model = tiny_pythia(method)
    eos = 7  # a token the random model emits now and then: finished and running beams mix
    batched = generate_batch(model, PROMPTS, max_new_tokens=6, num_beams=num_beams, eos_id=eos)
    alone = [generate(model, p, max_new_tokens=6, num_beams=num_beams, eos_id=eos) for p in PROMPTS]
    assert batched == alone
    assert batched == [_textbook(model, p, 6, num_beams, eos, TINY_PYTHIA.vocab_size) for p in PROMPTS]
    assert all(0 <= t < TINY_PYTHIA.vocab_size for out in batched for t in out)
    assert any(batched)


def test_pretrained_folder_loads_and_must_match_its_config(tmp_path):
    """A local checkpoint in transformers' layout (safetensors): the same logits; other sizes are one clear error."""
    model = tiny_pythia()
    model.hf_model.save_pretrained(tmp_path / "ckpt")
    loaded = load_pretrained(str(tmp_path / "ckpt"), expected=TINY_PYTHIA).eval()
    ids = torch.tensor([PROMPTS[2]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids))
    assert loaded.name_or_path == str(tmp_path / "ckpt")
    with pytest.raises(UserError, match="n_layer=2 \\(config says 3\\)"):
        load_pretrained(str(tmp_path / "ckpt"), expected=replace(TINY_PYTHIA, n_layer=3))
    with pytest.raises(UserError, match="could not load"):
        load_pretrained(str(tmp_path / "missing"), expected=TINY_PYTHIA)


@pytest.mark.parametrize("method", PEFT)
def test_training_on_the_demo_rows_lowers_the_loss(method, tmp_path, monkeypatch):
    """pythia-tiny + a peft method through the app's LightningModule on GLUE RTE's fixture rows (CPU, 3 epochs)."""
    import lightning as L
    from hydra.utils import instantiate

    from stateft.app.checks import compose_checked
    from stateft.lit_module import FineTuneModule
    from stateft.methods import apply_method
    from stateft.tokenizer import load_tokenizer

    monkeypatch.setenv("STATEFT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = compose_checked("train", ["model=pythia-tiny", f"method={method}", "dataset=demo", "logger=none"])
    L.seed_everything(0)
    model = model_from_config(cfg.model)
    trainable = apply_method(method, model, cfg.method)
    datamodule = instantiate(cfg.dataset)
    lr = {"lora": 0.02, "prefix": 0.5, "prompt": 0.05}[method]
    optim = {"lr": lr, "weight_decay": 0.0, "schedule": "constant"}
    module = FineTuneModule(model, trainable, optim, datamodule.task, load_tokenizer(cfg.model.tokenizer))
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    losses = module.epoch_losses
    assert len(losses) == 3
    assert losses[-1] < losses[0] - 1.0, losses
    predictions = module.predict([[5, 6, 7], [8, 9]])  # GLUE: one decoding step at each prompt's end
    assert len(predictions) == 2
    assert all(isinstance(p, str) for p in predictions)
