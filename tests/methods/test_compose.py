"""method=compose: a composition trains exactly the union of what its parts train alone, each part with its own
learning rate; clashes between parts are refused in one line. (The per-method invariants, identity at init,
parallel == step, save -> load, run over compositions in test_methods.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from stateft.errors import UserError
from stateft.generation import generate, generate_batch
from stateft.methods import METHODS, apply_method
from stateft.methods.compose import application_order, lr_groups, part_summary
from stateft.models.loading import build_model
from tests.methods.test_methods import COMPOSITIONS, CONFIGS, method_cfg, perturb
from tests.test_generation_batch import _eos_that_splits, _prompts

CASES = [(arch, parts) for parts in COMPOSITIONS for arch in CONFIGS if all(arch in METHODS[p].archs for p in parts)]
IDS = [f"{arch}-" + "+".join(parts) for arch, parts in CASES]


def composed(arch: str, parts: list[str], **options) -> tuple[torch.nn.Module, list[str]]:
    model = build_model(CONFIGS[arch], seed=0)
    cfg = method_cfg("compose", parts=parts)
    for part, extra in options.items():
        cfg[part].update(extra)
    return model, apply_method("compose", model, cfg)


def count_alone(arch: str, part: str) -> int:
    model = build_model(CONFIGS[arch], seed=0)
    names = apply_method(part, model, method_cfg(part))
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names)


@pytest.mark.parametrize(("arch", "parts"), CASES, ids=IDS)
def test_trainable_count_is_the_sum_of_the_parts_alone(arch, parts):
    model, names = composed(arch, parts)
    params = dict(model.named_parameters())
    assert sum(params[n].numel() for n in names) == sum(count_alone(arch, part) for part in parts)
    # each part's tensors, as the composition records them, are disjoint and cover the trainable ones
    recorded = [n for part in parts for n in model.peft_parts[part]]
    assert sorted(recorded) == names
    assert len(set(recorded)) == len(recorded)
    assert [sum(params[n].numel() for n in model.peft_parts[p]) for p in parts] == [count_alone(arch, p) for p in parts]


def test_the_order_of_the_parts_does_not_change_what_trains():
    """bitfit selects dt_proj.bias by its pretrained name; LoRA on dt_proj moves it to dt_proj.base.bias: bitfit is
    applied first whatever the order given, so both orders train the same tensors."""
    assert application_order(["lora", "bitfit"]) == ["bitfit", "lora"]
    targets = {"target_modules": ["dt_proj", "out_proj"]}
    one, names_one = composed("mamba1", ["lora", "bitfit"], lora=targets)
    two, names_two = composed("mamba1", ["bitfit", "lora"], lora=targets)
    assert names_one == names_two
    assert "backbone.layers.0.mixer.dt_proj.base.bias" in one.peft_parts["bitfit"]


def test_each_part_is_its_own_optimizer_group():
    """lit_module.configure_optimizers: one learning rate per part, the no-weight-decay tensors (additional_scan's
    A_log) in a group of their own inside their part."""
    from stateft.lit_module import FineTuneModule

    model, names = composed("mamba1", ["lora", "additional_scan"], lora={"lr": 3e-4}, additional_scan={"lr": 5e-3})
    module = FineTuneModule(model, names, {"lr": 1e-3, "weight_decay": 0.1}, task=None, tokenizer=None)
    module._trainer = SimpleNamespace(estimated_stepping_batches=10)
    optimizer = module.configure_optimizers()["optimizer"]
    params = dict(model.named_parameters())
    by_id = {id(p): n for n, p in params.items()}
    groups = [(g["lr"], g["weight_decay"], sorted(by_id[id(p)] for p in g["params"])) for g in optimizer.param_groups]
    lora = sorted(model.peft_parts["lora"])
    scan_A = sorted(n for n in model.peft_parts["additional_scan"] if n.endswith("extra_states.A_log"))
    scan_W = sorted(n for n in model.peft_parts["additional_scan"] if not n.endswith("extra_states.A_log"))
    assert groups == [(3e-4, 0.1, lora), (5e-3, 0.1, scan_W), (5e-3, 0.0, scan_A)]
    assert scan_A
    assert all(getattr(params[n], "_no_weight_decay", False) for n in scan_A)


def test_a_part_without_lr_takes_the_run_rate():
    model, names = composed("mamba2", ["state_offset_h", "lora"], state_offset_h={"lr": None})
    assert lr_groups(model, names, 7e-4) == [
        (7e-4, model.peft_parts["state_offset_h"]),
        (method_cfg("lora")["lr"], model.peft_parts["lora"]),
    ]
    plain = build_model(CONFIGS["mamba1"], seed=0)
    plain_names = apply_method("lora", plain, method_cfg("lora"))
    assert lr_groups(plain, plain_names, 7e-4) == [(7e-4, plain_names)]


def test_summary_lists_each_part_and_the_total():
    model, names = composed("mamba1", ["lora", "prefix"])
    lines = part_summary(model)
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in names)
    assert lines[0].startswith("compose:")
    assert [line.split()[0] for line in lines[1:]] == ["lora", "prefix", "total"]
    assert lines[-1].split()[1] == f"{total:,d}"
    assert part_summary(build_model(CONFIGS["mamba1"], seed=0)) == []


@pytest.mark.parametrize(
    ("parts", "options", "wanted"),
    [
        (["bitfit", "partial"], {}, "parts bitfit and partial both train backbone.layers.0.mixer.conv1d.bias"),
        (["full_s6", "lora"], {"lora": {"target_modules": ["x_proj"]}}, None),
        (["state_offset_h", "state_offset_y"], {}, "parts state_offset_h and state_offset_y both fill the slot"),
    ],
    ids=["same-tensor", "lora-over-trained-weight", "same-slot"],
)
def test_clashes_between_parts_are_refused_in_one_line(parts, options, wanted):
    if wanted is None:  # LoRA beside a trained base weight is no clash: different tensors
        model, names = composed("mamba1", parts, **options)
        assert "backbone.layers.0.mixer.x_proj.base.weight" in model.peft_parts["full_s6"]
        return
    with pytest.raises(UserError) as err:
        composed("mamba1", parts, **options)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"compose: {wanted}")


@pytest.mark.parametrize(
    ("cfg", "wanted"),
    [
        ({"parts": []}, "compose: method.parts is empty"),
        ({"parts": ["lorra"]}, "compose: unknown part 'lorra'; choose among: full_s6,"),
        ({"parts": ["lora", "compose"]}, "compose: compose cannot be a part"),
        ({"parts": ["sdt"]}, "compose: sdt cannot be a part"),
        ({"parts": ["lora", "lora"]}, "compose: part lora is listed twice"),
    ],
)
def test_bad_compositions_are_one_line(cfg, wanted):
    with pytest.raises(UserError) as err:
        apply_method("compose", build_model(CONFIGS["mamba1"], seed=0), {"name": "compose", **cfg})
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(wanted)


def test_a_part_that_does_not_apply_is_refused_naming_it():
    model = build_model(CONFIGS["mamba2"], seed=0)
    with pytest.raises(NotImplementedError) as err:
        apply_method("compose", model, method_cfg("compose", parts=["lora", "prefix"]))
    assert str(err.value).startswith("compose part prefix applies to mamba1")
    assert all(p.requires_grad for p in model.parameters()), "refused before the model was touched"


@pytest.mark.parametrize(
    ("arch", "parts"), [("mamba1", ["lora", "prefix"]), ("mamba2", ["state_offset_h", "lora"])], ids=str
)
def test_batched_decoding_equals_one_prompt_at_a_time(arch, parts):
    model, names = composed(arch, parts)
    perturb(model, names)
    model.eval()
    prompts = _prompts()
    eos = _eos_that_splits(model, prompts, 1)
    single = [generate(model, p, max_new_tokens=6, num_beams=1, eos_id=eos) for p in prompts]
    assert generate_batch(model, prompts, max_new_tokens=6, num_beams=1, eos_id=eos) == single
