"""A batch whose rows use different adapters (and none) against each row decoded alone with its own adapter applied,
token for token: every served method on Mamba-1 and Mamba-2 (LoRA: each row its own low-rank update over the shared
base weights; prompt and prefix tuning: each prefill group its own start), greedy and beam search, rows finishing at
different steps; and what the bank refuses."""

from __future__ import annotations

import pytest

from stateft.errors import UserError
from stateft.generation import generate
from stateft.models.loading import build_model
from stateft.serve import AdapterBank
from stateft.serve.routed_lora import RoutedLinear
from tests.conftest import TINY, TINY2
from tests.serve.helpers import alone, eos_that_splits, prompts, save_random_adapter

METHODS = [
    ("state_offset_h", {}),
    ("state_offset_h", {"rank": 2}),
    ("state_offset_y", {}),
    ("init_state", {}),
    ("init_state", {"conv_state": True}),
    ("lora", {"dropout": 0.0}),
    ("prompt", {"num_virtual_tokens": 4}),
    ("prefix", {}),
]
CASES = [(c, m, o) for c in (TINY, TINY2) for m, o in METHODS if not (m == "prefix" and c.arch == "mamba2")]
IDS = [f"{c.arch}-{m}{'-' + '-'.join(map(str, o.values())) if o else ''}" for c, m, o in CASES]
# the first three rows share one prompt; lengths ragged
ROW_ADAPTERS = ["A", None, "B", "B", "A", None, "A", "B", "A"]
LENGTHS = [6, 6, 6, 3, 7, 5, 1, 12, 7]
# a start (virtual tokens, prefix) fades over a long prompt in these tiny random models: short prompts show it
SHORT = [2, 2, 2, 3, 2, 1, 1, 4, 3]
START_METHODS = ("prompt", "prefix")
MAX_NEW = 8
OTHER = {"mamba1": ["x_proj", "in_proj", "out_proj"], "mamba2": ["in_proj"]}  # LoRA targets beside the default ones


def _rows(lengths: list[int]):
    rows = prompts(lengths)
    rows[1] = rows[2] = rows[0]
    return rows


def _check_distinguished(references: dict, rows: list, row_adapters: list, num_beams: int, strict: bool) -> None:
    """Every adapter decodes one of its rows unlike the base model and, if ``strict``, unlike every other adapter of
    the batch: a row given no adapter (or, strict, another adapter's tensors) would show."""
    names = set(row_adapters) | {None}
    outputs: dict = {}

    def output(name, row: int) -> list[int]:
        if (name, row) not in outputs:
            kw = dict(max_new_tokens=MAX_NEW, num_beams=num_beams, eos_id=None)
            outputs[name, row] = generate(references[name], rows[row], **kw)
        return outputs[name, row]

    for adapter in sorted(names - {None}):
        others = names - {adapter} if strict else {None}
        mine = [row for row, a in enumerate(row_adapters) if a == adapter]
        assert any(all(output(adapter, r) != output(o, r) for o in others) for r in mine), (
            f"adapter {adapter} decodes its rows like another one: the test shows nothing"
        )


def _check_mixed(config, directories: dict, row_adapters: list, num_beams: int, lengths=LENGTHS, strict=True) -> None:
    bank = AdapterBank(build_model(config, seed=0).eval())
    for name, directory in directories.items():
        bank.load(name, directory)
    references = {name: alone(config, directories.get(name)) for name in set(row_adapters) | {None}}
    models = [references[a] for a in row_adapters]
    rows = _rows(lengths)
    _check_distinguished(references, rows, row_adapters, num_beams, strict)
    eos = eos_that_splits(models, rows, num_beams, MAX_NEW)
    single = [generate(m, p, max_new_tokens=MAX_NEW, num_beams=num_beams, eos_id=eos) for m, p in zip(models, rows)]
    mixed = bank.generate(rows, row_adapters, max_new_tokens=MAX_NEW, num_beams=num_beams, eos_id=eos)
    assert mixed == single
    # the bank's model is the base model again once the batch is done
    assert generate(bank.model, rows[0], max_new_tokens=MAX_NEW, num_beams=num_beams, eos_id=eos) == single[1]


@pytest.mark.parametrize(("config", "method", "options"), CASES, ids=IDS)
@pytest.mark.parametrize("num_beams", [1, 3])
def test_mixed_batch_equals_each_row_alone(config, method, options, num_beams, tmp_path):
    scale = 4.0 if method in START_METHODS else 0.5
    directories = {
        "A": save_random_adapter(config, method, options, 1, tmp_path / "A", scale),
        "B": save_random_adapter(config, method, options, 2, tmp_path / "B", scale),
    }
    _check_mixed(config, directories, ROW_ADAPTERS, num_beams, SHORT if method in START_METHODS else LENGTHS)


