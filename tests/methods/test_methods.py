"""One suite over every method: the invariants each PEFT method must keep, on a tiny random Mamba (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from stateft.adapters import WEIGHTS_NAME, load_adapter, save_adapter
from stateft.loss import lm_loss
from stateft.methods import METHODS, apply_method
from stateft.methods.configs import ARCHS, METHOD_CONFIGS, methods_for
from stateft.models.loading import build_model
from tests.conftest import TINY, TINY2

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {"mamba1": TINY, "mamba2": TINY2}
# (arch, method, extra options)
# every method (compose below, with its parts) on each Mamba its registry entry names, and low-rank h'
CASES = [(arch, m, {}) for arch in CONFIGS for m in METHODS if arch in METHODS[m].archs and m != "compose"]
CASES += [(arch, "state_offset_h", {"rank": 2}) for arch in CONFIGS]
# MambaPEFT's variants: LoRA on in_proj's x and z halves and on the conv, prompt through its MLP, the outer prefix,
# partial subsets
CASES += [(arch, "lora", {"target_modules": ["in_proj.x", "in_proj.z", "out_proj"]}) for arch in CONFIGS]
CASES += [(arch, "lora", {"target_modules": ["conv1d", "out_proj"]}) for arch in CONFIGS]
CASES += [(arch, "prompt", {"reparam": True}) for arch in CONFIGS]
CASES += [("mamba1", "prefix", {"position": "outer"})]
CASES += [(arch, "partial", {"learnable": ["D", "dt_bias"]}) for arch in CONFIGS]
# compositions (method=compose), each on the Mambas all its parts apply to
COMPOSITIONS = [
    ["lora", "additional_scan"],
    ["lora", "prefix"],
    ["state_offset_h", "lora"],
    ["bitfit", "init_state"],
    ["partial", "prompt", "lora"],
]
CASES += [
    (arch, "compose", {"parts": parts})
    for parts in COMPOSITIONS
    for arch in CONFIGS
    if all(arch in METHODS[part].archs for part in parts)
]


def case_id(arch: str, name: str, extra: dict) -> str:
    if name == "compose":
        return f"{arch}-compose-" + "+".join(extra["parts"])
    return f"{arch}-{name}" + "".join(f"-{k}{v}" for k, v in extra.items())


IDS = [case_id(*case) for case in CASES]
# methods whose parameters start at values that leave the model's function unchanged
IDENTITY_AT_INIT = {"state_offset_h", "state_offset_y", "init_state", "lora", "additional_scan", "sdt", "bitfit"}
IDENTITY_AT_INIT |= {"full", "full_s6", "full_ssd", "partial"}
# methods that train existing weights (the adapter holds base tensors)
SELECTING = {"full", "full_s6", "full_ssd", "bitfit", "partial"}
# sdt, sdlora: a 3-update warm-up, 8 of 32 channels, 2 of 4 states
SELECTIVE = {"num_warmup_it": 2, "freeze_channels": 0.75, "freeze_states": 0.5}
SMALL = {"prompt": {"num_virtual_tokens": 3}, "sdt": SELECTIVE, "sdlora": {**SELECTIVE, "lora_dropout": 0.0}}


def parts_of(name: str, extra: dict) -> list[str]:
    """The methods a case applies: its parts for a composition, else itself."""
    return list(extra["parts"]) if name == "compose" else [name]


def identity_at_init(name: str, extra: dict) -> bool:
    return all(part in IDENTITY_AT_INIT for part in parts_of(name, extra))


def method_cfg(name: str, **extra) -> dict:
    """conf/method/<name>.yaml with the test sizes; a composition's parts each from their own file (what Hydra's
    defaults list in conf/method/compose.yaml does)."""
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "method" / f"{name}.yaml"))
    cfg.update(SMALL.get(name, {}))
    if name == "lora":
        cfg["dropout"] = 0.0  # deterministic forward for the equality tests
    if name == "compose":
        del cfg["defaults"]
        for part in extra.get("parts", cfg["parts"]):
            cfg[part] = method_cfg(part)
    cfg.update(extra)
    return cfg


def batch(seed: int = 0, b: int = 2, length: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (b, length), generator=g)
    labels = ids.clone()
    labels[:, : length // 2] = -100  # prompt positions carry no loss
    return {"input_ids": ids, "labels": labels}


def prepared(arch: str, name: str, extra: dict) -> tuple[torch.nn.Module, list[str]]:
    model = build_model(CONFIGS[arch], seed=0)
    names = apply_method(name, model, method_cfg(name, **extra), train_batches=[batch(5)])
    return model, names


def perturb(model: torch.nn.Module, names: list[str], scale: float = 0.3) -> None:
    """Give every trainable tensor non-trivial values, so no zero init can hide a bug."""
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for name in names:
            p = params[name]
            p.add_(scale * torch.randn(p.shape, generator=g).to(p.dtype))


@pytest.mark.parametrize(("arch", "name", "extra"), CASES, ids=IDS)
def test_apply_returns_exactly_the_trainable_parameters(arch, name, extra):
    model, names = prepared(arch, name, extra)
    assert names == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert names, "a method must train something"
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n in names)


@pytest.mark.parametrize(("arch", "name", "extra"), CASES, ids=IDS)
def test_only_returned_parameters_change(arch, name, extra):
    model, names = prepared(arch, name, extra)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for step in range(2):
        optimizer.zero_grad()
        lm_loss(model, **batch(step)).backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "training changed nothing"
    assert changed <= set(names), f"frozen parameters changed: {sorted(changed - set(names))[:5]}"


@pytest.mark.parametrize(
    ("arch", "name", "extra"),
    [c for c in CASES if identity_at_init(c[1], c[2])],
    ids=[i for c, i in zip(CASES, IDS) if identity_at_init(c[1], c[2])],
)
def test_identity_at_init(arch, name, extra):
    base = build_model(CONFIGS[arch], seed=0).eval()
    model, _ = prepared(arch, name, extra)
    model.eval()
    ids = batch(1)["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids), base(ids), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("arch", "name", "extra"), CASES, ids=IDS)
def test_parallel_forward_equals_step_decoding(arch, name, extra):
    model, names = prepared(arch, name, extra)
    perturb(model, names)
    model.eval()
    ids = batch(2, b=2, length=10)["input_ids"]
    with torch.no_grad():
        parallel = model(ids)
        cache = model.new_cache()
        stepped = torch.stack([model.step(ids[:, t], cache) for t in range(ids.shape[1])], dim=1)
        cache = model.new_cache()
        prefill = model(ids[:, :6], cache)
        rest = torch.stack([model.step(ids[:, t], cache) for t in range(6, 10)], dim=1)
    torch.testing.assert_close(stepped, parallel, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.cat([prefill, rest], dim=1), parallel, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("arch", "name", "extra"), CASES, ids=IDS)
def test_adapter_round_trip(arch, name, extra, tmp_path):
    model, names = prepared(arch, name, extra)
    perturb(model, names)
    model.eval()
    save_adapter(tmp_path / "adapter", model, method_cfg(name, **extra), names, base_model={"name": "tiny"})
    stored = load_file(str(tmp_path / "adapter" / WEIGHTS_NAME))
    assert sorted(stored) == names
    if not set(parts_of(name, extra)) & SELECTING:  # methods that add parameters store no base weight
        base_keys = set(build_model(CONFIGS[arch]).state_dict())
        assert not set(stored) & base_keys
    fresh = build_model(CONFIGS[arch], seed=0).eval()
    loaded = load_adapter(tmp_path / "adapter", fresh)
    assert loaded == names
    ids = batch(3)["input_ids"]
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))


@pytest.mark.parametrize(("arch", "name", "extra"), CASES, ids=IDS)
def test_a_few_steps_lower_the_loss(arch, name, extra):
    model, names = prepared(arch, name, extra)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-2 if name not in {"full"} else 3e-3, weight_decay=0.0)
    data = batch(4, b=4, length=16)
    first = lm_loss(model, **data).item()
    for _ in range(8):
        optimizer.zero_grad()
        lm_loss(model, **data).backward()
        optimizer.step()
    assert lm_loss(model, **data).item() < first


def test_registry_matches_config_files():
    assert set(METHODS) == {p.stem for p in (REPO / "conf" / "method").glob("*.yaml")}
    assert list(METHODS) == list(METHOD_CONFIGS)
    assert all(METHODS[m].config is METHOD_CONFIGS[m] for m in METHODS)


def test_every_method_applies_to_known_architectures():
    for name, spec in METHODS.items():
        assert spec.archs, f"{name} declares no architecture"
        assert spec.archs <= set(ARCHS), f"{name}: unknown architectures {set(spec.archs) - set(ARCHS)}"
    assert {m for arch in ARCHS for m in methods_for(arch)} == set(METHODS)


REFUSED = [(arch, m) for arch in CONFIGS for m in METHODS if arch not in METHODS[m].archs]


@pytest.mark.parametrize(("arch", "name"), REFUSED, ids=[f"{arch}-{m}" for arch, m in REFUSED])
def test_a_method_is_refused_on_other_architectures_in_one_line(arch, name):
    model = build_model(CONFIGS[arch], seed=0)
    with pytest.raises(NotImplementedError) as err:
        apply_method(name, model, method_cfg(name), train_batches=[batch(5)])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{name} applies to ")
    assert message.endswith(f"the methods for {arch}: {', '.join(methods_for(arch))}")
    assert all(p.requires_grad for p in model.parameters()), "refused before the model was touched"


def test_method_configs_validate_and_reject_typos():
    from stateft.errors import UserError
    from stateft.methods.configs import validate_method_cfg

    for name in METHODS:
        assert validate_method_cfg(method_cfg(name)).name == name
    with pytest.raises(UserError, match="valid options"):
        validate_method_cfg({"name": "state_offset_h", "rnak": 4})
    with pytest.raises(UserError, match="choose one of"):
        validate_method_cfg({"name": "lorra"})
