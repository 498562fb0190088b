"""A shared adapter is data: adapter_config.json is typed and bounded before anything is built, the tensors match
what the method makes on the base model and the digest written at save time; every failure is one line."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import struct
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from stateft.adapters import (
    CONFIG_DIGEST_KEY,
    CONFIG_NAME,
    DIGEST_KEY,
    WEIGHTS_NAME,
    _method_checks,
    config_digest,
    load_adapter,
    read_adapter_config,
    save_adapter,
    tensors_digest,
)
from stateft.app.run_config import base_model_node
from stateft.errors import UserError
from stateft.methods import apply_method
from stateft.methods.configs import METHOD_CONFIGS
from stateft.models.backbone import S4_ARCHS
from stateft.models.loading import build_model
from tests.conftest import TINY, TINY2
from tests.security.conftest import (
    assert_one_error_line,
    eval_cli,
    eval_overrides,
    evaluate_refuses,
    planted_pickle,
    read_json,
    write_json,
)


# -- helpers ---------------------------------------------------------------------------------------------------------
def tiny_adapter(folder, method: str = "state_offset_h", config=TINY, **options):
    model = build_model(config)
    cfg = {"name": method, **options}
    if method in ("sdt", "sdlora"):
        from stateft.methods.selective_dims import kept

        freeze = options.get("freeze_channels", 0.5 if method == "sdt" else 0.99)
        n_c, n_s = kept(config.d_inner, freeze), kept(config.d_state, 0.75)
        cfg["selection"] = [[list(range(n_c)), [list(range(n_s))] * n_c]] * config.n_layer
    names = apply_method(method, model, cfg)
    return save_adapter(folder / "adapter", model, cfg, names, base_model={"name": "tiny"})


def edit_config(adapter, edit) -> None:
    meta = read_json(adapter / CONFIG_NAME)
    edit(meta)
    write_json(adapter / CONFIG_NAME, meta)


def resave(adapter, tensors, metadata=None) -> None:
    """Rewrite the weights as an attacker who recomputes the digests would."""
    meta = read_json(adapter / CONFIG_NAME)
    metadata = metadata or {
        "format": "pt",
        DIGEST_KEY: tensors_digest(tensors),
        CONFIG_DIGEST_KEY: config_digest(meta),
    }
    save_file(tensors, str(adapter / WEIGHTS_NAME), metadata=metadata)


def split_file(path):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join_file(path, header, payload: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)


def refuses(adapter, *patterns, config=TINY):
    with pytest.raises(UserError) as err:
        load_adapter(adapter, build_model(config))
    message = str(err.value)
    assert "\n" not in message, message
    for pattern in patterns:
        assert pattern in message, message
    return message


# -- the digest -----------------------------------------------------------------------------------------------------
def test_save_writes_digests_and_load_checks_them(tmp_path, capsys):
    adapter = tiny_adapter(tmp_path, "lora")
    header, _ = split_file(adapter / WEIGHTS_NAME)
    assert len(header["__metadata__"][DIGEST_KEY]) == 64
    assert header["__metadata__"][CONFIG_DIGEST_KEY] == config_digest(read_json(adapter / CONFIG_NAME))
    assert header["__metadata__"][DIGEST_KEY] == tensors_digest(load_file(str(adapter / WEIGHTS_NAME)))
    load_adapter(adapter, build_model(TINY))
    assert "warning" not in capsys.readouterr().err


def test_flipped_bytes_in_the_tensors_are_caught(tmp_path):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    header, payload = split_file(adapter / WEIGHTS_NAME)
    payload = bytearray(payload)
    rng = random.Random(0)
    for i in rng.sample(range(len(payload)), 100):
        payload[i] ^= 1 << rng.randrange(8)
    join_file(adapter / WEIGHTS_NAME, header, bytes(payload))
    refuses(adapter, "do not match the digest", "re-download")


def test_one_flipped_bit_is_caught(tmp_path):
    adapter = tiny_adapter(tmp_path, "lora")
    data = bytearray((adapter / WEIGHTS_NAME).read_bytes())
    data[-5] ^= 0x01
    (adapter / WEIGHTS_NAME).write_bytes(bytes(data))
    refuses(adapter, "digest")


def test_an_edited_config_is_caught(tmp_path):
    adapter = tiny_adapter(tmp_path, "lora")
    edit_config(adapter, lambda meta: meta["method"].__setitem__("alpha", 64.0))  # same tensors, 8x the update
    refuses(adapter, CONFIG_NAME, "not the config the tensors were saved with")


def test_an_old_adapter_without_digest_loads_with_one_warning(tmp_path, capsys):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    tensors = load_file(str(adapter / WEIGHTS_NAME))
    save_file(tensors, str(adapter / WEIGHTS_NAME), metadata={"format": "pt", "method": "state_offset_h"})
    fresh = build_model(TINY)
    names = load_adapter(adapter, fresh)
    params = dict(fresh.named_parameters())
    assert all(torch.equal(params[n].detach(), tensors[n]) for n in names)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1
    assert err[0].startswith("warning: ")
    assert "no digest" in err[0]


# -- the safetensors file -----------------------------------------------------------------------------------------
def test_truncated_file(tmp_path):
    adapter = tiny_adapter(tmp_path, "lora")
    data = (adapter / WEIGHTS_NAME).read_bytes()
    for cut in (3, 20, len(data) // 2, len(data) - 1):
        (adapter / WEIGHTS_NAME).write_bytes(data[:cut])
        refuses(adapter, "corrupt")


def test_a_pickle_named_like_the_tensor_file_is_never_unpickled(tmp_path, marker):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    (adapter / WEIGHTS_NAME).unlink()
    planted_pickle(adapter, marker, WEIGHTS_NAME)
    refuses(adapter, "not a safetensors file")
    assert not marker.exists()


def test_a_header_claiming_huge_shapes(tmp_path):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    header, payload = split_file(adapter / WEIGHTS_NAME)
    name = next(k for k in header if k != "__metadata__")
    huge = 10**6 * 10**6 * 4
    header[name] = {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, huge]}
    join_file(adapter / WEIGHTS_NAME, header, payload)
    refuses(adapter, "past the end of the file")
    header[name]["data_offsets"] = [0, 16]
    join_file(adapter / WEIGHTS_NAME, header, payload)
    refuses(adapter, "do not fit its shape")


def test_a_header_length_past_the_file(tmp_path):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    data = (adapter / WEIGHTS_NAME).read_bytes()
    for n in (2**63, 2**40, len(data)):
        (adapter / WEIGHTS_NAME).write_bytes(struct.pack("<Q", n) + data[8:])
        refuses(adapter, "not a safetensors file")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda h, n: h[n].__setitem__("dtype", "I64"), "has dtype"),
        (lambda h, n: h[n].__setitem__("dtype", "object"), "has dtype"),
        (lambda h, n: h[n].__setitem__("shape", ["4", 2]), "must be an integer"),
        (lambda h, n: h[n].__setitem__("shape", [-1]), "out of range"),
        (lambda h, n: h[n].__setitem__("data_offsets", [0]), "offsets"),
        (lambda h, n: h[n].__setitem__("extra", 1), "not dtype, shape, data_offsets"),
        (lambda h, n: h.__setitem__("__metadata__", {"x": 1}), "__metadata__"),
        (lambda h, n: h.__setitem__(n, [1, 2]), "must be a JSON object"),
    ],
)
def test_malformed_headers(tmp_path, edit, expected):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    header, payload = split_file(adapter / WEIGHTS_NAME)
    edit(header, sorted(k for k in header if k != "__metadata__")[0])
    join_file(adapter / WEIGHTS_NAME, header, payload)
    refuses(adapter, expected)


def test_overlapping_tensors(tmp_path):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    header, payload = split_file(adapter / WEIGHTS_NAME)
    first, second = sorted(k for k in header if k != "__metadata__")
    header[second]["data_offsets"] = header[first]["data_offsets"]
    join_file(adapter / WEIGHTS_NAME, header, payload)
    refuses(adapter, "corrupt")


def test_extra_missing_and_reshaped_tensors_are_refused_even_with_matching_digests(tmp_path):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    tensors = load_file(str(adapter / WEIGHTS_NAME))
    name = sorted(tensors)[0]
    resave(adapter, {**tensors, "backbone.embedding.weight": torch.zeros(64, 16)})
    refuses(adapter, "unexpected", "backbone.embedding.weight")
    resave(adapter, {k: v for k, v in tensors.items() if k != name})
    refuses(adapter, "missing", name)
    resave(adapter, {**tensors, name: torch.zeros(3, 5)})
    refuses(adapter, name, "has shape (3, 5)")
    resave(adapter, {**tensors, name: tensors[name].to(torch.int32)})
    refuses(adapter, "has dtype")
    resave(adapter, tensors)  # the attacker's digests of unchanged tensors: loads
    load_adapter(adapter, build_model(TINY))


def test_a_weights_file_much_larger_than_the_adapter_is_refused_unread(tmp_path):
    adapter = tiny_adapter(tmp_path, "state_offset_y")
    with open(adapter / WEIGHTS_NAME, "r+b") as f:
        f.truncate(200 << 20)  # sparse
    refuses(adapter, "bytes, more than")


@pytest.mark.parametrize("name", [WEIGHTS_NAME, CONFIG_NAME])
def test_symlinked_adapter_files_are_refused(tmp_path, name):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    elsewhere = tmp_path / f"elsewhere-{name}"
    (adapter / name).rename(elsewhere)
    (adapter / name).symlink_to(elsewhere)
    refuses(adapter, "symbolic link")


def test_a_symlinked_adapter_folder_is_fine(tmp_path):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    (tmp_path / "latest").symlink_to(adapter)
    load_adapter(tmp_path / "latest", build_model(TINY))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", [WEIGHTS_NAME, CONFIG_NAME])
def test_fifo_adapter_files_are_refused_without_waiting(tmp_path, name):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    (adapter / name).unlink()
    os.mkfifo(adapter / name)
    refuses(adapter, "not a regular file")


def test_a_huge_config_is_refused_unread(tmp_path):
    adapter = tiny_adapter(tmp_path, "state_offset_h")
    with open(adapter / CONFIG_NAME, "r+b") as f:
        f.truncate(65 << 20)
    refuses(adapter, "bytes, more than")


# -- adapter_config.json: structure and types ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "corrupt"),
        ("[]", "corrupt"),
        ('{"method": {"name": "lora", "lr": NaN}}', "corrupt"),
        ('{"method": {"name": "lora", "dropout": -Infinity}}', "corrupt"),
        ('{"method": {"name": "lora", "alpha": 1e400}}', "corrupt"),
        ('{"method": {"name": "lora", "name": "full"}}', "duplicate key"),
        ("[" * 50_000 + "]" * 50_000, "corrupt"),
    ],
)
def test_malformed_configs(tmp_path, text, expected):
    adapter = tiny_adapter(tmp_path, "lora")
    (adapter / CONFIG_NAME).write_text(text)
    refuses(adapter, expected)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: m["architecture"].__setitem__("n_layer", "abc"), "must be an integer"),
        (lambda m: m["architecture"].__setitem__("d_model", 1e7), "must be an integer"),
        (lambda m: m["architecture"].__setitem__("arch", "mamba3"), "not one of"),
        (lambda m: m["architecture"].pop("d_state"), "must hold exactly"),
        (lambda m: m.__setitem__("architecture", None), "must be a JSON object"),
        (lambda m: m.__setitem__("_target_", "os.system"), "unknown key '_target_'"),
        (lambda m: m.__setitem__("trainable", "all"), "must be a list"),
        (lambda m: m.__setitem__("trainable", [{"_target_": "os.system"}]), "must be a string"),
        (lambda m: m.__setitem__("base_model", ["x"]), "must be a JSON object"),
        (lambda m: m["method"].__setitem__("name", "os.system"), "unknown method"),
        (lambda m: m["method"].__setitem__("_target_", "os.system"), "has no option '_target_'"),
        (lambda m: m.__setitem__("method", "lora"), "corrupt"),
    ],
)
def test_config_structure_is_typed(tmp_path, edit, expected):
    adapter = tiny_adapter(tmp_path, "lora")
    edit_config(adapter, edit)
    refuses(adapter, expected)


# -- method options: types and ranges, before anything is allocated --------------------------------------------------
@pytest.mark.parametrize(
    ("method", "key", "value", "expected"),
    [
        ("state_offset_h", "rank", 1e9, "must be an integer"),
        ("state_offset_h", "rank", 10**9, "larger than the state offset (E, N) it factorises"),
        ("state_offset_h", "rank", 0, "out of range"),
        ("state_offset_h", "rank", True, "must be an integer"),
        ("state_offset_h", "lr", -1.0, "out of range"),
        ("lora", "r", 10**6, "larger than the mixer width d_inner"),
        ("lora", "r", "8", "must be an integer"),
        ("lora", "alpha", "big", "must be a number"),
        ("lora", "dropout", 1.0, "must lie in [0, 1)"),
        ("lora", "target_modules", [{"_target_": "os.system"}], "must be a string"),
        ("lora", "target_modules", ["x_proj"] * 17, "1 to 16"),
        ("lora", "target_modules", ["embedding"], "are not targets on mamba1"),
        ("prompt", "num_virtual_tokens", 10**9, "out of range"),
        ("prompt", "init", "os.system", "not one of"),
        ("prefix", "num_virtual_tokens", 10**9, "out of range"),
        ("additional_scan", "n", 10**9, "out of range"),
        ("additional_scan", "copy_column", 99, "out of range"),
        ("additional_scan", "A_init", "pickle", "not one of"),
        ("init_state", "conv_state", "yes", "true or false"),
        ("sdt", "selection", None, "without its stored selection"),
        ("sdt", "selection", [[[10**6], [[0]]]] * 2, "is not [channels"),
        ("sdt", "selection", [[[True], [[0]]]] * 2, "is not [channels"),
        ("sdt", "selection", [[[0], [[0]]]] * 2, "distinct channels"),  # counts: selective_dims' own check
        ("sdt", "freeze_channels", 2.0, "out of range"),
        ("sdlora", "lora_r", 10**6, "larger than"),
        ("sdlora", "lora_dropout", -0.5, "out of range"),
    ],
)
def test_method_options_are_bounded(tmp_path, method, key, value, expected):
    adapter = tiny_adapter(tmp_path, method)
    edit_config(adapter, lambda meta: meta["method"].__setitem__(key, value))
    start = time.perf_counter()
    refuses(adapter, expected)
    assert time.perf_counter() - start < 10  # refused before any allocation the options would ask for


def test_a_method_the_architecture_cannot_take_is_one_line(tmp_path):
    """A forged architecture record that matches a Mamba-2 base: prefix cannot be applied there (meta-device copy)."""
    adapter = tiny_adapter(tmp_path, "prefix")
    edit_config(adapter, lambda meta: meta.__setitem__("architecture", {**meta["architecture"], "arch": "mamba2"}))
    mamba2 = TINY2.__class__(**{**TINY2.to_dict(), "d_model": 16, "d_state": 4, "expand": 2})
    refuses(adapter, "prefix applies to mamba1, vim and gpt_neox models, not to mamba2", config=mamba2)


# the methods whose runs write adapters: the deep-S4 experiments' (stateft/s4) write results only
ADAPTER_METHODS = sorted(m for m, cls in METHOD_CONFIGS.items() if not cls.archs <= set(S4_ARCHS))


def test_every_method_option_has_a_bound():
    checks = _method_checks()
    for name in ADAPTER_METHODS:
        cls = METHOD_CONFIGS[name]
        missing = {f.name for f in dataclasses.fields(cls)} - set(checks) - {"name"}
        assert not missing, f"{name}: add a check for {missing} to stateft/adapters.py _method_checks"


def test_the_same_adapter_is_written_as_the_same_bytes(tmp_path):
    """Saved twice (safetensors' own writer orders __metadata__ differently each time): equal files, the header's
    metadata keys and tensors sorted, readable by safetensors itself."""
    first = tiny_adapter(tmp_path / "a", "lora").joinpath(WEIGHTS_NAME).read_bytes()
    second = tiny_adapter(tmp_path / "b", "lora").joinpath(WEIGHTS_NAME).read_bytes()
    assert first == second
    size = int.from_bytes(first[:8], "little")
    header = json.loads(first[8 : 8 + size])
    assert size % 8 == 0
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    assert list(header) == ["__metadata__", *sorted(load_file(tmp_path / "a" / "adapter" / WEIGHTS_NAME))]


def test_an_adapter_written_by_safetensors_itself_still_loads(tmp_path):
    """The reader takes safetensors' own layout too (tensors ordered by dtype alignment, metadata in any order)."""
    adapter = tiny_adapter(tmp_path, "lora")
    weights = adapter / WEIGHTS_NAME
    with open(weights, "rb") as handle:
        metadata = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))["__metadata__"]
    tensors = load_file(weights)
    save_file(tensors, str(weights), metadata=metadata)
    fresh = build_model(TINY, seed=1)
    names = load_adapter(adapter, fresh)
    params = dict(fresh.named_parameters())
    assert names
    assert all(torch.equal(params[n].detach(), tensors[n]) for n in names)


