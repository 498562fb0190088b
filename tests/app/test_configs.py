"""Config tree: every combination composes and validates; errors are one line; start-up stays light."""

from __future__ import annotations

import subprocess
import time

import pytest
from hydra import compose

from stateft.app.checks import group_options, validate_cfg
from stateft.app.resolvers import lr_ladder
from tests.app.conftest import DATASETS, METHODS, PYTHON, REPO, model_for, subprocess_env


def test_groups_have_the_required_options():
    assert {"default", "gpu", "ddp", "debug"} <= set(group_options("trainer"))
    assert {"wandb", "csv", "tensorboard", "none"} <= set(group_options("logger"))
    assert {f"glue_{t}" for t in ("rte", "mrpc", "cola", "sst2", "qnli", "qqp", "mnli")} | {
        "samsum",
        "dart",
        "spider",
    } <= set(DATASETS)
    assert "lr_grid" in group_options("sweep")
    assert {"demo", "paper/glue", "paper/dart", "paper/samsum", "paper/spider"} <= set(group_options("experiment"))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_composes_with_every_dataset(hydra_ctx, method):
    for dataset in DATASETS:
        overrides = [f"method={method}", f"dataset={dataset}", f"model={model_for(method)}", "output_dir=/tmp/x"]
        cfg = compose("train", overrides=overrides)
        validate_cfg(cfg)
        assert cfg.method.name == method
        assert cfg.optim.lr == cfg.method.lr
        assert cfg.optimized_metric == f"val/{cfg.dataset.metric}"


@pytest.mark.parametrize("dataset", DATASETS)
def test_the_dataset_tokenizes_with_the_models_tokenizer(hydra_ctx, dataset):
    """Named once, on the model: every dataset config follows model.tokenizer."""
    for model in ("mamba-tiny", "pythia-tiny"):
        overrides = [f"dataset={dataset}", f"model={model}", "method=lora", "model.tokenizer=/data/tok"]
        cfg = compose("train", overrides=overrides)
        validate_cfg(cfg)
        assert cfg.dataset.tokenizer == cfg.model.tokenizer == "/data/tok"


@pytest.mark.parametrize("experiment", [e for e in group_options("experiment") if e != "paper/common"])
def test_every_experiment_composes(hydra_ctx, experiment):
    overrides = [f"experiment={experiment}", "method=state_offset_h", "output_dir=/tmp/x"]
    if experiment.startswith("sdt_s4/"):  # deep S4 takes the s4_* methods (the pixel task: its fixture images)
        overrides.append("method=s4_sdt")
        if experiment == "sdt_s4/transfer":
            overrides.append(f"dataset.path={REPO / 'tests' / 'fixtures' / 's4'}")
    cfg = compose("train", overrides=overrides)
    validate_cfg(cfg)


@pytest.mark.parametrize(
    ("family", "dataset", "method", "lr", "epochs"),
    [
        ("glue", "glue_cola", "lora", 4e-5, 10),
        ("glue", "glue_mnli", "state_offset_h", 4e-4, 3),
        ("glue", "glue_qqp", "state_offset_h", 4e-5, 3),
        ("spider", None, "state_offset_h", 2e-4, 10),
        ("samsum", None, "state_offset_h", 1e-4, 10),  # init_state: batch 2 (tests/app/test_paper_table.py)
        ("dart", None, "sdt", 4e-2, 10),
    ],
)
def test_paper_experiments_set_the_papers_recipe(hydra_ctx, family, dataset, method, lr, epochs):
    overrides = [f"experiment=paper/{family}", f"method={method}", "output_dir=/tmp/x"]
    cfg = compose("train", overrides=overrides + ([f"dataset={dataset}"] if dataset else []))
    assert cfg.optim.lr == pytest.approx(lr)
    assert cfg.trainer.max_epochs == epochs
    assert cfg.dataset.batch_size == 4
    assert cfg.optim.weight_decay == 0.0
    assert cfg.optim.warmup_ratio == 0.0
    assert cfg.optim.schedule == "linear"
    assert cfg.trainer.gradient_clip_val == 1.0
    if family != "glue":
        assert (cfg.dataset.num_beams, cfg.dataset.max_new_tokens) == (5, 1024)
    assert cfg.model.name == ("mamba-130m" if family in ("glue", "dart") else "mamba-1.4b")


def test_paper_experiment_without_a_reported_lr_asks_for_one(hydra_ctx):
    from stateft.errors import UserError

    cfg = compose("train", overrides=["experiment=paper/glue", "method=prompt", "output_dir=/tmp/x"])
    with pytest.raises(UserError, match="pass method.lr="):
        validate_cfg(cfg)
    cfg = compose("train", overrides=["experiment=paper/glue", "method=prompt", "method.lr=1e-2", "output_dir=/x"])
    validate_cfg(cfg)


