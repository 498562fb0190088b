"""run_config.json of a shared adapter or predictions folder is data: the dataset is OUR config of the name it gives,
with checked options; a planted ``_target_``, anywhere, never runs; anything else it might say is refused in one line.
"""

from __future__ import annotations

import os

import pytest

from stateft.app.run_config import (
    OURS_ONLY,
    SAME_AS_OURS,
    _dataset_options,
    dataset_from_run_config,
    dataset_names,
    our_config,
)
from stateft.errors import UserError
from tests.security.conftest import (
    assert_one_error_line,
    eval_cli,
    eval_overrides,
    evaluate_refuses,
    payload_targets,
    read_json,
    write_json,
)


def _modes(run, tmp_path):
    """Both ways eval.py reads a run config: an adapter directory, and a predictions file beside it."""
    return {
        "adapter": eval_overrides(tmp_path, adapter=run / "adapter"),
        "predictions": eval_overrides(tmp_path, predictions=run / "predictions_test.jsonl"),
    }


def _plant(run, edit) -> None:
    path = run / "adapter" / "run_config.json"
    config = read_json(path)
    edit(config)
    write_json(path, config)


@pytest.mark.parametrize("mode", ["adapter", "predictions"])
@pytest.mark.parametrize(
    "target", ["os.system", "subprocess.run", "torch.load", "builtins.open", "shutil.copyfile", "sqlite3.connect",
               "builtins.exec", "partial"],
)  # fmt: skip
def test_planted_target_of_the_dataset_never_runs(run, tmp_path, marker, mode, target):
    node = payload_targets(tmp_path, marker)[target]

    def edit(config):
        config["dataset"] = {**config["dataset"], **node}

    _plant(run, edit)
    evaluate_refuses(_modes(run, tmp_path)[mode], "dataset.")
    assert not marker.exists()
    assert not (tmp_path / "eval").exists()  # nothing written either


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("path", "must be a string"),  # a node where a value is due
        ("max_length", "must be an integer"),
        ("evil", "no such option"),  # a new key holding a node
        ("_args_", "no such option"),
        ("_partial_", "no such option"),
        ("_recursive_", "no such option"),
        ("_convert_", "no such option"),
    ],
)
def test_nested_targets_are_refused(run, tmp_path, marker, where, expected):
    node = payload_targets(tmp_path, marker)["os.system"]
    _plant(run, lambda config: config["dataset"].__setitem__(where, node))
    evaluate_refuses(_modes(run, tmp_path)["predictions"], expected)
    _plant(run, lambda config: config["dataset"].__setitem__(where, [1, node]))
    evaluate_refuses(_modes(run, tmp_path)["adapter"])
    assert not marker.exists()


