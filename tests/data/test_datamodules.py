"""DataModules on fixture rows and real release data: splits, protocols, batches, cache, errors."""

from __future__ import annotations

import shutil

import pytest
import torch

from stateft.data.dart import DartDataModule
from stateft.data.glue import GlueDataModule
from stateft.data.samsum import SamsumDataModule
from stateft.data.spider import SpiderDataModule
from stateft.data.splits import subset, train_val_split
from stateft.errors import UserError
from tests.data.conftest import FIXTURES


def rte(make_dm, **kw):
    kw = {"path": str(FIXTURES / "glue_rte"), **kw}
    return make_dm(GlueDataModule, task="rte", name="glue_rte", metric="accuracy", **kw)


def test_split_equals_datasets_train_test_split():
    import datasets

    rows = list(range(103))
    train, val = train_val_split(rows, 0.2, 123)
    ref = datasets.Dataset.from_dict({"i": rows}).train_test_split(test_size=0.2, seed=123)
    assert train == ref["train"]["i"]
    assert val == ref["test"]["i"]


def test_clean_protocol_partitions_train_and_tests_on_validation(make_dm):
    dm = rte(make_dm)
    dm.setup()
    hub_train = dm.load_rows("train")
    hub_val = dm.load_rows("validation")
    train = [it["example"]["idx"] for it in dm.split_items("train")]
    val = [it["example"]["idx"] for it in dm.split_items("validation")]
    test = [it["example"]["idx"] for it in dm.split_items("test")]
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(r["idx"] for r in hub_train)
    assert len(val) == 4  # ceil(0.2 * 20)
    assert test == [r["idx"] for r in hub_val]
    assert [it["example"]["index"] for it in dm.split_items("test")] == list(range(len(test)))


def test_paper_protocol_validates_on_the_evaluation_split(make_dm):
    dm = rte(make_dm, protocol="paper")
    dm.setup()
    assert len(dm.split_items("train")) == 20
    assert [it["example"] for it in dm.split_items("validation")] == [it["example"] for it in dm.split_items("test")]
    samsum = make_dm(SamsumDataModule, name="samsum", metric="rougeL", path=str(FIXTURES / "samsum"), protocol="paper")
    ids = {it["example"]["id"] for it in samsum.split_items("test")}
    assert ids == {f"fxte{i:03d}" for i in range(4)}  # SAMSum: the paper evaluated on the hub test split
    clean = make_dm(SamsumDataModule, name="samsum", metric="rougeL", path=str(FIXTURES / "samsum"))
    assert {it["example"]["id"] for it in clean.split_items("test")} == {f"fxva{i:03d}" for i in range(4)}


def test_mnli_tests_on_matched_and_mismatched(make_dm):
    dm = make_dm(GlueDataModule, task="mnli", name="glue_mnli", metric="accuracy", path=str(FIXTURES / "glue_mnli"))
    assert len(dm.split_items("test")) == 8
    examples = [it["example"] for it in dm.split_items("test")]
    expected = sum(ex["label"] == 0 for ex in examples) / len(examples)
    assert dm.task.score(["0"] * 8, examples)["accuracy"] == pytest.approx(expected)
    assert {ex["label"] for ex in examples} == {0, 1, 2}


def test_subset_for_learning_rate_search(make_dm):
    full = {it["example"]["idx"] for it in rte(make_dm).split_items("train")}
    small = [it["example"]["idx"] for it in rte(make_dm, subset_size=5).split_items("train")]
    assert len(small) == 5
    assert set(small) <= full
    assert small == [it["example"]["idx"] for it in rte(make_dm, subset_size=5).split_items("train")]
    assert subset(list(range(10)), None) == list(range(10))


def test_train_batches_mask_the_prompt_and_padding(make_dm):
    dm = rte(make_dm)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "labels"}
    assert batch["input_ids"].dtype == torch.long
    assert batch["input_ids"].shape == batch["labels"].shape
    lengths = []
    for row in range(batch["input_ids"].shape[0]):
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        target = (labels != -100).nonzero().flatten()
        assert len(target) == 1  # GLUE: the label digit only
        assert ids[target].item() in (17, 18)
        assert ids[target - 1].item() == 4118  # right after the final "###"
        assert (labels[: target[0]] == -100).all()
        lengths.append(target[-1].item() + 1)
        assert (ids[lengths[-1] :] == 0).all()  # right-padded with the pad id
    assert max(lengths) == batch["input_ids"].shape[1]