def test_lr_ladder_is_the_papers_grid():
    values = [float(v) for v in lr_ladder(1e-5, 0.4).split(",")]
    assert values[0] == 1e-5
    assert values[-1] == 0.4
    assert len(values) == 15
    assert all(float(f"{v:.0e}"[0]) in (1, 2, 4) for v in values)
    assert lr_ladder(1e-3, 4e-3) == "0.001,0.002,0.004"


def test_sweep_config_sets_the_search(hydra_ctx):
    cfg = compose("train", overrides=["sweep=lr_grid", "method=lora", "output_dir=/tmp/x"], return_hydra_config=True)
    assert cfg.trainer.max_epochs == 1
    assert cfg.dataset.subset_size == 1000
    assert cfg.test is False
    assert cfg.hydra.sweeper.params["optim.lr"] == lr_ladder(1e-5, 0.4)
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"


def _cli(*args: str, script: str = "train.py") -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, script, *args], cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )


METHOD_ON_PYTHIA = (
    ["model=pythia-160m", "method=state_offset_h", "dry_run=true"],
    ["method state_offset_h on pythia-160m: state_offset_h applies to mamba1, mamba2 and vim", "lora, prompt, prefix"],
)
CONFIG_ERRORS = [
    (["method=lorra"], ["unknown method 'lorra'", "state_offset_h", "lora"]),
    (["dataset=glue_rtee"], ["unknown dataset 'glue_rtee'", "glue_rte", "spider"]),
    (["model=mamba-9b"], ["unknown model 'mamba-9b'", "mamba-1.4b"]),
    (["method=lora", "method.rnak=8"], ["unknown key 'method.rnak'", "r, alpha"]),
    (["method=lora", "+method.rnak=8"], ["rnak", "valid options", "target_modules"]),
    (["method=lora", "method.r=eight"], ["'r'", "valid options"]),
    (["-m", "method=lora,lorra"], ["unknown method 'lorra'"]),
    (["logger=null"], ["~logger", "none"]),
    (["cuda_graph=true", "trainer.accelerator=cpu"], ["cuda_graph=true needs a CUDA GPU", "cuda_graph=false"]),
    (["cuda_graph=true", "trainer=ddp", "trainer.accelerator=gpu"], ["for one GPU", "cuda_graph=false"]),
    (["cuda_graph=true", "trainer.accelerator=gpu", "trainer.devices=-1"], ["for one GPU", "trainer.devices=1"]),
    (
        ["cuda_graph=true", "trainer.accelerator=gpu", "trainer.accumulate_grad_batches=2"],
        ["cannot accumulate gradients", "accumulate_grad_batches=1"],
    ),
    (["cuda_graph=true", "trainer.accelerator=gpu", "cuda_graph_bucket=-8"], ["cuda_graph_bucket=-8", ">= 0"]),
    # value ranges (stateft/app/ranges.py)
    (["dataset.batch_size=0"], ["dataset.batch_size must be an integer >= 1, got 0"]),
    (["dataset.eval_batch_size=-2"], ["dataset.eval_batch_size must be an integer >= 1"]),
    (["dataset.batch_size=2.5"], ["dataset.batch_size must be an integer >= 1, got 2.5"]),
    (["dataset.max_length=0"], ["dataset.max_length must be an integer >= 1"]),
    (["dataset.num_beams=0"], ["dataset.num_beams must be an integer >= 1"]),
    (["dataset.max_new_tokens=-1"], ["dataset.max_new_tokens must be an integer >= 1"]),
    (["dataset.subset_size=0"], ["dataset.subset_size must be an integer >= 1 or null"]),
    (["trainer.max_epochs=0"], ["trainer.max_epochs must be an integer >= 1, or -1"]),
    (["trainer.max_epochs=-5"], ["trainer.max_epochs must be an integer >= 1, or -1"]),
    (["trainer.accumulate_grad_batches=0"], ["trainer.accumulate_grad_batches must be an integer >= 1"]),
    (["trainer.gradient_clip_val=-1"], ["trainer.gradient_clip_val must be a number >= 0 or null"]),
    (["trainer.limit_val_batches=1.5"], ["trainer.limit_val_batches must be a fraction in [0.0, 1.0]"]),
    (["method.lr=nan"], ["optim.lr must be a finite number > 0, got nan"]),
    (["method.lr=inf"], ["optim.lr must be a finite number > 0, got inf"]),
    (["optim.lr=-0.1"], ["optim.lr must be a finite number > 0"]),
    (["optim.weight_decay=-1"], ["optim.weight_decay must be a finite number >= 0"]),
    (["optim.betas=[0.9,1.5]"], ["optim.betas must be two numbers in [0, 1)"]),
    (["optim.warmup_ratio=2"], ["optim.warmup_ratio must be a number in [0, 1]"]),
    (["optim.schedule=exponential"], ["optim.schedule must be one of: linear, constant, cosine"]),
    (["checkpoint.mode=maximum"], ["checkpoint.mode must be one of: min, max"]),
    (["method=lora", "method.r=0"], ["method.r must be an integer >= 1 or null"]),
    (["method=lora", "method.dropout=1.5"], ["method.dropout must be a number in [0, 1)"]),
    (["method=prompt", "method.num_virtual_tokens=0"], ["method.num_virtual_tokens must be an integer >= 1"]),
    (["sweep=lr_grid", "lr_grid.epochs=0"], ["lr_grid.epochs must be an integer >= 1"]),
    (["seed=-1"], ["seed must be an integer >= 0"]),
    (["model=mamba-tiny", "model.d_state=0"], ["model.d_state must be an integer >= 1"]),
    # the methods each architecture takes (each method config's archs, stateft/methods/configs.py)
    METHOD_ON_PYTHIA,
    (["model=mamba2-tiny", "method=prefix"], ["method prefix on mamba2-tiny", "the methods for mamba2: full,"]),
    (["model=mamba-tiny", "method=full_ssd"], ["applies to mamba2 models, not to mamba1", "full_s6"]),
    # the data's tokenizer is the model's
    (
        ["dataset=samsum", "dataset.tokenizer=/data/tok"],
        ["dataset.tokenizer=/data/tok differs from model.tokenizer=EleutherAI/gpt-neox-20b", "model.tokenizer=..."],
    ),
]


