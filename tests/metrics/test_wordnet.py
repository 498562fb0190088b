"""WordNet for nltk from Debian's packages: the lexnames file and a folder nltk reads like its own download."""

from __future__ import annotations

import nltk
import pytest

from stateft.metrics import wordnet


def test_lexnames_lists_the_45_lexicographer_files():
    lines = [line.split("\t") for line in wordnet.lexnames_text().splitlines()]
    assert len(lines) == 45
    assert [int(n) for n, _, _ in lines] == list(range(45))
    names = [name for _, name, _ in lines]
    assert names[:4] == ["adj.all", "adj.pert", "adv.all", "noun.Tops"]
    assert names[28:30] == ["noun.time", "verb.body"]
    assert names[-1] == "adj.ppl"
    assert all(cat == str(wordnet.CATEGORY[name.split(".")[0]]) for _, name, cat in lines)


def test_installed_wordnet_is_wordnet_3_0_as_nltk_expects():
    # make install put it there (or nltk had it already); reading it exercises every file nltk uses for METEOR
    assert wordnet.have_wordnet(), "run `python -m stateft.metrics.wordnet --install`"
    from nltk.corpus import wordnet as wn

    assert wn.get_version() == "3.0"
    assert wn.synset("dog.n.01").lexname() == "noun.animal"  # lexnames
    assert wn.morphy("geese", wn.NOUN) == "goose"  # noun.exc
    assert wn.lemma_from_key("dog%1:05:00::").synset() == wn.synset("dog.n.01")  # index.sense
    assert "auto" in wn.synset("car.n.01").lemma_names()


def test_copy_debian_files_gives_nltks_layout(tmp_path):
    if not (wordnet.DEBIAN_DIR / "data.noun").is_file():
        pytest.fail("Debian's wordnet-base is missing: `python -m stateft.metrics.wordnet --install` installs it")
    dest = tmp_path / "wordnet"
    wordnet.copy_debian_files(wordnet.DEBIAN_DIR, dest)
    for name in wordnet.WORDNET_FILES:
        assert (dest / name).read_bytes() == (wordnet.DEBIAN_DIR / name).read_bytes()
    assert (dest / "lexnames").read_text() == wordnet.lexnames_text()
    # the data files carry the WordNet 3.0 licence header that nltk's get_version() reads
    assert b"WordNet 3.0" in (dest / "data.adj").read_bytes()[:2000]


def test_install_is_idempotent_and_reports_present():
    assert wordnet.install(timeout=5) == "present"
    assert wordnet.main(["--install"]) == 0


def test_missing_wordnet_is_detected(monkeypatch, tmp_path):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    assert not wordnet.have_wordnet()