@pytest.mark.parametrize("method", ADAPTER_METHODS)
def test_every_method_round_trips(tmp_path, method):
    config = TINY if "mamba1" in METHOD_CONFIGS[method].archs else TINY2
    adapter = tiny_adapter(tmp_path, method, config=config)
    assert read_adapter_config(adapter)["method"]["name"] == method
    fresh = build_model(config, seed=1)
    names = load_adapter(adapter, fresh)
    saved = load_file(str(adapter / WEIGHTS_NAME))
    params = dict(fresh.named_parameters())
    assert all(torch.equal(params[n].detach(), saved[n]) for n in names)


# -- the base-model record: bounded before anything is built -----------------------------------------------------
def _plant_base(run, **fields):
    edit_config(run / "adapter", lambda meta: meta["base_model"].update(fields))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"d_model": 1e7}, "must be an integer"),
        ({"d_model": 10**7}, "out of range"),
        ({"n_layer": "abc"}, "must be an integer"),
        ({"vocab_size": -1}, "out of range"),
        ({"d_model": 64}, "conf/model/mamba-tiny.yaml says"),
        ({"dtype": "int8"}, "not one of"),
        ({"scan_impl": "os.system"}, "not one of"),
        ({"tokenizer": "attacker/tokenizer"}, "nor a path on this machine"),
        ({"_target_": "os.system"}, "unknown key '_target_'"),
        ({"name": None}, "must be a string"),
        ({"name": "custom", "d_model": 16384, "n_layer": 256, "vocab_size": 1 << 20}, "would have"),
        ({"name": "custom", "pretrained": True, "name_or_path": "attacker/mamba"}, "not a folder on this machine"),
    ],
)
def test_the_base_model_record_is_checked_before_building(run, tmp_path, fields, expected):
    _plant_base(run, **fields)
    start = time.perf_counter()
    evaluate_refuses(eval_overrides(tmp_path, adapter=run / "adapter"), expected)
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "eval").exists()