@pytest.mark.parametrize(("args", "expected"), CONFIG_ERRORS)
def test_config_errors_name_the_valid_choices(compose, args, expected):
    from stateft.errors import UserError

    with pytest.raises(UserError) as err:
        validate_cfg(compose("train", [a for a in args if a != "-m"] + ["output_dir=/tmp/x"]))
    for text in expected:
        assert text in str(err.value)


@pytest.mark.parametrize(
    "args",
    [
        ["trainer.max_epochs=-1"],  # Lightning: no epoch limit
        ["trainer.limit_val_batches=0"],  # no validation (the sweep's setting)
        ["trainer.limit_val_batches=0.25"],
        ["trainer.gradient_clip_val=null"],
        ["trainer.check_val_every_n_epoch=null"],
        ["trainer.num_sanity_val_steps=-1"],
        ["dataset.subset_size=null", "dataset.max_eval_examples=8"],
        ["optim.schedule=constant", "optim.warmup_ratio=0.1"],
        ["trainer=debug"],  # fast_dev_run: 1
    ],
)
def test_value_ranges_accept_what_lightning_accepts(compose, args):
    validate_cfg(compose("train", [*args, "output_dir=/tmp/x"]))


@pytest.mark.parametrize(("args", "expected"), [CONFIG_ERRORS[0], CONFIG_ERRORS[3], METHOD_ON_PYTHIA])
def test_cli_config_errors_are_one_line_and_exit_2(args, expected):
    result = _cli(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0]


def test_help_and_config_errors_answer_fast_without_torch():
    start = time.perf_counter()
    result = _cli("--help")
    help_seconds = time.perf_counter() - start
    assert result.returncode == 0
    assert "method" in result.stdout
    probe = (
        "import sys; from stateft.app.checks import compose_checked, validate_cfg;"
        "validate_cfg(compose_checked('train', ['method=lora', 'output_dir=/tmp/x']));"
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    imported = subprocess.run([PYTHON, "-c", probe], cwd=REPO, env=subprocess_env(), capture_output=True, text=True)
    assert imported.stdout.strip() == "[]", imported.stderr
    assert help_seconds < 4.0  # about a second on an idle core; shared CI cores get slack


def test_dry_run_prints_peft_summary_without_weights(compose, capsys, tmp_path):
    from stateft.app.training import train

    cfg = compose("train", ["model=mamba-1.4b", "method=lora", "dry_run=true", f"output_dir={tmp_path}"])
    train(cfg)
    assert "trainable params: 6,402,048 || all params: 1,378,580,480 || trainable%: 0.4644" in capsys.readouterr().out


def test_ddp_inside_a_local_multirun_is_refused_with_the_alternatives(capsys):
    from stateft.app.checks import preflight

    with pytest.raises(SystemExit) as exit_info:
        preflight("train", ["-m", "sweep=lr_grid", "trainer=ddp"])
    assert exit_info.value.code == 2
    assert "hydra/launcher=local_gpus" in capsys.readouterr().err
    preflight("train", ["-m", "sweep=lr_grid", "trainer=ddp", "hydra/launcher=slurm"])  # Slurm starts the ranks
    preflight("train", ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"])  # a single run