@pytest.mark.parametrize("block", ["model", "trainer", "method", "optim", "top"])
def test_targets_in_blocks_eval_never_reads_stay_inert(run, tmp_path, marker, block):
    """eval.py reads only the dataset block (and only as data): a payload elsewhere is never looked at."""
    nodes = payload_targets(tmp_path, marker)

    def edit(config):
        if block == "top":
            config.update(nodes["os.system"])
        else:
            config[block] = {**nodes["os.system"], "nested": nodes["builtins.open"], "list": [nodes["torch.load"]]}

    _plant(run, edit)
    from stateft.app.checks import compose_checked
    from stateft.app.evaluation import evaluate

    metrics = evaluate(compose_checked("eval", _modes(run, tmp_path)["predictions"]))
    assert metrics["test/num_scored"] > 0
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${oc.env:HOME}", "interpolations"),
        ("${oc.decode:'{_target_: os.system, command: touch MARKER}'}", "interpolations"),
        ("a\x00b", "not a plausible value"),
        ("???", "interpolations"),
        ("x" * 5000, "not a plausible value"),
    ],
)
def test_strings_are_never_interpreted(run, tmp_path, marker, value, expected):
    _plant(run, lambda config: config["dataset"].__setitem__("path", value))
    evaluate_refuses(_modes(run, tmp_path)["predictions"], expected)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("max_length", "abc", "must be an integer"),
        ("max_length", 1536.0, "must be an integer"),
        ("max_length", True, "must be an integer"),
        ("max_length", 10**12, "out of range"),
        ("num_beams", 10**9, "out of range"),
        ("eval_batch_size", 0, "out of range"),
        ("seed", -1, "out of range"),
        ("protocol", "hack", "not one of"),
        ("prefix_tokenization", None, "must be a string"),
        ("drop_out_of_class", "yes", "true or false"),
        ("metric", "a b", "metric name"),
        ("name", "glue_base", "not one of ours"),
        ("name", "demo", "not one of ours"),
        ("name", "../../etc/passwd", "not one of ours"),
        ("name", ["glue_rte"], "not one of ours"),
        ("task", "mnli", "differs from ours"),
        ("hub_id", "attacker/data", "no such option"),  # GLUE's hub id is not an option at all
        ("tokenizer", "attacker/tokenizer", "differs from ours"),
        ("semantics", "original", "no such option"),  # a Spider option on GLUE
    ],
)
def test_options_are_typed_and_bounded(run, tmp_path, key, value, expected):
    _plant(run, lambda config: config["dataset"].__setitem__(key, value))
    evaluate_refuses(_modes(run, tmp_path)["predictions"], expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"dataset": {"name": "glue_rte", "max_length": NaN}}', "corrupt"),
        ('{"dataset": {"name": "glue_rte", "max_length": Infinity}}', "corrupt"),
        ('{"dataset": {"name": "glue_rte", "timeout": 1e999}}', "corrupt"),
        ('{"dataset": {"name": "glue_rte", "name": "spider"}}', "duplicate key"),
        ("[" * 100_000 + "]" * 100_000, "corrupt"),
        ('["dataset"]', "must be a JSON object"),
        ('{"dataset": "glue_rte"}', "must be a JSON object"),
        ('{"model": {}}', "names no dataset"),
        (b"\xff\xfe", "corrupt"),
    ],
)
def test_malformed_run_configs(run, tmp_path, text, expected):
    (run / "adapter" / "run_config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    evaluate_refuses(_modes(run, tmp_path)["predictions"], expected)


def test_a_huge_run_config_is_refused_unread(run, tmp_path):
    with open(run / "adapter" / "run_config.json", "wb") as f:
        f.truncate(17 << 20)  # sparse: 17 MiB of zeros
    evaluate_refuses(_modes(run, tmp_path)["predictions"], "bytes")


def test_symlinked_run_config_is_refused(run, tmp_path):
    secret = tmp_path / "elsewhere.json"
    (run / "adapter" / "run_config.json").rename(secret)
    (run / "adapter" / "run_config.json").symlink_to(secret)
    evaluate_refuses(_modes(run, tmp_path)["predictions"], "symbolic link")
    evaluate_refuses(_modes(run, tmp_path)["adapter"], "symbolic link")


@pytest.mark.timeout(60)
def test_fifo_run_config_is_refused_without_waiting(run, tmp_path):
    (run / "adapter" / "run_config.json").unlink()
    os.mkfifo(run / "adapter" / "run_config.json")
    evaluate_refuses(_modes(run, tmp_path)["predictions"], "not a regular file")


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [("samsum", "hub_id", "attacker/samsum"), ("dart", "hub_revision", "refs/pr/666"), ("spider", "task", "x")],
)
def test_downloads_and_code_are_ours_only(name, key, value):
    block = {**our_config("dataset", name), key: value}
    expected = "no such option" if key not in our_config("dataset", name) else "differs from ours"
    with pytest.raises(UserError, match=expected):
        dataset_from_run_config({"dataset": block}, "x")


def test_where_we_write_stays_ours(run, tmp_path):
    """A foreign cache_dir and num_workers are checked, then ignored: the cache goes where this machine keeps it."""
    elsewhere = tmp_path / "their_cache"
    _plant(run, lambda config: config["dataset"].update(cache_dir=str(elsewhere), num_workers=64))
    from stateft.app.checks import compose_checked
    from stateft.app.evaluation import evaluate

    metrics = evaluate(compose_checked("eval", _modes(run, tmp_path)["predictions"]))
    assert metrics["test/num_scored"] > 0
    assert not elsewhere.exists()
    spec = dataset_from_run_config(read_json(run / "adapter" / "run_config.json"), "x")
    assert spec.node.cache_dir == our_config("dataset", "glue_rte")["cache_dir"]
    assert spec.node.num_workers == 0


def test_options_of_a_legit_run_config_are_taken(run):
    config = read_json(run / "adapter" / "run_config.json")
    config["dataset"].update(max_eval_examples=3, num_beams=2, prefix_tokenization="joint", drop_out_of_class=True)
    spec = dataset_from_run_config(config, "x")
    assert spec.node._target_ == "stateft.data.glue.GlueDataModule"
    assert (spec.node.max_eval_examples, spec.node.num_beams) == (3, 2)
    assert (spec.node.prefix_tokenization, spec.node.drop_out_of_class) == ("joint", True)
    assert spec.node.path == config["dataset"]["path"]


