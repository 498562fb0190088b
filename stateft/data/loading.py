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
    rows = Rows()
    for file in files:
        rows.extend_from(_read_file(file))
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


class Rows(list):
    """Rows read from local files, with where each came from (``origin(i)``: file and line) for error messages."""

    def __init__(self, rows: list[dict[str, Any]] = (), origins: list[tuple[Path, str]] | None = None) -> None:
        super().__init__(rows)
        self.origins: list[tuple[Path, str]] = origins if origins is not None else []

    def extend_from(self, other: Rows) -> None:
        self.extend(other)
        self.origins.extend(other.origins)

    def origin(self, i: int) -> str:
        if i < len(self.origins):
            file, where = self.origins[i]
            return f"{file} {where}"
        return f"row {i + 1}"


def origin(rows: list[dict[str, Any]], i: int) -> str:
    """Where row ``i`` came from: ``<file> line N`` for local files, ``row N`` for hub data."""
    return rows.origin(i) if isinstance(rows, Rows) else f"row {i + 1}"


def _read_file(file: Path) -> Rows:
    """The rows of one file: parquet, one JSON array, or JSON lines. Errors name the file and the line."""
    if file.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(file).to_pylist()
        except (OSError, ValueError) as err:
            raise UserError(f"cannot read {file} as parquet ({type(err).__name__}: {_first_line(err)})") from None
        return Rows(rows, [(file, f"row {i + 1}") for i in range(len(rows))])
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{file} is not UTF-8 text (byte {err.object[err.start : err.start + 1]!r} at offset {err.start}); "
            "save it as UTF-8"
        ) from None
    except OSError as err:
        raise UserError(f"cannot read {file}: {err.strerror or err}") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(
                f"{file}:{err.lineno}: invalid JSON ({err.msg}, column {err.colno}); fix that line"
            ) from None
        origins = [(file, f"item {i + 1}") for i in range(len(rows))]
    else:
        rows, origins = [], []
        for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit inside a JSON string
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(
                    f"{file}:{n}: invalid JSON ({err.msg}, column {err.colno}); each line must be one JSON object"
                ) from None
            origins.append((file, f"line {n}"))
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            where = origins[i][1]
            raise UserError(
                f"{file} {where}: expected a JSON object, got {type(row).__name__} "
                "(one object per line, or one array of objects)"
            )
    return Rows(rows, origins)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else ""


# Types of the hub schema's fields where a wrong one would crash formatting: the text fields are strings, a GLUE
# label is a class id (an integer, or a string of one). samsum's dialogue/summary may be null (those rows are dropped).
TEXT_FIELDS = frozenset(
    ("sentence", "sentence1", "sentence2", "question", "question1", "question2", "premise", "hypothesis", "db_id",
     "query", "instruction", "input", "output", "answer")
)  # fmt: skip
NULLABLE_TEXT_FIELDS = frozenset(("dialogue", "summary"))


def _field_problem(field: str, value: Any) -> str | None:
    if field == "label":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return f"label {value!r} must be an integer class id"
        if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
            return f"label {value!r} must be an integer class id (0, 1, ...), not a label name"
    elif field in TEXT_FIELDS and not isinstance(value, str):
        return f"field {field!r} must be a string, got {type(value).__name__}"
    elif field in NULLABLE_TEXT_FIELDS and value is not None and not isinstance(value, str):
        return f"field {field!r} must be a string or null, got {type(value).__name__}"
    return None


def require_fields(
    rows: list[dict[str, Any]], fields: tuple[str, ...], where: str, optional: tuple[str, ...] = ()
) -> None:
    """Every row has ``fields`` with usable types (the hub schema), and ``optional`` fields, which may be missing or
    null, have them where given; else a UserError naming the file and line."""
    for i, row in enumerate(rows):
        missing = [f for f in fields if f not in row]
        if missing:
            raise UserError(
                f"{where}: {origin(rows, i)} lacks fields {missing} (has {sorted(row)}); the data must use the hub "
                "schema"
            )
        for field in [*fields, *(f for f in optional if row.get(f) is not None)]:
            problem = _field_problem(field, row[field])
            if problem is not None:
                raise UserError(f"{where}: {origin(rows, i)}: {problem}, as in the hub schema")
