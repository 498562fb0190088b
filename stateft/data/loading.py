"""Read one split of a dataset as a list of row dicts: from the Hugging Face hub or from a local folder.

A local ``path`` may hold (checked in this order):
- a ``datasets`` ``save_to_disk`` folder of a DatasetDict (``dataset_dict.json``) or one folder per split
  (``<path>/<split>/state.json``), or a single-split ``save_to_disk`` folder when only one split is asked for;
- files with the hub schema: ``<split>.jsonl`` / ``<split>.json`` (JSON lines or one JSON array) /
  ``<split>.parquet`` / sharded ``<split>-00000-of-00002.parquet``; ``aliases`` adds other stems per split (Spider's
  ``dev.json``, DART's ``*-dev.json``).
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any

from stateft.errors import UserError

SUFFIXES = (".jsonl", ".json", ".parquet")


PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(path: str | Path | None) -> Path | None:
    """``path`` with ``~`` expanded; a relative path missing from the working directory is tried against the project
    root, so ``dataset.path=tests/fixtures/glue_rte`` works from any directory of a checkout."""
    if path is None:
        return None
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and not candidate.exists() and (PROJECT_ROOT / candidate).exists():
        return PROJECT_ROOT / candidate
    return candidate


def load_split(
    hub_id: str,
    config: str | None,
    split: str,
    path: str | Path | None = None,
    aliases: tuple[str, ...] = (),
    revision: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of ``split`` from ``path`` when given, else from the hub (``datasets.load_dataset(hub_id, config)``;
    ``revision`` e.g. ``refs/convert/parquet`` for datasets that are only a loading script on their main branch)."""
    if path is not None:
        return _load_local(Path(path).expanduser(), split, aliases)
    return _load_hub(hub_id, config, split, revision)


def _load_hub(hub_id: str, config: str | None, split: str, revision: str | None = None) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, config, split=split, revision=revision)
    except Exception as err:  # offline, gated, renamed: all end the same way for the user
        name = f"{hub_id}" + (f" ({config})" if config else "")
        raise UserError(
            f"cannot load {name} split {split!r} from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else ''}); save it where you have access "
            f"(datasets save_to_disk, or JSONL/parquet files with the hub schema) and set dataset.path=<folder>"
        ) from None
    return ds.to_list()


def _load_local(root: Path, split: str, aliases: tuple[str, ...]) -> list[dict[str, Any]]:
    if not root.exists():
        raise UserError(f"dataset.path {str(root)!r} does not exist; point it at a folder with the data files")
    if root.is_file():
        return _read_file(root)
    if (root / "dataset_dict.json").is_file():
        import datasets

        dd = datasets.load_from_disk(str(root))
        if split not in dd:
            raise UserError(f"{root} has splits {sorted(dd)}, not {split!r}")
        return dd[split].to_list()
    if (root / split / "state.json").is_file():
        import datasets

        return datasets.load_from_disk(str(root / split)).to_list()
    files = _split_files(root, split, aliases)
    if not files:
        found = sorted(p.name for p in root.iterdir())[:20]
        raise UserError(
            f"no data for split {split!r} in {root} (looked for {split}.jsonl/.json/.parquet, a save_to_disk "
            f"folder {split}/, or {list(aliases)}); found {found}"
        )
    rows: list[dict[str, Any]] = []
    for file in files:
        rows.extend(_read_file(file))
    return rows


def _split_files(root: Path, split: str, aliases: tuple[str, ...]) -> list[Path]:
    """Files for ``split``: the exact stem, else its shards (``split-00000-of-00002``), else glob ``aliases``."""
    candidates = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in SUFFIXES)
    exact = [p for p in candidates if p.stem == split]
    if exact:
        return exact[:1]
    shard = re.compile(rf"^{re.escape(split)}-\d+-of-\d+$")
    shards = [p for p in candidates if shard.match(p.stem)]
    if shards:
        return shards
    return [p for p in candidates if any(fnmatch.fnmatchcase(p.stem, pattern) for pattern in aliases)]


def _read_file(file: Path) -> list[dict[str, Any]]:
    try:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(file).to_pylist()
        text = file.read_text(encoding="utf-8")
        stripped = text.lstrip()
        if stripped.startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {file}: {type(err).__name__}: {err}") from None
    if not all(isinstance(r, dict) for r in rows):
        raise UserError(f"{file} must hold JSON objects (one per line, or one array of objects)")
    return rows


def require_fields(rows: list[dict[str, Any]], fields: tuple[str, ...], where: str) -> None:
    """Raise a UserError naming the missing fields when the first row lacks one of ``fields`` (wrong schema)."""
    if rows:
        missing = [f for f in fields if f not in rows[0]]
        if missing:
            raise UserError(
                f"{where}: rows lack fields {missing} (have {sorted(rows[0])}); the data must use the hub schema"
            )
