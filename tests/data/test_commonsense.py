"""Commonsense-170k: MambaPEFT's template byte for byte, its tokenisation (one string, cut, EOS), its loss on prompt
and response, and its 2,000-row held-out split (``datasets``' ``train_test_split``)."""

from __future__ import annotations

import json

import pytest
import torch

from stateft.data import commonsense
from stateft.data.commonsense import CommonsenseDataModule, answer_of, format_commonsense, heldout_split, template
from stateft.errors import UserError
from stateft.loss import IGNORE_INDEX
from tests.data.conftest import FIXTURES

SIXTEEN = "                "  # the reference's indentation inside its f-strings, spelled out

EXPECTED_NO_INPUT = "\n".join(
    [
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.  ",
        "",
        SIXTEEN + "### Instruction:",
        SIXTEEN + "Is the sky blue?",
        SIXTEEN,
        SIXTEEN + "### Response:",
        SIXTEEN + "the correct answer is true",
    ]
)
EXPECTED_WITH_INPUT = "\n".join(
    [
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request. ",
        "",
        SIXTEEN + "### Instruction:",
        SIXTEEN + "Answer the question.",
        SIXTEEN,
        SIXTEEN + "### Input:",
        SIXTEEN + "Is the sky blue?",
        SIXTEEN,
        SIXTEEN + "### Response:",
        SIXTEEN + "the correct answer is true",
    ]
)


def make(tmp_path, **overrides) -> CommonsenseDataModule:
    kwargs = {"name": "commonsense170k", "metric": "accuracy", "path": str(FIXTURES / "commonsense170k")}
    return CommonsenseDataModule(**{**kwargs, "cache_dir": str(tmp_path / "cache"), **overrides})


def test_template_is_the_references_byte_for_byte():
    assert len(SIXTEEN) == 16
    assert template("Is the sky blue?", "", "the correct answer is true") == EXPECTED_NO_INPUT
    assert template("Answer the question.", "Is the sky blue?", "the correct answer is true") == EXPECTED_WITH_INPUT
    ex = format_commonsense({"instruction": "Is the sky blue?", "input": "", "output": "the correct answer is true"})
    assert ex.prefix + ex.input + ex.target == EXPECTED_NO_INPUT
    assert ex.input.endswith("### Response:\n" + SIXTEEN)
    assert ex.meta == {"answer": "true"}  # no answer field: the one the output names


def test_one_string_tokenised_then_cut_and_eos(tmp_path, tok):
    dm = make(tmp_path)
    row = json.loads((FIXTURES / "commonsense170k" / "train.jsonl").read_text().splitlines()[0])
    ex = format_commonsense(row)
    item = dm.tokenize(ex)
    whole = tok.encode(template(row["instruction"], row["input"], row["output"]))
    assert item["prompt_ids"] + item["target_ids"] == [*whole, tok.eos_id]
    assert tok.decode(item["target_ids"], skip_special_tokens=False).endswith("true<|endoftext|>")
    assert item["prompt_ids"] == tok.encode(ex.input)[: len(item["prompt_ids"])]
    # cut: the first cutoff_len tokens of the same string, no room left for EOS
    short = make(tmp_path, cutoff_len=20).tokenize(ex)
    assert short["prompt_ids"] + short["target_ids"] == whole[:20]
    # one token short of the length: EOS fills it
    exact = make(tmp_path, cutoff_len=len(whole) + 1).tokenize(ex)
    assert exact["prompt_ids"] + exact["target_ids"] == [*whole, tok.eos_id]


@pytest.mark.parametrize("train_on_inputs", [True, False])
def test_loss_covers_prompt_and_response_as_the_reference(tmp_path, train_on_inputs):
    dm = make(tmp_path, train_on_inputs=train_on_inputs, eval_batch_size=3)
    dm.setup("validate")
    items = dm.split_items("validation")[:3]
    batch = next(iter(dm.val_dataloader()))  # not shuffled: row i is items[i]
    for row, item in enumerate(items):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        n_prompt, n = len(item["prompt_ids"]), len(item["prompt_ids"]) + len(item["target_ids"])
        assert ids[:n].tolist() == item["prompt_ids"] + item["target_ids"]
        assert (labels[n:] == IGNORE_INDEX).all()  # padding never counts
        assert torch.equal(labels[n_prompt:n], ids[n_prompt:n])
        if train_on_inputs:
            assert torch.equal(labels[:n_prompt], ids[:n_prompt])
        else:
            assert (labels[:n_prompt] == IGNORE_INDEX).all()
    assert batch["prompt_ids"] == [item["prompt_ids"] for item in items]  # generation starts from the prompt
    assert dm.train_dataloader().collate_fn.func is dm.val_dataloader().collate_fn.func  # training labels alike