def test_eval_batches_carry_prompts_and_examples(make_dm, tok):
    dm = rte(make_dm)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"input_ids", "labels", "prompt_ids", "examples"}
    for row, prompt in enumerate(batch["prompt_ids"]):
        assert batch["input_ids"][row, : len(prompt)].tolist() == prompt
        assert prompt[-1] == 4118
        assert str(batch["examples"][row]["label"]) == tok.decode(
            batch["input_ids"][row, len(prompt) : len(prompt) + 1]
        )
    assert [ex["index"] for ex in batch["examples"]] == list(range(len(batch["examples"])))
    assert dm.task.generative is False


def test_shuffling_is_seeded_and_changes_with_the_epoch(make_dm):
    def order(dm, epoch):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [tuple(row) for b in loader for row in b["input_ids"].tolist()]

    a, b = rte(make_dm), rte(make_dm)
    assert order(a, 0) == order(b, 0)
    assert order(a, 1) != order(a, 0)
    assert order(a, 1) == order(b, 1)


def test_cache_is_reused_and_keyed_by_every_option(make_dm, tmp_path, monkeypatch):
    path = tmp_path / "rte"
    shutil.copytree(FIXTURES / "glue_rte", path)
    first = rte(make_dm, path=str(path))
    items = first.split_items("train")

    def no_loading(self, split):
        raise AssertionError("rows were loaded again")

    monkeypatch.setattr(GlueDataModule, "load_rows", no_loading)
    assert rte(make_dm, path=str(path)).split_items("train") == items
    for change in ({"seed": 7}, {"subset_size": 3}, {"max_length": 40}, {"protocol": "paper"}):
        with pytest.raises(AssertionError, match="loaded again"):
            rte(make_dm, path=str(path), **change).split_items("train")
    with pytest.raises(AssertionError, match="loaded again"):
        make_dm(GlueDataModule, task="mrpc", name="glue_rte", metric="accuracy", path=str(path)).split_items("train")
    with (path / "train.jsonl").open("a") as f:
        f.write('{"sentence1": "New.", "sentence2": "Row.", "label": 0, "idx": 99}\n')
    with pytest.raises(AssertionError, match="loaded again"):
        rte(make_dm, path=str(path)).split_items("train")


