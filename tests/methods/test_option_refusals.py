"""Options that apply to some of a method's architectures only (``MethodConfig.option_refusal``) are refused by the
start-up check in one ``error:`` line with exit code 2, before any model is built; the Python API (``apply_method``)
refuses them with the same line, leaving the model untouched."""

from __future__ import annotations

import pytest

import stateft.models.loading
from stateft.app.checks import preflight
from stateft.methods import apply_method
from stateft.methods.configs import arch_refusal, validate_method_cfg
from stateft.models.loading import build_model
from stateft.models.pythia_loading import build_model as build_pythia
from stateft.vision.loading import build_vim
from tests.conftest import TINY2
from tests.models.tiny_pythia import TINY_PYTHIA
from tests.vision.conftest import tiny_config

OUTER_ON_VIM = "prefix position=outer is not offered on Vim; use position=inner"
A_INIT_ON_MAMBA2 = "additional_scan A_init does not apply to Mamba-2"
# (start-up overrides, method options for the Python API, model for the API, words of the refusal)
CASES = [
    pytest.param(
        ["model=vim-test", "dataset=vtab_dtd", "method=prefix", "method.position=outer"],
        {"name": "prefix", "position": "outer"},
        "vim",
        OUTER_ON_VIM,
        id="prefix-outer-on-vim",
    ),
    pytest.param(
        ["model=vim-test", "dataset=vtab_dtd", "method=compose", "method.parts=[lora,prefix]",
         "method.prefix.position=outer"],
        {"name": "compose", "parts": ["lora", "prefix"], "prefix": {"position": "outer"}},
        "vim",
        f"compose part {OUTER_ON_VIM}",
        id="compose-part-prefix-outer-on-vim",
    ),
    pytest.param(
        ["model=pythia-tiny", "method=prefix", "method.position=outer"],
        {"name": "prefix", "position": "outer"},
        "gpt_neox",
        "prefix position=outer is Mamba's; on a Transformer use position=inner",
        id="prefix-outer-on-pythia",
    ),
    pytest.param(
        ["model=pythia-tiny", "method=prompt", "method.reparam=true"],
        {"name": "prompt", "reparam": True},
        "gpt_neox",
        "prompt reparam=true (MambaPEFT's MLP) is for Mamba; on a Transformer use reparam=false",
        id="prompt-reparam-on-pythia",
    ),
    pytest.param(
        ["model=pythia-tiny", "method=lora", "method.target_modules=[query_key_value,x_proj]"],
        {"name": "lora", "target_modules": ["query_key_value", "x_proj"]},
        "gpt_neox",
        "lora target_modules ['x_proj'] are not targets on gpt_neox; choose from: query_key_value, dense, "
        "dense_h_to_4h, dense_4h_to_h",
        id="lora-mamba-target-on-pythia",
    ),
    pytest.param(
        ["model=mamba2-tiny", "method=lora", "method.target_modules=[x_proj.dt,out_proj]"],
        {"name": "lora", "target_modules": ["x_proj.dt", "out_proj"]},
        "mamba2",
        "lora target_modules ['x_proj.dt'] are not targets on mamba2; choose from: in_proj, out_proj, in_proj.x, "
        "in_proj.z, conv1d",
        id="lora-mamba1-block-on-mamba2",
    ),
    pytest.param(
        ["model=mamba2-tiny", "method=additional_scan", "method.A_init=sst"],
        {"name": "additional_scan", "A_init": "sst"},
        "mamba2",
        A_INIT_ON_MAMBA2,
        id="additional-scan-a-init-on-mamba2",
    ),
]  # fmt: skip


def _model(arch: str):
    if arch == "vim":
        return build_vim(tiny_config(), seed=0, backend="ref")
    if arch == "gpt_neox":
        return build_pythia(TINY_PYTHIA, seed=0)
    return build_model(TINY2, seed=0)


@pytest.mark.parametrize(("overrides", "options", "arch", "words"), CASES)
def test_refused_at_start_up_in_one_line_before_a_model_is_built(overrides, options, arch, words, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the refusal")

    monkeypatch.setattr(stateft.models.loading, "model_from_config", no_model)
    monkeypatch.setattr(stateft.models.loading, "build_model", no_model)
    with pytest.raises(SystemExit) as exit_info:
        preflight("train", ["logger=none", *overrides, "dry_run=true"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: method ")
    assert words in lines[0]


@pytest.mark.parametrize(("overrides", "options", "arch", "words"), CASES)
def test_the_python_api_refuses_with_the_same_line(overrides, options, arch, words):
    cfg = validate_method_cfg(options)
    reason = arch_refusal(cfg, arch)
    assert words in str(reason)
    assert "\n" not in reason
    model = _model(arch)
    with pytest.raises(NotImplementedError) as err:
        apply_method(options["name"], model, options)
    assert str(err.value) == reason
    assert all(p.requires_grad for p in model.parameters()), "refused before the model was touched"


@pytest.mark.parametrize(
    ("options", "arch"),
    [
        ({"name": "prefix", "position": "outer"}, "mamba1"),
        ({"name": "prefix", "position": "inner"}, "vim"),
        ({"name": "prefix", "position": "inner"}, "gpt_neox"),
        ({"name": "prompt", "reparam": True}, "mamba2"),
        ({"name": "prompt", "reparam": True}, "vim"),
        ({"name": "lora", "target_modules": ["dense"]}, "gpt_neox"),
        ({"name": "lora", "target_modules": ["x_proj"]}, "mamba1"),
        ({"name": "additional_scan", "A_init": "sst"}, "mamba1"),
        ({"name": "additional_scan", "A_init": "copy"}, "vim"),
    ],
)
def test_the_options_stay_offered_where_they_apply(options, arch):
    assert arch_refusal(validate_method_cfg(options), arch) is None


def test_an_unknown_prompt_init_is_refused_with_the_options():
    from stateft.errors import UserError

    with pytest.raises(UserError, match="prompt: unknown init 'zeros'; choose one of: vocab, normal"):
        validate_method_cfg({"name": "prompt", "init": "zeros"})
