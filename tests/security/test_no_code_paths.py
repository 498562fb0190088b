"""The modules that read shared files have no way to run what they read: no instantiate on a foreign node, no
unpickling, no import by name; a regression guard over their source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from stateft.data.predictions import score_predictions_file
from tests.security.conftest import REPO, payload_targets

READERS = ["stateft/foreign.py", "stateft/adapters.py", "stateft/app/run_config.py", "stateft/data/predictions.py",
           "stateft/app/evaluation.py", "stateft/export.py", "stateft/export_peft.py", "stateft/merge.py"]  # fmt: skip
# calls that run or import code, or unpickle; json.loads and OmegaConf.load (our own conf/) are fine
FORBIDDEN = {"pickle.load", "pickle.loads", "torch.load", "yaml.load", "yaml.unsafe_load", "eval", "exec",
             "importlib.import_module", "__import__", "get_class", "get_method", "get_object", "_locate",
             "literal_eval", "dill.load", "joblib.load"}  # fmt: skip


def _dotted(f: ast.expr) -> str:
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f"{_dotted(f.value)}.{f.attr}" if isinstance(f.value, ast.Name | ast.Attribute) else f.attr
    return ""


def _calls(path: Path) -> list[tuple[str, int, str, ast.Call]]:
    """(dotted name, line, enclosing function, node) of every call inside a function of the module."""
    out = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            out += [(_dotted(n.func), n.lineno, fn.name, n) for n in ast.walk(fn) if isinstance(n, ast.Call)]
    return out


@pytest.mark.parametrize("module", READERS)
def test_readers_never_unpickle_or_import_by_name(module):
    tree = ast.parse((REPO / module).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"pickle", "dill", "joblib", "importlib", "yaml", "ast"}, imported
    bad = []
    for name, line, _, node in _calls(REPO / module):
        last = name.rsplit(".", 1)[-1]
        if name in FORBIDDEN or last in {"get_class", "get_method", "get_object", "_locate", "import_module"}:
            bad.append((name, line))
        pickles = [k for k in node.keywords if k.arg in ("allow_pickle", "weights_only")]
        if any(not (isinstance(k.value, ast.Constant) and k.value.value is (k.arg == "weights_only")) for k in pickles):
            bad.append((name, line))
    assert not bad, f"{module}: {bad}"


@pytest.mark.parametrize("module", READERS)
def test_instantiate_is_called_only_on_our_own_configs(module):
    """DatasetSpec.build instantiates our config (or the user's command line); eval builds the user's trainer."""
    allowed = {("stateft/app/run_config.py", "build"), ("stateft/app/evaluation.py", "_run_adapter")}
    calls = [(module, where) for name, _, where, _ in _calls(REPO / module) if name.endswith("instantiate")]
    assert set(calls) <= allowed, calls


def test_scoring_never_instantiates_a_node(tmp_path, marker):
    node = OmegaConf.create(payload_targets(tmp_path, marker)["os.system"])
    (tmp_path / "p.jsonl").write_text('{"index": 0, "prediction": "x"}\n')
    with pytest.raises(TypeError, match="needs a DataModule"):
        score_predictions_file(node, tmp_path / "p.jsonl")
    assert not marker.exists()
