"""Local data files: a bad row or a bad line is one UserError naming the file and its line (or row) number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stateft.data.loading import load_split, require_fields
from stateft.errors import UserError

GOOD = {"sentence1": "A cat sat.", "sentence2": "A cat.", "label": 0, "idx": 0}


def _jsonl(folder: Path, split: str, lines: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rows(folder: Path, split: str = "train") -> list[dict]:
    rows = load_split("nyu-mll/glue", "rte", split, folder)
    require_fields(rows, ("sentence1", "sentence2", "label"), f"glue/rte {split}")
    return rows


def _error(folder: Path, split: str = "train") -> str:
    with pytest.raises(UserError) as err:
        _rows(folder, split)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_an_invalid_json_line_is_reported_at_its_line_in_the_file(tmp_path):
    # blank lines are skipped when reading, but still counted: the error names line 4 of the file
    path = _jsonl(tmp_path, "train", [json.dumps(GOOD), "", json.dumps(GOOD), '{"sentence1": "x", "label": 0'])
    message = _error(tmp_path)
    assert f"{path}:4: invalid JSON" in message


def test_a_row_missing_a_field_names_its_file_and_line(tmp_path):
    row = {k: v for k, v in GOOD.items() if k != "label"}
    path = _jsonl(tmp_path, "train", [json.dumps(GOOD)] * 4 + [json.dumps(row)])  # not the first row
    message = _error(tmp_path)
    assert f"{path} line 5 lacks fields ['label']" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("label", "entailment", "label 'entailment' must be an integer class id"),
        ("label", 1.0, "label 1.0 must be an integer class id"),
        ("label", True, "label True must be an integer class id"),
        ("sentence2", None, "field 'sentence2' must be a string, got NoneType"),
        ("sentence1", 12, "field 'sentence1' must be a string, got int"),
    ],
)
def test_a_field_of_the_wrong_type_names_its_file_and_line(tmp_path, field, value, expected):
    path = _jsonl(tmp_path, "train", [json.dumps(GOOD), json.dumps({**GOOD, field: value})])
    message = _error(tmp_path)
    assert f"{path} line 2: {expected}" in message


def test_integer_labels_given_as_strings_are_accepted(tmp_path):
    _jsonl(tmp_path, "train", [json.dumps({**GOOD, "label": "1"}), json.dumps(GOOD)])
    assert len(_rows(tmp_path)) == 2


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "train.jsonl").write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"sentence1": "caf\xe9"}\n')
    message = _error(tmp_path)
    assert f"{tmp_path / 'train.jsonl'} is not UTF-8 text" in message
    assert "offset" in message


def test_a_json_array_names_the_bad_item(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps([GOOD, GOOD, {**GOOD, "label": "yes"}]))
    assert f"{tmp_path / 'train.json'} item 3: label 'yes'" in _error(tmp_path)
    (tmp_path / "train.json").write_text(json.dumps([GOOD, [1, 2]]))
    assert "item 2: expected a JSON object, got list" in _error(tmp_path)


def test_a_line_separator_inside_a_string_stays_in_its_row(tmp_path):
    # U+2028 is legal inside a JSON string; str.splitlines() would cut the row in two
    text = json.dumps({**GOOD, "sentence1": "one\u2028two"}, ensure_ascii=False)
    _jsonl(tmp_path, "train", [text, json.dumps(GOOD)])
    rows = _rows(tmp_path)
    assert [r["sentence1"] for r in rows] == ["one\u2028two", "A cat sat."]


def test_rows_of_several_shards_keep_their_own_file(tmp_path):
    _jsonl(tmp_path, "train-00000-of-00002", [json.dumps(GOOD)] * 2)
    second = _jsonl(tmp_path, "train-00001-of-00002", [json.dumps(GOOD), json.dumps({**GOOD, "label": "no"})])
    assert f"{second} line 2: label 'no'" in _error(tmp_path)


def test_hub_rows_are_named_by_their_row_number():
    with pytest.raises(UserError, match=r"glue/rte train: row 2 lacks fields \['label'\]"):
        require_fields([GOOD, {"sentence1": "a", "sentence2": "b"}], ("sentence1", "label"), "glue/rte train")


def test_a_damaged_parquet_file_is_one_line(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"PAR1 not really parquet")
    message = _error(tmp_path)
    assert f"cannot read {tmp_path / 'train.parquet'} as parquet" in message