def test_the_users_own_dataset_on_the_command_line_is_not_checked_against_the_folder(run, tmp_path, marker):
    """dataset=... on the command line: the folder's run config is not read at all."""
    from stateft.app.checks import compose_checked
    from stateft.app.evaluation import evaluate
    from tests.security.conftest import FIXTURES

    _plant(run, lambda config: config["dataset"].update(payload_targets(tmp_path, marker)["os.system"]))
    overrides = _modes(run, tmp_path)["predictions"] + ["dataset=glue_rte", f"dataset.path={FIXTURES / 'glue_rte'}"]
    assert evaluate(compose_checked("eval", overrides))["test/num_scored"] > 0
    assert not marker.exists()


# -- the tables stay complete --------------------------------------------------------------------------------------
def test_every_dataset_option_of_ours_has_a_rule():
    known = set(_dataset_options()) | set(OURS_ONLY) | set(SAME_AS_OURS)

    for name in dataset_names():
        missing = set(our_config("dataset", name)) - known
        assert not missing, f"conf/dataset/{name}.yaml: add {missing} to stateft/app/run_config.py"


@pytest.mark.parametrize("group", ["dataset", "model"])
def test_our_configs_compose_as_hydra_does(group):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from stateft.app.checks import CONF_DIR, group_options

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for name in group_options(group):
            composed = OmegaConf.to_container(
                compose("eval", [f"{group}={name}", "output_dir=/tmp/x"])[group], resolve=True
            )
            ours = dict(our_config(group, name))
            # cache_dir (and the deep-S4 pretrain_cache) follow $STATEFT_CACHE_DIR when the config resolves, which
            # test sessions change between files
            for key in ("cache_dir", "pretrain_cache"):
                ours.pop(key, None)
                composed.pop(key, None)
            assert ours == composed, name
    GlobalHydra.instance().clear()


def test_dataset_names_are_the_real_datasets():
    names = dataset_names()
    assert {"glue_rte", "glue_mnli", "spider", "dart", "samsum"} <= set(names)
    assert "glue_base" not in names
    assert "demo" not in names


def test_the_cli_refuses_a_planted_target_in_one_line_exit_2(run, tmp_path, marker):
    node = payload_targets(tmp_path, marker)["torch.load"]
    _plant(run, lambda config: config["dataset"].update(node))
    result = eval_cli(tmp_path, f"predictions={run / 'predictions_test.jsonl'}")
    assert_one_error_line(result, "_target_", "never code")
    result = eval_cli(tmp_path, f"adapter={run / 'adapter'}")
    assert_one_error_line(result, "_target_")
    assert not marker.exists()
    assert "Traceback" not in result.stderr


def test_the_original_attack_would_have_run(tmp_path, marker):
    """The payload is real: instantiating the planted node (what eval.py used to do) creates the marker."""
    import hydra
    from omegaconf import OmegaConf

    hydra.utils.instantiate(OmegaConf.create(payload_targets(tmp_path, marker)["torch.load"]))
    assert marker.exists()


def test_a_hostile_run_config_is_refused_by_the_reader_itself(run):
    _plant(run, lambda config: config["dataset"].update(_target_="os.system"))
    with pytest.raises(UserError, match="never code"):
        dataset_from_run_config(read_json(run / "adapter" / "run_config.json"), "x")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"index": NaN, "prediction": "1"}\n', "corrupt"),
        ('{"index": 1.0, "prediction": "1"}\n', "expected"),
        ('{"index": true, "prediction": "1"}\n', "expected"),
        ('{"index": "0", "prediction": "1"}\n', "expected"),
        ('{"index": -1, "prediction": "1"}\n', "expected"),
        ('{"index": 0, "prediction": {"_target_": "os.system"}}\n', "must be a string"),
        ('{"index": 0, "index": 1, "prediction": "1"}\n', "duplicate key"),
        (b"\xff\n", "UTF-8"),
    ],
)
def test_hostile_predictions_lines(run, tmp_path, text, expected):
    (run / "predictions_test.jsonl").write_bytes(text if isinstance(text, bytes) else text.encode())
    evaluate_refuses(_modes(run, tmp_path)["predictions"], expected)


@pytest.mark.timeout(60)
def test_a_fifo_predictions_file_is_refused_without_waiting(run, tmp_path):
    (run / "predictions_test.jsonl").unlink()
    os.mkfifo(run / "predictions_test.jsonl")
    evaluate_refuses(_modes(run, tmp_path)["predictions"], "not a regular file")
