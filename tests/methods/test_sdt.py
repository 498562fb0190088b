"""sdt (the State-offset paper's SDT) and sdlora (SSP's SDLoRA): warm-up, selection rule, sparse deltas, stored
selection, refusal on Mamba-2. Tiny random models on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from stateft.adapters import load_adapter, read_adapter_config, save_adapter
from stateft.errors import UserError
from stateft.methods import apply_method
from stateft.methods import selective_dims as sd
from stateft.methods.configs import validate_method_cfg
from stateft.models.loading import build_model
from tests.conftest import TINY, TINY2

E, N, LAYERS = TINY.d_inner, TINY.d_state, TINY.n_layer  # 32, 4, 2
SMALL = {"num_warmup_it": 2, "freeze_channels": 0.75, "freeze_states": 0.5}  # 8 of 32 channels, 2 of 4 states


def batches(n: int = 3, b: int = 2, length: int = 10) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 64, (b, length), generator=g)
        labels = ids.clone()
        labels[:, : length // 2] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


class StepLog:
    """Records every optimizer step taken while active: its learning rate and the parameter shapes it updates."""

    def __enter__(self) -> StepLog:
        self.lrs: list[float] = []
        self.shapes: list[list[tuple[int, ...]]] = []

        def hook(optimizer, args, kwargs):
            self.lrs.append(optimizer.param_groups[0]["lr"])
            self.shapes.append([tuple(p.shape) for g in optimizer.param_groups for p in g["params"]])

        self.handle = register_optimizer_step_pre_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def cfg(name: str, **extra) -> dict:
    return {"name": name, "lr": 1e-2, **SMALL, **extra}


@pytest.mark.parametrize(("total", "freeze", "expected"), [(1536, 0.99, 15), (4096, 0.99, 41), (1536, 0.5, 768)])
def test_kept_channels_follow_the_sdt_codes_rounding(total, freeze, expected):
    assert sd.kept(total, freeze) == expected == total - int(np.round(freeze * total))
    assert [sd.kept(16, f) for f in (0.75, 0.9, 0.95)] == [4, 2, 1]


def test_selection_takes_top_channels_by_summed_squares_then_top_states():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(E, N, generator=g)
    channels, states = sd.select_dimensions(delta, 5, 2)
    sq = delta.numpy() ** 2
    expected_channels = sorted(np.argsort(-sq.sum(1))[:5].tolist())
    assert channels == expected_channels
    assert states == [sorted(np.argsort(-sq[c])[:2].tolist()) for c in expected_channels]
    flipped = delta.clone()
    flipped[:, 0] *= -1  # the score is squared: signs do not matter
    assert sd.select_dimensions(flipped, 5, 2) == [channels, states]


@pytest.mark.parametrize("name", ["sdt", "sdlora"])
def test_warmup_runs_num_warmup_it_plus_one_updates_under_the_runs_linear_decay(name):
    data = batches(3)
    model = build_model(TINY, seed=0)
    with StepLog() as log:
        apply_method(name, model, cfg(name, num_warmup_it=4, warmup_schedule_epochs=2), train_batches=data)
    assert len(log.lrs) == 5  # 4 + 1 updates, the fifth one past the end of the 3-batch epoch
    total = 2 * len(data)  # the run's schedule: epochs x batches per epoch, decaying linearly to 0
    np.testing.assert_allclose(log.lrs, [1e-2 * (total - t) / total for t in range(5)], rtol=1e-6)
    per_layer = {(E, N)} if name == "sdt" else {(E, N), (8, E), (TINY.d_model, 8)}  # + LoRA A, B on out_proj
    assert set(log.shapes[0]) == per_layer
    assert len(log.shapes[0]) == LAYERS * len(per_layer)


def test_warmup_uses_warmup_lr_when_given():
    with StepLog() as log:
        apply_method("sdt", build_model(TINY), cfg("sdt", warmup_lr=3e-3, num_warmup_it=0), train_batches=batches())
    assert log.lrs == [pytest.approx(3e-3)]


def test_method_yaml_takes_the_runs_lr_and_epochs(tmp_path):
    from stateft.app.checks import compose_checked

    over = ["method=sdlora", "experiment=paper/glue", "dataset=glue_mnli", "optim.lr=5e-3", f"output_dir={tmp_path}"]
    method = validate_method_cfg(compose_checked("train", over).method)
    assert (method.warmup_lr, method.warmup_schedule_epochs, method.num_warmup_it) == (5e-3, 3, 499)
    # the per-dataset warm-up length of conf/experiment/paper/common.yaml (the SDT code's 248 for RTE)
    over = ["method=sdt", "experiment=paper/glue", "dataset=glue_rte"]
    method = validate_method_cfg(compose_checked("train", [*over, f"output_dir={tmp_path}"]).method)
    assert method.num_warmup_it == 248


def test_paper_sdt_trains_no_lora_and_only_its_sparse_entries():
    base = build_model(TINY, seed=0)
    model = build_model(TINY, seed=0)
    names = apply_method("sdt", model, cfg("sdt"), train_batches=batches())
    assert not any("lora" in n for n in names)
    assert not any(type(m).__name__ == "LoRALinear" for m in model.modules())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in names:
                p.fill_(0.5)
    selection = model.peft_config["selection"]
    for layer, (mixer, mixer0) in enumerate(zip(model.mixers(), base.mixers())):
        channels, states = selection[layer]
        changed = (mixer.A_log != mixer0.A_log).nonzero().tolist()
        assert sorted(changed) == sorted([c, s] for c, row in zip(channels, states) for s in row)
        R = mixer.dt_rank
        changed = (mixer.x_proj.weight != mixer0.x_proj.weight).nonzero().tolist()
        assert sorted(changed) == sorted([r, c] for r in range(R, R + 2 * N) for c in channels)


@pytest.mark.parametrize("name", ["sdt", "sdlora"])
def test_selection_comes_from_the_warmup_delta(name, monkeypatch):
    g = torch.Generator().manual_seed(1)
    deltas = [torch.randn(E, N, generator=g) for _ in range(LAYERS)]
    monkeypatch.setattr(sd, "warmup_deltas", lambda *args, **kwargs: deltas)
    model = build_model(TINY)
    apply_method(name, model, cfg(name), train_batches=batches())
    assert model.peft_config["selection"] == [sd.select_dimensions(d, 8, 2) for d in deltas]


def test_warmup_leaves_the_model_it_starts_from_untouched():
    base = build_model(TINY, seed=0)
    model = build_model(TINY, seed=0)
    apply_method("sdlora", model, cfg("sdlora"), train_batches=batches())
    for mixer, mixer0 in zip(model.mixers(), base.mixers()):
        assert torch.equal(mixer.parametrizations.A_log.original, mixer0.A_log)
        assert torch.equal(mixer.out_proj.base.weight, mixer0.out_proj.weight)


@pytest.mark.parametrize("name", ["sdt", "sdlora"])
def test_identity_at_init(name):
    base = build_model(TINY, seed=0).eval()
    model = build_model(TINY, seed=0)
    apply_method(name, model, cfg(name), train_batches=batches())
    ids = batches(1)[0]["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids), base(ids), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["sdt", "sdlora"])
def test_loading_reapplies_the_stored_selection_without_a_warmup(name, tmp_path, monkeypatch):
    model = build_model(TINY, seed=0)
    names = apply_method(name, model, cfg(name, lora_dropout=0.0) if name == "sdlora" else cfg(name), batches())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in names:
                p.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(n)))
    save_adapter(tmp_path / "adapter", model)
    stored = read_adapter_config(tmp_path / "adapter")["method"]["selection"]
    assert stored == model.peft_config["selection"]

    def no_warmup(*args, **kwargs):
        raise AssertionError("loading must not run a warm-up")

    monkeypatch.setattr(sd, "warmup_deltas", no_warmup)
    fresh = build_model(TINY, seed=0)
    assert load_adapter(tmp_path / "adapter", fresh) == names
    assert fresh.peft_config["selection"] == stored
    ids = batches(1)[0]["input_ids"]
    with torch.no_grad():
        assert torch.equal(fresh.eval()(ids), model.eval()(ids))


def test_a_stored_selection_that_does_not_fit_is_refused():
    good = [[list(range(8)), [[0, 1]] * 8]] * LAYERS
    apply_method("sdt", build_model(TINY), cfg("sdt", selection=good))
    for bad in (good[:1], [[list(range(7)), [[0, 1]] * 7]] * LAYERS, [[list(range(8)), [[0, 4]] * 8]] * LAYERS):
        with pytest.raises(UserError, match="selection"):
            apply_method("sdt", build_model(TINY), cfg("sdt", selection=bad))


def test_without_batches_or_selection_it_asks_for_batches():
    with pytest.raises(UserError, match="warm-up"):
        apply_method("sdlora", build_model(TINY), cfg("sdlora"))


@pytest.mark.parametrize("bad", [{"freeze_channels": 1.0}, {"freeze_states": -0.1}, {"num_warmup_it": -1}])
def test_config_rejects_impossible_values(bad):
    with pytest.raises(UserError):
        validate_method_cfg(cfg("sdt", **bad))


@pytest.mark.parametrize("name", ["sdt", "sdlora"])
def test_mamba2_is_refused_with_one_line_naming_mamba1(name, tmp_path):
    with pytest.raises(NotImplementedError, match=f"{name} applies to mamba1 models, not to mamba2") as err:
        apply_method(name, build_model(TINY2), cfg(name), train_batches=batches())
    assert "\n" not in str(err.value)

    from stateft.app.checks import compose_checked, validate_cfg
    from stateft.app.training import dry_run

    run = compose_checked("train", [f"method={name}", "model=mamba2-130m", "dry_run=true", f"output_dir={tmp_path}"])
    for check in (validate_cfg, dry_run):  # at start-up, and where the method is applied
        with pytest.raises(UserError, match=f"method {name} on mamba2-130m: {name} applies to mamba1") as err:
            check(run)
        assert "\n" not in str(err.value)
