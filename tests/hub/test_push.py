"""Pushing adapters to the (fake) hub: the files, the model card, the options, the failures; train.py's hub.push_to."""

from __future__ import annotations

import json
import shlex

import pytest
import yaml

from stateft.adapters import save_adapter
from stateft.app.checks import compose_checked
from stateft.errors import UserError
from stateft.hub import main, push
from stateft.hub_card import COMMAND_KEYS, train_command
from tests.hub.conftest import run_overrides
from tests.hub.test_pull import one_line
from tests.models.tiny_pythia import tiny_pythia


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def uploaded(hub, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    repo = hub.repos[repo_id]
    return repo.commits[repo.branches[revision]]


def test_push_uploads_the_adapter_and_a_model_card(hub, run):
    adapter = run / "adapter"
    pushed = push(adapter, "me/rte-state-offset")
    files = uploaded(hub, "me/rte-state-offset")
    expected = ["adapter_config.json", "adapter_model.safetensors", "run_config.json"]
    assert sorted(files) == sorted([".gitattributes", "README.md", *expected])
    for name in expected:
        assert files[name] == (adapter / name).read_bytes()  # byte for byte: the digests still hold
    assert pushed.commit == hub.repos["me/rte-state-offset"].branches["main"]
    assert pushed.lines()[1].endswith(f"eval.py adapter=hf://me/rte-state-offset@{pushed.commit}")

    card = files["README.md"].decode()
    metrics = json.loads((run / "metrics.json").read_text())
    meta = front_matter(card)
    assert meta["library_name"] == "stateft"
    assert meta["license"] == "apache-2.0"
    assert "state_offset_h" in meta["tags"]
    assert "base_model" not in meta
    assert "A `state_offset_h` adapter for `mamba-tiny`" in card
    assert f"| trainable parameters | {metrics['params/trainable']:,} (" in card
    assert f"of {metrics['params/total']:,})" in card
    assert "| dataset | `glue_rte` |" in card
    assert f"| test/accuracy | {metrics['test/accuracy']:.4f} |" in card
    assert "python train.py model=mamba-tiny method=state_offset_h dataset=glue_rte" in card
    assert "python eval.py adapter=hf://me/rte-state-offset" in card
    assert "folder = pull('hf://me/rte-state-offset')" in card
    assert "## License\n\napache-2.0" in card

    call = hub.called("create_repo")[0]
    assert call["repo_id"] == "me/rte-state-offset"
    assert call["private"] is False
    assert call["exist_ok"] is True
    assert hub.called("upload_folder")[0]["revision"] is None
    assert not hub.called("create_branch")


def test_the_cards_python_loads_the_adapter(hub, run):
    """The card's Python block, run as a user would paste it, builds the base model and gives the adapter's logits."""
    import torch

    from stateft.adapters import load_adapter
    from stateft.app.run_config import base_model_node, our_config
    from stateft.models.loading import model_from_config

    push(run / "adapter", "me/x")
    card = uploaded(hub, "me/x")["README.md"].decode()
    code = card.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # our own generated card, in a test
    reference = model_from_config(our_config("model", "mamba-tiny"))
    load_adapter(run / "adapter", reference)
    assert base_model_node(scope["record"], "x").name == "mamba-tiny"
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.equal(scope["model"].eval()(ids), reference.eval()(ids))


def test_private_revision_license_and_message_reach_the_hub(hub, run):
    main(["push", str(run / "adapter"), "me/x", "--private", "--revision", "dev", "--license", "mit",
          "--message", "first"])  # fmt: skip
    assert hub.called("create_repo")[0]["private"] is True
    assert hub.called("create_branch")[0]["branch"] == "dev"
    call = hub.called("upload_folder")[0]
    assert call["revision"] == "dev"
    assert call["commit_message"] == "first"
    assert sorted(uploaded(hub, "me/x")) == [".gitattributes"]  # main untouched
    assert front_matter(uploaded(hub, "me/x", "dev")["README.md"].decode())["license"] == "mit"


def test_the_card_of_a_pretrained_base_and_of_a_transformer(hub, tmp_path):
    model = tiny_pythia("lora")
    base = {"name": "pythia-160m", "name_or_path": "EleutherAI/pythia-160m", "pretrained": True}
    save_adapter(tmp_path / "adapter", model, base_model=base)
    push(tmp_path / "adapter", "me/pythia-lora")
    card = uploaded(hub, "me/pythia-lora")["README.md"].decode()
    assert front_matter(card)["base_model"] == "EleutherAI/pythia-160m"
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert f"| trainable parameters | {count:,} |" in card  # no metrics.json beside the folder: no share
    assert "PeftModel.from_pretrained(base, 'me/pythia-lora')" in card
    assert "## Results" not in card
    assert "## Training" not in card


def test_push_refuses_a_folder_that_is_not_an_adapter_before_any_call(hub, tmp_path, run):
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "empty": "not an adapter directory",
        tmp_path / "missing": "is not a folder",
        run: "not an adapter directory",  # the run folder, not its adapter/
    }
    for folder, message in cases.items():
        with pytest.raises(UserError) as err:
            push(folder, "me/x")
        one_line(err, message)
    (run / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(UserError) as err:
        push(run / "adapter", "me/x")
    one_line(err, "has no adapter_model.safetensors")
    for bad_id in ("me", "me/x@dev", "me/x/y", "-me/x"):
        with pytest.raises(UserError) as err:
            push(tmp_path / "empty", bad_id)
        one_line(err)
    assert not hub.called("create_repo")


def test_push_sends_only_data_files_and_replaces_an_earlier_adapter(hub, tmp_path, run):
    from tests.security.conftest import planted_pickle

    adapter = run / "adapter"
    planted_pickle(adapter, tmp_path / "MARKER", "optimizer.pt")
    (adapter / "notes.py").write_text("print('hi')")
    (adapter / "README.md").write_text("my own notes")  # the card is generated, never a file of the folder
    save_adapter(tmp_path / "peft", tiny_pythia("prompt"), base_model={"name": "tiny"})
    push(tmp_path / "peft", "me/x")
    assert "stateft_adapter.json" in uploaded(hub, "me/x")
    push(adapter, "me/x")
    files = uploaded(hub, "me/x")
    assert sorted(files) == [".gitattributes", "README.md", "adapter_config.json", "adapter_model.safetensors",
                             "run_config.json"]  # fmt: skip
    assert files["README.md"] != b"my own notes"
    assert hub.called("upload_folder")[-1]["delete_patterns"] == hub.called("upload_folder")[-1]["allow_patterns"]


def test_a_failed_push_is_one_line(hub, run, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.unreachable = True
    with pytest.raises(UserError) as err:
        push(run / "adapter", "me/x")
    one_line(err, "cannot push to hf://me/x", "Connection refused")


def test_the_training_command_composes_to_the_run_it_came_from(run):
    """The card's command, parsed by the shell and composed by Hydra, gives the run's method and COMMAND_KEYS."""
    run_config = json.loads((run / "adapter" / "run_config.json").read_text())
    run_config["method"]["lr"] = 0.0125
    run_config["optim"]["lr"] = 0.0125
    run_config["dataset"]["max_length"] = 77
    argv = shlex.split(train_command(run_config))
    assert argv[:2] == ["python", "train.py"]
    cfg = compose_checked("train", [*argv[2:], "trainer=debug", "logger=none"])
    for key in ("model.name", "method.name", "dataset.name", "method.rank", *COMMAND_KEYS):
        ours, theirs = cfg, run_config
        for part in key.split("."):
            ours, theirs = ours[part], theirs[part]
        assert ours == theirs, key


def test_hostile_values_cannot_change_the_card(hub, run):
    """A value holding a newline, '---', '|' or backticks stays inside its cell."""
    meta = json.loads((run / "adapter" / "run_config.json").read_text())
    meta["dataset"]["name"] = "rte\n---\nlicense: evil\n| x | `y` |\n```"
    (run / "adapter" / "run_config.json").write_text(json.dumps(meta))
    push(run / "adapter", "me/x")
    card = uploaded(hub, "me/x")["README.md"].decode()
    head = front_matter(card)
    assert head["license"] == "apache-2.0"
    assert card.count("\n---\n") == 1
    assert card.count("```") % 2 == 0
    assert "| dataset | `rte --- license: evil / x / 'y' / '''` |" in card


# -- train.py hub.push_to -------------------------------------------------------------------------------------------
def test_train_pushes_the_best_adapter_at_the_end(hub, tmp_path, capsys):
    from stateft.app.training import train

    out = tmp_path / "run"
    train(compose_checked("train", [*run_overrides(out), "hub.push_to=me/trained", "hub.revision=v1"]))
    files = uploaded(hub, "me/trained", "v1")
    for name in ("adapter_config.json", "adapter_model.safetensors", "run_config.json"):
        assert files[name] == (out / "adapter" / name).read_bytes()
    assert "| test/accuracy |" in files["README.md"].decode()  # metrics.json was written before the push
    assert hub.called("create_repo")[0]["private"] is True  # the default for a push from a run
    commit = hub.repos["me/trained"].branches["v1"]
    assert f"evaluate with:   python eval.py adapter=hf://me/trained@{commit}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hub.push_to=just-a-name", "not a hub adapter: expected hf://<owner>/<name>"),
        ("hub.push_to=me/x@dev", "set the branch with hub.revision"),
        ("hub.revision='a b'", "hub.revision must be a branch name"),
        ("hub.private=maybe", "hub.private must be true or false"),
        ("hub.license='Apache 2'", "hub.license must be a license id"),
    ],
)
def test_a_bad_hub_setting_stops_the_run_before_training(hub, tmp_path, override, message):
    from stateft.app.training import train

    overrides = [*run_overrides(tmp_path / "run"), override]
    if not override.startswith("hub.push_to"):
        overrides.append("hub.push_to=me/x")
    with pytest.raises(UserError) as err:
        train(compose_checked("train", overrides))
    one_line(err, message)
    assert not (tmp_path / "run").exists()
    assert not hub.calls