@pytest.mark.parametrize("config", [TINY, TINY2], ids=["mamba1", "mamba2"])
@pytest.mark.parametrize("num_beams", [1, 2])
def test_mixed_methods_in_one_batch(config, num_beams, tmp_path):
    directories = {
        "A": save_random_adapter(config, "state_offset_h", {}, 1, tmp_path / "A"),
        "B": save_random_adapter(config, "init_state", {"conv_state": True}, 2, tmp_path / "B"),
        "C": save_random_adapter(config, "state_offset_y", {}, 3, tmp_path / "C"),
        "D": save_random_adapter(config, "state_offset_h", {"rank": 1}, 4, tmp_path / "D", 2.0),
        "E": save_random_adapter(config, "lora", {"dropout": 0.0}, 5, tmp_path / "E"),
        # another rank and other linears: E's factors are zero-padded, each leaves some of the other's linears alone
        "F": save_random_adapter(
            config, "lora", {"dropout": 0.0, "r": 2, "target_modules": OTHER[config.arch]}, 6, tmp_path / "F"
        ),  # fmt: skip
        "G": save_random_adapter(config, "prompt", {"num_virtual_tokens": 3, "reparam": True}, 7, tmp_path / "G", 4.0),
    }
    if config.arch == "mamba1":
        directories["H"] = save_random_adapter(config, "prefix", {"position": "outer"}, 11, tmp_path / "H", 4.0)
    rows = ["E", None, "B", "G", "D", "F", "A", "C", "H" if config.arch == "mamba1" else "G"]
    _check_mixed(config, directories, rows, num_beams, SHORT, strict=False)


@pytest.fixture
def bank_and_dirs(tmp_path):
    directory = save_random_adapter(TINY, "state_offset_h", {}, 1, tmp_path / "A")
    bank = AdapterBank(build_model(TINY, seed=0).eval())
    bank.load("A", directory)
    return bank, tmp_path


def test_an_unloaded_adapter_is_one_error(bank_and_dirs):
    bank, _ = bank_and_dirs
    with pytest.raises(UserError, match=r"^adapter 'B' is not loaded; loaded adapters: A$"):
        bank.generate([[1, 2, 3], [4, 5]], ["A", "B"], max_new_tokens=2)


def test_bad_requests_are_one_error(bank_and_dirs):
    bank, _ = bank_and_dirs
    with pytest.raises(UserError, match="one per prompt"):
        bank.generate([[1, 2]], ["A", None], max_new_tokens=2)
    with pytest.raises(UserError, match="non-empty list of token ids"):
        bank.generate([[]], ["A"], max_new_tokens=2)
    with pytest.raises(UserError, match=r"token id 64 .*vocabulary \[0, 64\)"):
        bank.generate([[1, 64]], [None], max_new_tokens=2)
    with pytest.raises(UserError, match="num_beams"):
        bank.generate([[1, 2]], [None], max_new_tokens=2, num_beams=0)


@pytest.mark.parametrize(
    ("config", "method", "options", "message"),
    [
        (TINY.__class__(**{**TINY.to_dict(), "d_state": 8}), "state_offset_h", {}, "another base model.*d_state"),
        (TINY2, "state_offset_h", {}, "another base model.*arch"),
        (TINY.__class__(**{**TINY.to_dict(), "d_model": 8}), "lora", {"dropout": 0.0}, "another base model.*d_model"),
        (TINY, "bitfit", {}, "method bitfit cannot be decoded per row"),
        (TINY, "additional_scan", {}, "method additional_scan cannot be decoded per row"),
    ],
    ids=["other-size", "other-arch", "other-size-lora", "bitfit", "additional_scan"],
)
def test_an_adapter_of_another_base_or_method_is_refused_at_load(bank_and_dirs, config, method, options, message):
    bank, tmp_path = bank_and_dirs
    directory = save_random_adapter(config, method, options, 5, tmp_path / "other")
    with pytest.raises(UserError, match=message):
        bank.load("other", directory)
    assert bank.names == ["A"]
    expected = generate(alone(TINY, tmp_path / "A"), [1, 2, 3], max_new_tokens=3)
    assert bank.generate([[1, 2, 3]], ["A"], max_new_tokens=3) == [expected]


def test_names_are_checked(bank_and_dirs):
    bank, tmp_path = bank_and_dirs
    with pytest.raises(UserError, match="is taken"):
        bank.load("A", tmp_path / "A")
    with pytest.raises(UserError, match="adapter name"):
        bank.load("a b", tmp_path / "A")