def test_max_length_drops_long_examples(make_dm):
    full = rte(make_dm, cache_dir=None).split_items("test")
    limit = sorted(len(it["prompt_ids"]) + len(it["target_ids"]) for it in full)[len(full) // 2]
    dm = rte(make_dm, max_length=limit)
    kept = dm.split_items("test")
    long = [it for it in full if len(it["prompt_ids"]) + len(it["target_ids"]) > limit]
    assert long
    assert dm.dropped["test"] == len(long)
    assert len(kept) == len(full) - len(long)
    assert all(len(it["prompt_ids"]) + len(it["target_ids"]) <= limit for it in kept)


def test_max_eval_examples_caps_validation_and_test(make_dm):
    dm = rte(make_dm, max_eval_examples=3)
    assert len(dm.split_items("test")) == 3
    assert len(dm.split_items("train")) == 16


def test_real_data_from_save_to_disk(make_dm, release_data):
    dm = make_dm(GlueDataModule, task="sst2", name="glue_sst2", metric="accuracy", path=str(release_data / "glue_sst2"))
    assert len(dm.split_items("test")) == 872
    dart = make_dm(DartDataModule, name="dart", metric="bleu", path=str(release_data / "dart"), protocol="paper")
    items = dart.split_items("test")
    assert len(items) == 2768
    assert sum(len(it["example"]["references"]) for it in items) == 6980


def test_spider_release_folder_with_real_schemas(make_dm, release_data):
    # dev.json and tables.json as in the Spider release
    spider = str(release_data / "spider")
    dm = make_dm(SpiderDataModule, name="spider", metric="exec_acc", path=spider, protocol="paper")
    items = dm.split_items("test")
    assert len(items) == 1034
    assert dm.dropped["test"] == 0  # no dev example reaches 1536 tokens
    first = items[0]["example"]
    assert (first["db_id"], first["question"]) == ("concert_singer", "How many singers do we have?")
    schema = (
        "stadium: stadium_id number ,  location text ,  name text ,  capacity number ,  highest number ,  "
        "lowest number ,  average number ,  foreign:  ,  primary: stadium_id | "
        "singer: singer_id number ,  name text ,  country text ,  song_name text ,  song_release_year text ,  "
        "age number ,  is_male others ,  foreign:  ,  primary: singer_id | "
        "concert: concert_id number ,  concert_name text ,  theme text ,  stadium_id text ,  year text ,  "
        "foreign: stadium_id from stadium ,  primary: concert_id | "
        "singer_in_concert: concert_id number ,  singer_id text ,  "
        "foreign: singer_id from singer , concert_id from concert ,  primary: concert_id"
    )
    prompt = "Create a sql request for the following question and schema:\n###"
    prompt += "Question: How many singers do we have?\\Schema: " + schema + "\n###"
    assert dm.tokenizer.decode(items[0]["prompt_ids"]) == prompt
    target = dm.tokenizer.decode(items[0]["target_ids"], skip_special_tokens=False)
    assert target == "select count(*) from singer<|endoftext|>"


def test_local_file_formats(make_dm, tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIXTURES / "glue_rte" / "validation.jsonl").read_text().splitlines()]
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "validation.json").write_text(json.dumps(rows))
    (tmp_path / "parquet").mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:4]), tmp_path / "parquet" / "validation-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[4:]), tmp_path / "parquet" / "validation-00001-of-00002.parquet")
    expected = [it["example"] for it in rte(make_dm, protocol="paper").split_items("test")]
    for folder in ("json", "parquet"):
        dm = rte(make_dm, path=str(tmp_path / folder), protocol="paper")
        assert [it["example"] for it in dm.split_items("test")] == expected


def test_bad_input_is_a_user_error(make_dm, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        rte(make_dm, path=str(tmp_path / "missing")).split_items("train")
    with pytest.raises(UserError, match="hub schema"):
        rte(make_dm, path=str(FIXTURES / "samsum")).split_items("train")
    with pytest.raises(UserError, match="no data for split"):
        rte(make_dm, path=str(FIXTURES / "spider" / "database")).split_items("train")
    with pytest.raises(UserError, match="protocol"):
        rte(make_dm, protocol="best")
    with pytest.raises(UserError, match="task"):
        make_dm(GlueDataModule, task="wnli2", name="x", metric="accuracy")
    spider = make_dm(SpiderDataModule, name="spider", metric="exec_acc", path=str(FIXTURES / "spider"),
                     tables=str(tmp_path / "tables.json"))  # fmt: skip
    with pytest.raises(UserError, match="tables.json"):
        spider.split_items("test")


def test_unreachable_hub_is_a_user_error(make_dm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match="dataset.path"):
        make_dm(GlueDataModule, task="rte", name="glue_rte", metric="accuracy").split_items("test")


def test_connect_late_binds_the_tokenizer_and_max_length(make_dm, tmp_path):
    class CharTokenizer:  # no tokenizer.json behind it: its tokens must not go to the disk cache
        eos_id = pad_id = 0

        def encode(self, text):
            return [ord(c) for c in text]

        def decode(self, ids):
            return "".join(map(chr, ids))

    dm = rte(make_dm)
    dm.split_items("train")
    cached = sorted((tmp_path / "cache").iterdir())
    dm.connect(tokenizer=CharTokenizer(), max_length=10_000)
    items = dm.split_items("train")
    assert all(it["target_ids"] in ([ord("0")], [ord("1")]) for it in items)
    lengths = sorted(len(it["prompt_ids"]) + 1 for it in items)
    dm.connect(max_length=lengths[len(lengths) // 2])
    assert len(dm.split_items("train")) == sum(n <= lengths[len(lengths) // 2] for n in lengths)
    assert sorted((tmp_path / "cache").iterdir()) == cached