def test_every_architecture_field_of_a_base_model_record_is_checked():
    """A base-model record may carry every field of every backbone's config (stateft.models.config): each one has a
    type and range check, accepting a sound value (the default where JSON can hold it) and refusing a string."""
    from dataclasses import fields

    from stateft.app import run_config
    from stateft.models.config import MambaConfig
    from stateft.models.pythia import PythiaConfig
    from stateft.vision.config import VimConfig

    defaults = {f.name: f.default for cls in (VimConfig, PythiaConfig, MambaConfig) for f in fields(cls)}
    defaults.update(d_model=16, n_layer=2, n_head=4, arch="mamba1", dt_rank=4, intermediate_size=64, dt_limit=(0, 9.5))
    assert set(run_config._arch_keys()) == set(defaults)
    for key, value in defaults.items():
        value = list(value) if isinstance(value, tuple) else value
        assert run_config._check_model_value(key, value, "x") == value
        with pytest.raises(UserError, match=f"x.{key}"):
            run_config._check_model_value(key, "$" + "{oc.env:HOME}", "x")


def test_a_base_model_record_of_ours_must_agree_on_every_field():
    """A record naming one of our models with another norm epsilon is another network: refused, not dropped."""
    ours = {"name": "mamba-130m", "name_or_path": "state-spaces/mamba-130m", "d_model": 768, "n_layer": 24}
    assert base_model_node({**ours, "rms_norm_eps": 1e-5, "dt_rank": 48}, "x").d_model == 768  # the same numbers
    with pytest.raises(UserError, match="rms_norm_eps=1e-06, but conf/model/mamba-130m.yaml says rms_norm_eps=1e-05"):
        base_model_node({**ours, "rms_norm_eps": 1e-6}, "x")
    with pytest.raises(UserError, match="not a setting of a mamba1 model"):
        base_model_node({**ours, "n_head": 12}, "x")


