"""The model lm-eval scores: a base model and, optionally, an adapter written by ``train.py``.

The base is one of our model configs (``mamba-130m``, ``mamba-tiny``...), a checkpoint folder or a hub id; without
one, the base the adapter records (as ``eval.py`` does). The adapter is read and checked against the base's
architecture before the base is built (``stateft.adapters.read_adapter``): an adapter of another model is one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from stateft.errors import UserError


def model_node(pretrained: str | None, adapter_dir: Path | None) -> Any:
    """Our model config for ``pretrained`` (None when it names a folder or a hub id), or the adapter's recorded base
    when ``pretrained`` is None."""
    from stateft.app.checks import group_options
    from stateft.app.run_config import base_model_node, our_config

    if pretrained is None:
        if adapter_dir is None:
            raise UserError("pass pretrained=<model> (a config name, a checkpoint folder or a hub id) or adapter=<dir>")
        from stateft.adapters import read_adapter_config

        meta = read_adapter_config(adapter_dir)
        return base_model_node(meta.get("base_model"), f"{adapter_dir / 'adapter_config.json'}: base_model")
    if pretrained in group_options("model"):
        return OmegaConf.create(our_config("model", pretrained))
    return None


def load_model(
    pretrained: str | None,
    adapter: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    node: Any = None,
) -> tuple[Any, str, str | None]:
    """``(model in eval mode on device, tokenizer name, the adapter as recorded)``. ``node``: a model config node
    (``eval.py model=...``) instead of ``pretrained``."""
    from stateft.adapters import read_adapter
    from stateft.models.loading import DTYPES, config_from_model_cfg, load_pretrained, model_from_config
    from stateft.tokenizer import DEFAULT_NAME

    if dtype not in DTYPES:
        raise UserError(f"dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    adapter_dir, source = None, None
    if adapter:
        from stateft.hub import resolve_adapter_dir

        adapter_dir, source = resolve_adapter_dir(str(adapter))
    if node is None:
        node = model_node(pretrained, adapter_dir)
    if node is not None:
        node = OmegaConf.merge(node, {"dtype": dtype})
        verified = read_adapter(adapter_dir, config_from_model_cfg(node)) if adapter_dir else None
        model = model_from_config(node)
        tokenizer = node.get("tokenizer") or DEFAULT_NAME
    else:
        model = load_pretrained(str(pretrained), dtype=DTYPES[dtype])
        verified = read_adapter(adapter_dir, model.config) if adapter_dir else None
        tokenizer = DEFAULT_NAME
    if verified is not None:
        verified.apply(model)
    return model.to(device).eval(), tokenizer, source