def test_heldout_split_is_datasets_train_test_split():
    import datasets

    rows = [{"i": i} for i in range(57)]
    train, heldout = heldout_split(rows, 20, 42)
    theirs = datasets.Dataset.from_list(rows).train_test_split(test_size=20, shuffle=True, seed=42)
    assert heldout == theirs["test"].to_list()
    assert train == theirs["train"].to_list()
    assert sorted(r["i"] for r in train + heldout) == list(range(57))
    with pytest.raises(UserError, match="heldout_size=57"):
        heldout_split(rows, 57, 42)


def test_the_released_json_file_is_split_as_mambapeft(tmp_path):
    """``path`` = the LLM-Adapters file itself (one JSON array): 2,000 of its rows held out with seed 42."""
    rows = [
        {"instruction": f"Question {i}?", "input": "", "output": f"the correct answer is answer{i % 4 + 1}",
         "answer": f"answer{i % 4 + 1}"}
        for i in range(2010)
    ]  # fmt: skip
    file = tmp_path / "commonsense_170k.json"
    file.write_text(json.dumps(rows))
    dm = make(tmp_path, path=str(file), cache_dir=None)
    _, heldout = heldout_split(rows, 2000, 42)
    assert [r["instruction"] for r in dm._rows_for("validation")] == [r["instruction"] for r in heldout]
    assert len(dm._rows_for("train")) == 10
    assert dm._rows_for("test") == dm._rows_for("validation")


def test_answer_extraction_and_score(tmp_path):
    assert answer_of("the correct answer is Solution2.") == "solution2"
    assert answer_of("  option1 because ...") == "option1"
    assert answer_of("") == ""
    dm = make(tmp_path)
    examples = [{"answer": "true"}, {"answer": "ending3"}]
    assert dm.task.score(["the correct answer is true", "the correct answer is ending1"], examples) == {"accuracy": 0.5}


def test_bad_rows_are_one_line(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "train.jsonl").write_text('{"instruction": "q", "input": "", "output": 3}\n')
    with pytest.raises(UserError, match="'output' must be a string"):
        make(tmp_path, path=str(folder)).load_rows("train")
    (folder / "train.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(UserError, match="lacks fields"):
        make(tmp_path, path=str(folder)).load_rows("train")
    (folder / "train.jsonl").write_text('{"instruction": "q", "output": "o", "answer": 3}\n')
    with pytest.raises(UserError, match="'answer' must be a string"):
        make(tmp_path, path=str(folder)).load_rows("train")
    # input and answer may be missing or null
    rows = ['{"instruction": "q", "output": "o"}', '{"instruction": "q", "input": null, "output": "o", "answer": null}']
    (folder / "train.jsonl").write_text("\n".join(rows) + "\n")
    assert len(make(tmp_path, path=str(folder)).load_rows("train")) == 2


@pytest.mark.parametrize("released", [True, False])
def test_the_data_is_read_and_split_once_for_all_splits(tmp_path, monkeypatch, released):
    """Every split comes from one reading (and one held-out draw) of the data files."""
    read, drawn = [], []
    load, split = commonsense.load_split, commonsense.heldout_split
    monkeypatch.setattr(commonsense, "load_split", lambda *args, **kw: read.append(args[2]) or load(*args, **kw))
    monkeypatch.setattr(commonsense, "heldout_split", lambda *args: drawn.append(1) or split(*args))
    if released:  # the one JSON file: the held-out rows drawn from it
        rows = [{"instruction": f"Q{i}?", "input": "", "output": "the correct answer is true"} for i in range(30)]
        (tmp_path / "commonsense_170k.json").write_text(json.dumps(rows))
        dm = make(tmp_path, path=str(tmp_path / "commonsense_170k.json"), heldout_size=10, subset_size=5)
    else:  # a folder with a validation file
        dm = make(tmp_path, subset_size=2)
    train, validation, test = (dm._rows_for(split) for split in ("train", "validation", "test"))
    assert dm._rows_for("train") == train  # the same seeded subset when asked again
    assert read == (["train"] if released else ["train", "validation"])
    assert drawn == ([1] if released else [])
    assert len(train) == (5 if released else 2)
    assert test == validation