def test_base_model_locations_must_be_ours_or_local(tmp_path):
    ours = {"name": "mamba-130m", "name_or_path": "state-spaces/mamba-130m", "d_model": 768, "n_layer": 24}
    assert base_model_node(ours, "x").name_or_path == "state-spaces/mamba-130m"
    with pytest.raises(UserError, match="nor a path on this machine"):
        base_model_node({**ours, "name_or_path": "attacker/mamba-130m"}, "x")
    (tmp_path / "mamba").mkdir()
    assert base_model_node({**ours, "name_or_path": str(tmp_path / "mamba")}, "x").name_or_path == str(
        tmp_path / "mamba"
    )
    node = base_model_node({**ours, "scan_impl": "triton", "recompute": True, "dtype": "bfloat16"}, "x")
    assert (node.scan_impl, node.recompute, node.dtype) == ("auto", False, "bfloat16")  # where it runs stays ours


def test_a_small_foreign_base_model_is_built():
    record = {"name": "my-mamba", "d_model": 16, "n_layer": 2, "vocab_size": 50277, "d_state": 4, "dt_rank": 4}
    from stateft.models.loading import config_from_model_cfg

    node = base_model_node(record, "x")
    assert (node.pretrained, node.scan_impl, node.tokenizer) == (False, "auto", "EleutherAI/gpt-neox-20b")
    assert config_from_model_cfg(node) == TINY.__class__(**{k: v for k, v in record.items() if k != "name"})
    with pytest.raises(UserError, match="64 embeddings for 50277 tokens"):
        base_model_node({**record, "vocab_size": 64}, "x")
    with pytest.raises(UserError, match="do not split into ngroups"):
        base_model_node({**record, "arch": "mamba2", "headdim": 7}, "x")


