"""Prompt formats byte-exact to benchmarks.md, tokenised as prefix / input / target with the real NeoX tokenizer
(prefix and input apart or, ``prefix_tokenization: joint``, as one string)."""

from __future__ import annotations

import json

import pytest

from stateft.data.dart import format_dart
from stateft.data.glue import GLUE_TASKS, format_glue
from stateft.data.samsum import format_samsum
from stateft.data.spider import format_spider, serialize_schema
from stateft.errors import UserError
from stateft.metrics.spider.schema import Schema
from tests.data.conftest import FIXTURES

HASHES, EOS, ZERO, ONE, TWO = 4118, 0, 17, 18, 19  # "###", "<|endoftext|>", "0", "1", "2" in GPT-NeoX-20B


def pieces(tok, ids):
    return [tok.decode([i], skip_special_tokens=False) for i in ids]


def test_glue_pair_prompt_and_tokens(make_dm, tok):
    from stateft.data.glue import GlueDataModule

    row = {"sentence1": "A cat sat.", "sentence2": "A dog ran.", "label": 1, "idx": 0}
    ex = format_glue(GLUE_TASKS["rte"], row)
    assert ex.prefix == (
        "Determine if the given pair of sentences displays entailment or not_entailment. "
        "Respond with '0' if entailment or '1' if not_entailment: "
    )
    assert ex.input == "A cat sat.###A dog ran.###"
    assert ex.target == "1"
    dm = make_dm(GlueDataModule, task="rte", name="glue_rte", metric="accuracy")
    item = dm.tokenize(ex)
    n_prefix = len(tok.encode(ex.prefix))
    assert pieces(tok, item["prompt_ids"][n_prefix:]) == [
        "A",
        " cat",
        " sat",
        ".",
        "###",
        "A",
        " dog",
        " ran",
        ".",
        "###",
    ]
    assert item["prompt_ids"][-1] == HASHES
    assert item["target_ids"] == [ONE]  # the label digit, no EOS
    # separate tokenisation: the instruction's trailing space stays its own token instead of merging into " A"
    assert pieces(tok, item["prompt_ids"][n_prefix - 1 : n_prefix + 1]) == [" ", "A"]
    assert item["prompt_ids"] != tok.encode(ex.prefix + ex.input)


def rte_fixture(make_dm, **overrides):
    """GLUE RTE on the bundled fixture rows (every DataModule made here shares one cache folder)."""
    from stateft.data.glue import GlueDataModule

    path = str(FIXTURES / "glue_rte")
    return make_dm(GlueDataModule, task="rte", name="glue_rte", metric="accuracy", path=path, **overrides)


def test_glue_prefix_tokenization_at_the_instruction_sentence_boundary(make_dm, tok):
    row = json.loads((FIXTURES / "glue_rte" / "validation.jsonl").read_text().splitlines()[0])
    instruction = GLUE_TASKS["rte"].instruction
    text = row["sentence1"] + "###" + row["sentence2"] + "###"
    assert text.startswith("The ")
    assert instruction.endswith(": ")
    n = len(tok.encode(instruction))
    # separate is built first: a cache key without the option would hand its tokens to joint below
    separate = rte_fixture(make_dm).split_items("test")[0]
    joint = rte_fixture(make_dm, prefix_tokenization="joint").split_items("test")[0]
    assert pieces(tok, separate["prompt_ids"][n - 2 : n + 1]) == [":", " ", "The"]
    assert pieces(tok, joint["prompt_ids"][n - 2 : n]) == [":", " The"]
    assert separate["prompt_ids"] == tok.encode(instruction) + tok.encode(text)
    assert joint["prompt_ids"] == tok.encode(instruction + text)
    assert len(joint["prompt_ids"]) == len(separate["prompt_ids"]) - 1
    assert joint["prompt_ids"][n:] == separate["prompt_ids"][n + 1 :]  # only the boundary differs
    assert joint["target_ids"] == separate["target_ids"] == [ZERO]  # the target is tokenised on its own either way


def test_prefix_tokenization_rejects_unknown_values(make_dm):
    with pytest.raises(UserError, match="dataset.prefix_tokenization must be one of"):
        rte_fixture(make_dm, prefix_tokenization="sst")


