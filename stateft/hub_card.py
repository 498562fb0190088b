"""The model card (``README.md``) pushed with an adapter: what it is, how it was trained, its results, how to load it.

Built from the adapter folder's own records (``stateft.hub.describe_adapter`` reads and checks them): the adapter
config for the method and the base model, the safetensors header for the parameter count, ``run_config.json`` for the
dataset and the training command, and ``metrics.json`` beside the folder (a run folder's) for the results. Values go
into the YAML front matter as JSON strings (a JSON string is a YAML scalar) and into Markdown with ``|``, backticks
and line breaks taken out, so no value can change the card's structure. Torch-free.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

# options of the run that reproduce its numbers, beside the model / method / dataset choices and the method's options
COMMAND_KEYS = (
    "optim.lr",
    "optim.schedule",
    "optim.warmup_ratio",
    "optim.weight_decay",
    "seed",
    "dataset.batch_size",
    "dataset.max_length",
    "trainer.max_epochs",
    "trainer.precision",
)
MAX_METRICS = 40  # rows of the results table
MAX_CELL = 200  # characters of one table cell


@dataclass
class CardFacts:
    """What the card says about one adapter; every field checked or typed by the reader (``describe_adapter``)."""

    repo_id: str
    method: dict[str, Any]  # the resolved method config (name and options)
    base_model: dict[str, Any]  # the adapter's base-model record (name, name_or_path, pretrained, ...)
    trainable: int  # parameters in the adapter's tensors
    peft_format: bool  # a Transformer's adapter in HF peft's format (stateft.methods.peft_adapters)
    stateft_version: str
    license: str
    total: int | None = None  # the base model's parameters (metrics.json's params/total)
    dataset: str | None = None
    dataset_hub_id: str | None = None
    command: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def _cell(value: Any) -> str:
    """A value as the text of one Markdown table cell or inline code span."""
    text = " ".join(str(value).split()).replace("|", "/").replace("`", "'")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def _yaml(value: str) -> str:
    return json.dumps(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def pick_metrics(metrics: Any) -> dict[str, float]:
    """The results worth a table row from a run's ``metrics.json``: numbers under ``test/``, ``validation/`` and the
    best validation value (``..._best``), sorted by name."""
    if not isinstance(metrics, dict):
        return {}
    chosen = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(k, str) and _is_number(v) and (k.startswith(("test/", "validation/")) or k.endswith("_best"))
    }
    return dict(sorted(chosen.items())[:MAX_METRICS])


def _number(key: str, value: float) -> str:
    return f"{value:.0f}" if key.endswith("num_examples") else f"{value:.4f}"


def _select(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _hydra_scalar(key: str, value: Any) -> str | None:
    """``value`` as a Hydra override value, or None for a value a command line does not carry (a node)."""
    from stateft.app.commands import hydra_value

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return repr(value)
    if isinstance(value, str) and _plain(value):
        return hydra_value(key, value)
    if isinstance(value, list) and len(value) <= 16 and all(isinstance(v, str) and _plain(v) for v in value):
        return "[" + ",".join(hydra_value(key, v) for v in value) + "]"
    return None


def _plain(text: str) -> bool:
    """A short one-line printable string without backticks (what a config value of ours is)."""
    return len(text) <= MAX_CELL and text.isprintable() and "`" not in text


def train_command(run_config: Any) -> str | None:
    """``python train.py model=... method=... dataset=...`` with the method's options and the run's ``COMMAND_KEYS``,
    from the run's resolved config; None when it names no model, method or dataset."""
    names = {group: _select(run_config, f"{group}.name") for group in ("model", "method", "dataset")}
    if not all(isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", v) for v in names.values()):
        return None  # not the name of a config file of ours
    args = [f"{group}={_hydra_scalar(group, name)}" for group, name in names.items()]
    for key, value in run_config["method"].items():
        text = None if key in ("name", "selection") else _hydra_scalar(f"method.{key}", value)
        if text is not None:
            args.append(f"method.{key}={text}")
    for key in COMMAND_KEYS:
        value = _select(run_config, key)
        if key == "optim.lr" and value == _select(run_config, "method.lr"):
            continue  # optim.lr follows method.lr
        text = None if value is None else _hydra_scalar(key, value)
        if text is not None:
            args.append(f"{key}={text}")
    return shlex.join(["python", "train.py", *args])


def _front_matter(facts: CardFacts) -> list[str]:
    lines = ["---", "library_name: stateft", f"license: {_yaml(facts.license)}"]
    hub_base = facts.base_model.get("name_or_path")
    if facts.base_model.get("pretrained") and isinstance(hub_base, str) and hub_base.count("/") == 1:
        if not hub_base.startswith((".", "/", "~")):
            lines.append(f"base_model: {_yaml(hub_base)}")
    arch = "gpt_neox" if facts.peft_format else "mamba"
    tags = ["stateft", "peft", arch, str(facts.method.get("name"))]
    lines.append(f"tags: [{', '.join(_yaml(t) for t in tags)}]")
    if facts.dataset_hub_id:
        lines.append(f"datasets: [{_yaml(facts.dataset_hub_id)}]")
    lines.append("pipeline_tag: text-generation")
    return [*lines, "---", ""]


def _base_label(base: dict[str, Any]) -> str:
    name, path = base.get("name"), base.get("name_or_path")
    label = f"`{_cell(name)}`"
    return label + (f" (`{_cell(path)}`)" if base.get("pretrained") and path and path != name else "")


def _loading_code(facts: CardFacts) -> list[str]:
    """Python that builds the base model from the adapter's own record, as ``eval.py`` does, and loads the adapter."""
    lines = [
        "```python",
        "from stateft.adapters import load_adapter, read_adapter_config",
        "from stateft.app.run_config import base_model_node",
        "from stateft.hub import pull",
        "from stateft.models.loading import model_from_config",
        "",
        f"folder = pull({'hf://' + facts.repo_id!r})  # downloaded and checked; add @<commit> to pin it",
        "record = read_adapter_config(folder)['base_model']",
        "model = model_from_config(base_model_node(record, 'base_model'))  # the base model, as eval.py builds it",
        "load_adapter(folder, model)",
        "```",
    ]
    if facts.peft_format:
        lines += [
            "",
            f"The files are HF peft's own format too: `PeftModel.from_pretrained(base, {facts.repo_id!r})` reads them.",
        ]
    return lines


def model_card(facts: CardFacts) -> str:
    """The card's Markdown, front matter included."""
    method = facts.method.get("name")
    shown = {k: v for k, v in facts.method.items() if k not in ("name", "lr", "selection")}
    options = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in shown.items())
    lines = [*_front_matter(facts), f"# {_cell(facts.repo_id)}", ""]
    trained_on = f" on `{_cell(facts.dataset)}`" if facts.dataset else ""
    lines += [
        f"A `{_cell(method)}` adapter for {_base_label(facts.base_model)}, trained with "
        f"[stateft](https://arxiv.org/abs/2503.03499){trained_on}. Only the adapter's tensors are here; the base "
        "model is loaded separately.",
        "",
        "| | |",
        "|---|---|",
        f"| base model | {_base_label(facts.base_model)} |",
        f"| method | `{_cell(method)}`{f' ({_cell(options)})' if options else ''} |",
    ]
    count = f"{facts.trainable:,}"
    if facts.total:
        count += f" ({100 * facts.trainable / facts.total:.3g}% of {facts.total:,})"
    lines.append(f"| trainable parameters | {count} |")
    if facts.dataset:
        lines.append(f"| dataset | `{_cell(facts.dataset)}` |")
    lines += [f"| stateft version | {_cell(facts.stateft_version)} |", ""]
    if facts.metrics:
        lines += ["## Results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_number(k, v)} |" for k, v in facts.metrics.items()]
        lines.append("")
    if facts.command:
        lines += ["## Training", "", "```bash", facts.command, "```", ""]
    lines += [
        "## Use it",
        "",
        "```bash",
        f"python eval.py adapter=hf://{facts.repo_id}   # on its dataset's test split (run_config.json names it)",
        "```",
        "",
        *_loading_code(facts),
        "",
        "stateft reads the files as data, never as code: safetensors and JSON only, every value checked and the "
        "tensors against their digests (stateft's docs/security.md). `run_config.json` is the run's resolved config.",
        "",
        "## License",
        "",
        f"{_cell(facts.license)}",
        "",
    ]
    return "\n".join(lines)


__all__ = ["COMMAND_KEYS", "CardFacts", "model_card", "pick_metrics", "train_command"]