# -- through the command line: one line, exit 2, nothing run ------------------------------------------------------
def test_cli_refuses_a_huge_base_model_in_one_line(run, tmp_path):
    _plant_base(run, d_model=1e7)
    assert_one_error_line(eval_cli(tmp_path, f"adapter={run / 'adapter'}"), "d_model", "must be an integer")


def test_cli_refuses_flipped_bytes_in_one_line(run, tmp_path):
    weights = run / "adapter" / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    for i in range(1, 101):
        data[-i] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert_one_error_line(eval_cli(tmp_path, f"adapter={run / 'adapter'}"), "digest")


def test_cli_refuses_a_pickle_as_tensors_in_one_line(run, tmp_path, marker):
    (run / "adapter" / WEIGHTS_NAME).unlink()
    planted_pickle(run / "adapter", marker, WEIGHTS_NAME)
    assert_one_error_line(eval_cli(tmp_path, f"adapter={run / 'adapter'}"), "not a safetensors file")
    assert not marker.exists()


def test_cli_refuses_a_huge_rank_in_one_line(run, tmp_path):
    edit_config(run / "adapter", lambda meta: meta["method"].__setitem__("rank", 10**9))
    assert_one_error_line(eval_cli(tmp_path, f"adapter={run / 'adapter'}"), "rank", "factorises")
