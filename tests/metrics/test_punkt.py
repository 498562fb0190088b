"""METEOR's tokenisation = nltk.word_tokenize with the English punkt model, offline and without running its file."""

from __future__ import annotations

import json

import nltk
import pytest

from stateft.metrics import meteor, punkt


def test_sentence_final_periods_become_tokens_and_abbreviations_stay():
    text = "It was cold. We left at 5 p.m. on Jan. 3. Mr. Smith stayed."
    tokens = meteor.tokenize(text)
    assert tokens[:4] == ["It", "was", "cold", "."]  # punkt split after "cold."
    assert {"p.m.", "Jan.", "Mr."} <= set(tokens)  # the abbreviation table keeps these whole
    # without sentence splitting only the text's last period is split off
    assert "cold." in nltk.word_tokenize(text, preserve_line=True)


def _write_punkt_tab(root, tables):
    """The tables in nltk's own punkt_tab layout (what nltk.download('punkt_tab') installs)."""
    lang = root / "tokenizers" / "punkt_tab" / "english"
    lang.mkdir(parents=True)
    (lang / "abbrev_types.txt").write_text("\n".join(sorted(tables["abbrev_types"])), encoding="utf-8")
    (lang / "sent_starters.txt").write_text("\n".join(sorted(tables["sent_starters"])), encoding="utf-8")
    pairs = sorted("\t".join(pair) for pair in tables["collocations"])
    (lang / "collocations.tab").write_text("\n".join(pairs), encoding="utf-8")
    ortho = sorted(f"{k}\t{v}" for k, v in tables["ortho_context"].items())
    (lang / "ortho_context.tab").write_text("\n".join(ortho), encoding="utf-8")


def test_equals_nltk_word_tokenize_loading_the_same_tables_on_dart(tmp_path, monkeypatch, release_data):
    tables = punkt.read_tables(punkt.english_tables_path().read_text(encoding="utf-8"))
    _write_punkt_tab(tmp_path, tables)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path), *nltk.data.path])
    rows = json.loads((release_data / "dart" / "dart-v1.1.1-full-dev.json").read_text())
    texts = [a["text"] for row in rows[:400] for a in row["annotations"]]
    texts.append("It was cold. We left at 5 p.m. on Jan. 3. Mr. Smith stayed.")
    multi = [t for t in texts if len(nltk.sent_tokenize(t)) > 1]
    assert multi  # the comparison covers texts that punkt splits
    for text in texts:
        assert meteor.tokenize(text) == nltk.word_tokenize(text)


def test_tables_are_read_as_literals_never_run():
    with pytest.raises(ValueError):
        punkt.read_tables("ABBREV_TYPES = __import__('os').system('true')\n")
    with pytest.raises(ValueError, match="missing"):
        punkt.read_tables("ABBREV_TYPES = frozenset(('mr',))\n")
    good = "ABBREV_TYPES = frozenset(('mr',))\nCOLLOCATIONS = frozenset(())\nSENT_STARTERS = frozenset(())\n"
    assert punkt.read_tables(good + "ORTHO_CONTEXT = {'a': 2}\n")["abbrev_types"] == ("mr",)