def test_a_failed_push_after_training_says_the_run_is_safe(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from stateft.app.training import train

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.unreachable = True
    out = tmp_path / "run"
    with pytest.raises(UserError) as err:
        train(compose_checked("train", [*run_overrides(out), "hub.push_to=me/x"]))
    one_line(err, f"the run finished and its files are in {out}", f"python -m stateft.hub push {out / 'adapter'} me/x")
    assert (out / "metrics.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_train_without_push_to_calls_no_hub(hub, tmp_path):
    from stateft.app.training import train

    train(compose_checked("train", run_overrides(tmp_path / "run")))
    assert not hub.calls
    assert json.loads((tmp_path / "run" / "adapter" / "run_config.json").read_text())["hub"]["push_to"] is None


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    """``python -m stateft.hub`` as a user runs it: the real huggingface_hub, offline, an empty cache."""
    import os
    import subprocess
    import sys

    from tests.hub.conftest import REPO
    from tests.security.conftest import assert_one_error_line

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    for args, message in (
        (["pull", "hf://nobody/nothing"], "HF_HUB_OFFLINE=1 and it is not in the HF cache"),
        (["push", str(tmp_path), "me/x"], "not an adapter directory"),
        (["pull", "hf://nobody"], "expected hf://<owner>/<name>"),
    ):
        result = subprocess.run([sys.executable, "-m", "stateft.hub", *args], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert_one_error_line(result, message)