def test_glue_single_sentence_and_three_class_tasks():
    cola = format_glue(GLUE_TASKS["cola"], {"sentence": "He run.", "label": 0, "idx": 3})
    assert cola.prefix + cola.input == (
        "Review the sentence below and identify whether its grammar is Unacceptable or Acceptable. "
        "Respond with '0' if Unacceptable or '1' if Acceptable: He run.###"
    )
    mnli = format_glue(GLUE_TASKS["mnli"], {"premise": "P.", "hypothesis": "H.", "label": 2, "idx": 0})
    assert mnli.prefix + mnli.input + mnli.target == (
        "Assess the connection between the following sentences and classify it as entailment, neutral, or "
        "contradiction. Respond with '0' if entailment, '1' if neutral or '2' if contradiction: P.###H.###2"
    )
    qnli = format_glue(GLUE_TASKS["qnli"], {"question": "Q?", "sentence": "S.", "label": 0, "idx": 0})
    assert qnli.input == "Q?###S.###"
    assert qnli.prefix.endswith("Respond with '0' if entailment or '1' if not_entailment: ")
    assert GLUE_TASKS["qqp"].instruction == (
        "Can these two statements be considered equal in meaning? "
        "Respond with '0' if not_equivalent or '1' if equivalent: "
    )
    assert GLUE_TASKS["sst2"].fields == ("sentence",)


def test_samsum_prompt_keeps_crlf_and_ends_target_with_eos(tok):
    ex = format_samsum({"id": "1", "dialogue": "Ann: Hi!\r\nBo: Hello.", "summary": "They greet."})
    assert (ex.prefix, ex.input, ex.target) == ("", "Ann: Hi!\r\nBo: Hello.###", "They greet.<|endoftext|>")
    assert tok.encode(ex.target)[-1] == EOS
    assert tok.encode(ex.input)[-1] == HASHES


def test_dart_one_example_per_reference_when_training():
    row = {
        "tripleset": [["Mars Hill College", "JOINED", "1973"], ["Mars Hill College", "LOCATION", "Mars Hill"]],
        "annotations": {"source": ["a", "b"], "text": ["First text.", "Second text."]},
    }
    train = format_dart(row, train=True)
    assert [e.target for e in train] == ["First text.<|endoftext|>", "Second text.<|endoftext|>"]
    assert train[0].prefix == "Generate text for the following RDF triples:\n"
    assert train[0].input == "Mars Hill College : JOINED : 1973 | Mars Hill College : LOCATION : Mars Hill###"
    (evaluation,) = format_dart(row, train=False)
    assert evaluation.meta["references"] == ["First text.", "Second text."]
    raw = {**row, "annotations": [{"source": "a", "text": "First text."}, {"source": "b", "text": "Second text."}]}
    assert format_dart(raw, train=False) == [evaluation]  # the raw JSON's list of dicts reads the same


CONCERT = Schema.from_entry(
    {
        "db_id": "concert_demo",
        "table_names_original": ["Singer", "Concert"],
        "column_names_original": [[-1, "*"], [0, "Singer_ID"], [0, "Name"], [1, "Concert_ID"], [1, "Singer_ID"]],
        "column_types": ["text", "number", "text", "number", "number"],
        "primary_keys": [1, 3],
        "foreign_keys": [[4, 1]],
    }
)


def test_spider_schema_serialisation_matches_the_documented_example():
    assert serialize_schema(CONCERT) == (
        "Singer: singer_id number ,  name text ,  foreign:  ,  primary: singer_id | "
        "Concert: concert_id number ,  singer_id number ,  foreign: singer_id from singer ,  primary: concert_id"
    )


def test_spider_prompt_and_lower_cased_target(tok):
    row = {
        "db_id": "concert_demo",
        "question": "How many singers?",
        "query": "SELECT count(*) FROM Singer WHERE Name = 'Ann' ",
    }
    ex = format_spider(row, CONCERT)
    assert ex.prefix == "Create a sql request for the following question and schema:\n###"
    assert ex.input == "Question: How many singers?\\Schema: " + serialize_schema(CONCERT) + "\n###"
    assert "\\Schema" in ex.input
    assert "\\\\" not in ex.input
    assert ex.target == "select count(*) from singer where name = 'ann'<|endoftext|>"
    assert ex.meta["query"] == row["query"]  # the metric executes the original gold
    assert tok.encode(ex.prefix)[-1] == HASHES


def test_spider_composite_and_multiple_keys():
    schema = Schema.from_entry(
        {
            "db_id": "x",
            "table_names_original": ["A", "B"],
            "column_names_original": [[-1, "*"], [0, "id"], [1, "a_id"], [1, "k"]],
            "column_types": ["text", "number", "number", "text"],
            "primary_keys": [1, [2, 3]],
            "foreign_keys": [[2, 1], [3, 1]],
        }
    )
    assert serialize_schema(schema) == (
        "A: id number ,  foreign:  ,  primary: id | B: a_id number ,  k text ,  foreign: id from a , id from a ,  "
        "primary: a_id , k"
    )