def test_a_model_with_a_method_applied_is_refused(tmp_path):
    model = alone(TINY, save_random_adapter(TINY, "state_offset_h", {}, 1, tmp_path / "A"))
    with pytest.raises(ValueError, match="base model itself"):
        AdapterBank(model)


def test_lora_adapters_share_the_base_weights(tmp_path):
    """Loading LoRA adapters wraps the base linears: the model's parameters are the same tensors, unchanged."""
    model = build_model(TINY, seed=0).eval()
    before = {name: (p, p.detach().clone()) for name, p in model.named_parameters()}
    bank = AdapterBank(model)
    bank.load("A", save_random_adapter(TINY, "lora", {"dropout": 0.0}, 1, tmp_path / "A"))
    bank.load("B", save_random_adapter(TINY, "lora", {"dropout": 0.0, "r": 2}, 2, tmp_path / "B"))
    bank.generate([[1, 2, 3]], ["A"], max_new_tokens=1)  # the banks are stacked (the linears wrapped) to decode
    assert any(isinstance(m, RoutedLinear) for m in bank.model.modules())
    after = list(bank.model.parameters())
    assert len(after) == len(before)
    assert {id(p) for p in after} == {id(p) for p, _ in before.values()}
    assert all(p.equal(value) for p, value in before.values())


def test_loading_stacks_the_banks_once_before_decoding(monkeypatch, tmp_path):
    """N adapters loaded cost one stacking, run before the first decoding (none while loading, none again for later
    decodings); an adapter loaded after decoding has started is stacked in before the next decoding reads the banks."""
    stacked: list[int] = []  # the adapters in the bank at each stacking
    real = AdapterBank._stack

    def counted(self) -> None:
        stacked.append(len(self.names))
        real(self)

    monkeypatch.setattr(AdapterBank, "_stack", counted)
    jobs = {"A": ("state_offset_h", {}), "B": ("lora", {"dropout": 0.0}), "C": ("init_state", {}), "D": ("lora", {})}
    dirs = {n: save_random_adapter(TINY, m, o, i + 1, tmp_path / n) for i, (n, (m, o)) in enumerate(jobs.items())}
    rows = prompts([4, 3, 5, 2])
    kw = dict(max_new_tokens=4, eos_id=None)
    expected = {n: generate(alone(TINY, dirs[n]), p, **kw) for n, p in zip(dirs, rows)}
    bank = AdapterBank(build_model(TINY, seed=0).eval())
    for name in "ABC":
        bank.load(name, dirs[name])
    assert stacked == []
    assert bank.generate(rows[:3], list("ABC"), **kw) == [expected[n] for n in "ABC"]
    assert bank.generate(rows[1:2], ["B"], **kw) == [expected["B"]]
    assert stacked == [3]
    bank.load("D", dirs["D"])
    assert stacked == [3]
    assert expected["D"] != generate(alone(TINY, None), rows[3], **kw)  # D decoded from stale banks would show
    assert bank.generate(rows, list("ABCD"), **kw) == [expected[n] for n in "ABCD"]
    assert stacked == [3, 4]
    bank.stack()  # nothing loaded since: nothing to do
    assert stacked == [3, 4]
    fresh = AdapterBank(build_model(TINY, seed=0).eval())
    for name in "AB":
        fresh.load(name, dirs[name])
    fresh.stack()  # the server's start-up: the banks built before any request
    assert stacked == [3, 4, 2]
    assert fresh.generate(rows[:2], list("AB"), **kw) == [expected[n] for n in "AB"]
    assert stacked == [3, 4, 2]


def test_a_failed_stacking_runs_again_before_the_next_decoding(monkeypatch, tmp_path):
    """A stacking that fails (out of memory) stays pending: the decoding that ran it fails, the next one stacks
    again and decodes as the adapter alone."""
    calls: list[int] = []
    real = AdapterBank._stack

    def flaky(self) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        real(self)

    monkeypatch.setattr(AdapterBank, "_stack", flaky)
    directory = save_random_adapter(TINY, "state_offset_h", {}, 1, tmp_path / "A")
    bank = AdapterBank(build_model(TINY, seed=0).eval())
    bank.load("A", directory)
    with pytest.raises(RuntimeError, match="out of memory"):
        bank.generate([[1, 2, 3]], ["A"], max_new_tokens=3)
    assert bank.generate([[1, 2, 3]], ["A"], max_new_tokens=3) == [generate(alone(TINY, directory), [1, 2, 3], 3)]
    assert len(calls) == 2
