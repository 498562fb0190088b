"""Pulling adapters from the (fake) hub: every adapter type round-trips, revisions pin, only data files arrive, and
every failure is one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from stateft.adapters import load_adapter, save_adapter
from stateft.errors import UserError
from stateft.hub import ALLOWED, HubRef, parse_ref, pull, push, resolve_adapter
from stateft.models.loading import build_model
from tests.methods.test_methods import CASES, CONFIGS, IDS, batch, method_cfg, perturb, prepared
from tests.models.tiny_pythia import PEFT, tiny_pythia


def one_line(err: pytest.ExceptionInfo, *patterns: str) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    for pattern in patterns:
        assert pattern in message, message
    return message


def mamba_adapter(folder: Path, arch: str = "mamba1", name: str = "state_offset_h", extra: dict | None = None):
    """A tiny Mamba with ``name`` applied and moved off its init, saved to ``folder``; the model."""
    model, names = prepared(arch, name, extra or {})
    perturb(model, names)
    save_adapter(folder, model, method_cfg(name, **(extra or {})), names, base_model={"name": "tiny"})
    return model.eval()


# -- names ----------------------------------------------------------------------------------------------------------
def test_what_names_a_hub_adapter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_ref("hf://me/adapter") == HubRef("me/adapter")
    assert parse_ref("hf://me/adapter@v1.2") == HubRef("me/adapter", "v1.2")
    assert parse_ref("hf://me/a@refs/pr/3") == HubRef("me/a", "refs/pr/3")
    assert parse_ref("me/adapter@" + "a" * 40) == HubRef("me/adapter", "a" * 40)
    assert parse_ref("me/adapter") == HubRef("me/adapter")  # no local folder of that name
    (tmp_path / "me" / "adapter").mkdir(parents=True)
    assert parse_ref("me/adapter") is None  # a local folder wins over a hub id
    for local in ("outputs/x/adapter", "./me/adapter", "/abs/adapter", "~/adapter", "adapter", "a b/c"):
        assert parse_ref(local) is None, local
    for bad in ("hf://me", "hf://me/a/b", "hf://me/a@", "hf://-me/a", "hf://me/a@x..y", "hf://me/a b", "hf://me--x/a"):
        with pytest.raises(UserError) as err:
            parse_ref(bad)
        one_line(err, bad[:20])


# -- round trips ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "name", "extra"), CASES, ids=IDS)
def test_push_pull_load_gives_identical_logits(hub, tmp_path, arch, name, extra):
    model = mamba_adapter(tmp_path / "adapter", arch, name, extra)
    push(tmp_path / "adapter", "me/tiny")
    folder = pull("hf://me/tiny")
    assert not any(p.is_symlink() for p in folder.iterdir())  # the HF cache's links are not what the reader sees
    fresh = build_model(CONFIGS[arch], seed=0).eval()
    load_adapter(folder, fresh)
    ids = batch(3)["input_ids"]
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))


@pytest.mark.parametrize("method", PEFT)
def test_push_pull_load_gives_identical_logits_for_a_transformer(hub, tmp_path, method):
    model = tiny_pythia(method)
    save_adapter(tmp_path / "adapter", model, base_model={"name": "tiny"})
    push(tmp_path / "adapter", "me/pythia")
    assert "stateft_adapter.json" in hub.called("upload_folder")[0]["files"]  # peft's format and stateft's record
    fresh = tiny_pythia()
    load_adapter(pull("me/pythia"), fresh)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))


def test_only_data_files_are_asked_for_and_arrive(hub, tmp_path):
    mamba_adapter(tmp_path / "adapter")
    push(tmp_path / "adapter", "me/tiny")
    repo = hub.repos["me/tiny"]
    files = dict(repo.commits[repo.branches["main"]])  # a repository that also holds code, pickles, nested files
    files.update({"pytorch_model.bin": b"pickle", "modeling.py": b"import os", "sub/adapter_config.json": b"{}"})
    hub.commit("me/tiny", files)
    folder = pull("hf://me/tiny")
    call = hub.called("snapshot_download")[-1]
    assert call["allow_patterns"] == list(ALLOWED)
    assert call["ignore_patterns"] == ["*/*"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]


# -- revisions --------------------------------------------------------------------------------------------------------
def test_a_revision_pins_the_files(hub, tmp_path):
    first = mamba_adapter(tmp_path / "one")
    v1 = push(tmp_path / "one", "me/tiny")
    model, names = prepared("mamba1", "state_offset_h", {})
    with torch.no_grad():
        for name in names:
            dict(model.named_parameters())[name].fill_(0.7)
    save_adapter(tmp_path / "two", model, method_cfg("state_offset_h"), names, base_model={"name": "tiny"})
    v2 = push(tmp_path / "two", "me/tiny")
    dev = push(tmp_path / "one", "me/tiny", revision="dev")
    assert hub.called("create_branch")[-1]["branch"] == "dev"
    assert hub.called("upload_folder")[-1]["revision"] == "dev"
    assert v1.commit != v2.commit

    def loaded(spec: str) -> torch.nn.Module:
        fresh = build_model(CONFIGS["mamba1"], seed=0).eval()
        load_adapter(pull(spec), fresh)
        return fresh

    ids = batch(3)["input_ids"]
    with torch.no_grad():
        want_one, want_two = first(ids), model.eval()(ids)
        assert torch.equal(loaded(f"hf://me/tiny@{v1.commit}")(ids), want_one)
        assert hub.called("snapshot_download")[-1]["revision"] == v1.commit
        assert torch.equal(loaded("hf://me/tiny")(ids), want_two)  # main: the newest push
        assert hub.called("snapshot_download")[-1]["revision"] is None
        assert torch.equal(loaded("me/tiny@dev")(ids), want_one)
        assert hub.called("snapshot_download")[-1]["revision"] == "dev"
    assert resolve_adapter(f"hf://me/tiny@{v1.commit}")[1] == f"hf://me/tiny@{v1.commit}"
    assert resolve_adapter("hf://me/tiny@dev")[1] == f"hf://me/tiny@{dev.commit}"  # recorded as the exact commit

    with pytest.raises(UserError) as err:
        pull("hf://me/tiny@nope")
    one_line(err, "no revision 'nope'")


# -- hostile downloads ----------------------------------------------------------------------------------------------
def _planted(snapshot: Path, kind: str, marker: Path) -> None:
    from tests.security.conftest import planted_pickle

    if kind == "pickle":
        planted_pickle(snapshot, marker, "pytorch_model.bin")
    elif kind == "python":
        (snapshot / "modeling_stateft.py").write_text(f"open({str(marker)!r}, 'w')\n")
    elif kind == "pt":
        planted_pickle(snapshot, marker, "adapter.pt")
    elif kind == "folder":
        (snapshot / "sub").mkdir()
        (snapshot / "sub" / "adapter_config.json").write_text("{}")
    elif kind == "outside_link":
        (marker.parent / "elsewhere.json").write_text("{}")
        os.symlink(marker.parent / "elsewhere.json", snapshot / "extra.json")
    elif kind == "fifo":
        os.mkfifo(snapshot / "extra.json")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("pickle", "'pytorch_model.bin', which stateft never loads"),
        ("python", "'modeling_stateft.py', which stateft never loads"),
        ("pt", "'adapter.pt', which stateft never loads"),
        ("folder", "'sub', which stateft never loads"),
        ("outside_link", "links outside the repository's blobs"),
        ("fifo", "not a regular file"),
    ],
)
def test_a_cached_snapshot_holding_anything_else_is_refused(hub, tmp_path, kind, message):
    """The real cache keeps files an earlier download (another tool, other patterns) left in a snapshot folder."""
    mamba_adapter(tmp_path / "adapter")
    push(tmp_path / "adapter", "me/tiny")
    snapshot = Path(hub.snapshot_download("me/tiny", allow_patterns=list(ALLOWED)))
    marker = tmp_path / "MARKER"
    _planted(snapshot, kind, marker)
    with pytest.raises(UserError) as err:
        pull("hf://me/tiny")
    one_line(err, "hf://me/tiny", message)
    assert not marker.exists()
    assert not (tmp_path / "stateft_cache" / "hub").exists()  # nothing was linked for the reader


def test_a_repository_that_is_not_an_adapter(hub):
    hub.commit("me/model", {"README.md": b"# a model", "config.json": b"{}", "model.safetensors": b""})
    with pytest.raises(UserError) as err:
        pull("hf://me/model")
    one_line(err, "hf://me/model is not an adapter repository", "no adapter_config.json")


def test_a_damaged_download_is_refused_by_the_adapter_reader(hub, tmp_path):
    mamba_adapter(tmp_path / "adapter")
    push(tmp_path / "adapter", "me/tiny")
    blob = next(p for p in Path(pull("me/tiny")).iterdir() if p.name == "adapter_model.safetensors")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    repo = hub.repos["me/tiny"]
    files = dict(repo.commits[repo.branches["main"]])
    files["adapter_model.safetensors"] = bytes(data)
    hub.commit("me/tiny", files)
    with pytest.raises(UserError) as err:
        load_adapter(pull("me/tiny"), build_model(CONFIGS["mamba1"], seed=0))
    one_line(err, "do not match the digest")


# -- unreachable, missing -------------------------------------------------------------------------------------------
def test_a_missing_repository_is_one_line(hub):
    with pytest.raises(UserError) as err:
        pull("hf://nobody/nothing")
    one_line(err, "hf://nobody/nothing: no such repository on the hub, or it is private", "adapter=/path/to/adapter")


def test_offline_without_a_cached_copy_says_what_to_do(tmp_path):
    """The real huggingface_hub, HF_HUB_OFFLINE=1 (set for the whole suite) and an empty cache."""
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE
    with pytest.raises(UserError) as err:
        pull("hf://nobody/nothing@main")
    one_line(err, "HF_HUB_OFFLINE=1", "not in the HF cache", str(tmp_path / "hf_cache"), "adapter=/path/to/adapter")


def test_an_unreachable_hub_says_what_to_do(hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.unreachable = True
    with pytest.raises(UserError) as err:
        pull("me/tiny")
    one_line(err, "cannot download hf://me/tiny: the hub cannot be reached", "adapter=/path/to/adapter")


def test_the_real_offline_cache_serves_a_pulled_adapter(hub, tmp_path, monkeypatch):
    """What the fake wrote is the real cache layout: huggingface_hub's own snapshot_download (offline) reads it."""
    import huggingface_hub
    from huggingface_hub import _snapshot_download

    model = mamba_adapter(tmp_path / "adapter")
    pushed = push(tmp_path / "adapter", "me/tiny")
    online = pull("hf://me/tiny")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", _snapshot_download.snapshot_download)
    offline = pull("hf://me/tiny")
    assert offline == online
    assert offline.name == pushed.commit
    assert pull(f"hf://me/tiny@{pushed.commit}") == online
    fresh = build_model(CONFIGS["mamba1"], seed=0).eval()
    load_adapter(offline, fresh)
    ids = batch(3)["input_ids"]
    with torch.no_grad():
        assert torch.equal(fresh(ids), model(ids))
