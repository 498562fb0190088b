"""Export a trained adapter for use without stateft: merged into its base model as a plain checkpoint, or (LoRA) in
HF peft's adapter format.

    python -m stateft.export <adapter_dir> <out_dir> --layout transformers|mamba_ssm|peft
        [--base <model config name or checkpoint folder>] [--dtype float32|bfloat16]

The base model is the one the adapter records (built as ``eval.py`` builds it: `stateft.app.run_config`), or
``--base``: one of our model configs (``conf/model/<name>.yaml``) or a local checkpoint folder in either layout. The
adapter is read and checked as data (`stateft.adapters.read_adapter`), applied in fp32, folded into the weights
(`stateft.merge`) and written, atomically, as
- ``transformers``: ``config.json`` (``model_type`` mamba / mamba2) and ``model.safetensors`` with transformers'
  names, which ``MambaForCausalLM`` / ``Mamba2ForCausalLM.from_pretrained`` read, and the tokenizer's files
  (``tokenizer.json``, ``tokenizer_config.json``) for ``AutoTokenizer.from_pretrained``;
- ``mamba_ssm``: mamba_ssm's ``config.json`` and its tensor names in ``model.safetensors`` (mamba_ssm itself reads
  ``pytorch_model.bin``: convert the file to use it there);
- ``peft`` (LoRA only, not merged): ``adapter_config.json`` and ``adapter_model.safetensors`` for
  ``PeftModel.from_pretrained`` on transformers' model of the base (`stateft.export_peft`).
Both checkpoint layouts are read back by ``stateft.models.loading.load_pretrained``. Every export also holds
``stateft_export.json``: the method, base model, tokenizer, layout and dtype (mamba_ssm's config.json takes no key
beyond its own, so the tokenizer's name is there; the transformers config.json carries it as ``tokenizer`` too).
``--dtype bfloat16`` stores the weights in bf16, A_log, D and dt_bias in fp32 (as ``model.dtype`` does).
Bad input is one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stateft.errors import UserError

LAYOUTS = ("transformers", "mamba_ssm", "peft")
DTYPES = ("float32", "bfloat16")
RECORD_NAME = "stateft_export.json"


# -- the base model -------------------------------------------------------------------------------------------------
def resolve_base(meta: dict[str, Any], base: str | None, where: str) -> tuple[Any, Callable[[], Any], dict[str, Any]]:
    """(its config, a function building it in fp32, its record) for the adapter's base model: ``base`` (a model config
    name or a checkpoint folder) or else the adapter's ``base_model`` record, checked as ``eval.py`` checks it."""
    from omegaconf import OmegaConf

    from stateft.app.checks import group_options
    from stateft.app.run_config import base_model_node, our_config
    from stateft.models.loading import config_from_model_cfg, model_from_config

    if base is not None and Path(base).expanduser().is_dir():
        return _base_folder(Path(base).expanduser(), meta)
    if base is None:
        node = base_model_node(meta.get("base_model"), f"{where}: base_model")
    elif base in group_options("model"):
        node = OmegaConf.create(our_config("model", base))
    else:
        raise UserError(
            f"--base {base!r} is neither a model config ({', '.join(group_options('model'))}) nor a checkpoint folder"
        )
    node = OmegaConf.merge(node, {"dtype": "float32"})
    record = OmegaConf.to_container(node, resolve=True)
    return config_from_model_cfg(node), lambda: model_from_config(node), record


def _base_folder(folder: Path, meta: dict[str, Any]) -> tuple[Any, Callable[[], Any], dict[str, Any]]:
    from stateft.models.loading import config_from_json, load_pretrained, resolve_folder

    resolve_folder(str(folder))  # a folder with config.json
    try:
        config, _ = config_from_json(json.loads((folder / "config.json").read_text()))
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{folder / 'config.json'} is not a Mamba config ({type(err).__name__}: {err})") from None
    tokenizer = (meta.get("base_model") or {}).get("tokenizer")
    record = {"name": str(folder), "name_or_path": str(folder), "pretrained": True, "tokenizer": tokenizer}
    return config, lambda: load_pretrained(str(folder)), record


# -- the writers ----------------------------------------------------------------------------------------------------
def write_transformers(model: Any, folder: Path, extra: dict[str, Any] | None = None) -> Path:
    """``model`` (a plain MambaLM) as transformers' checkpoint: ``config.json`` and ``model.safetensors``."""
    from safetensors.torch import save_file

    from stateft.models.transformers_layout import to_transformers, transformers_config

    raw = transformers_config(model.config, extra)
    folder.mkdir(parents=True, exist_ok=True)
    state = {to_transformers(k): v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight")  # tied: transformers ties it to the embedding again
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    return folder


def _token_ids(tokenizer: str) -> dict[str, int]:
    """bos / eos / pad ids for transformers' generate: the tokenizer's end-of-text token (id 0 in NeoX's)."""
    from stateft.tokenizer import load_tokenizer

    try:
        eos = load_tokenizer(tokenizer).eos_id
    except UserError as err:
        print(f"warning: token ids left out of config.json: {err}", file=sys.stderr)
        return {}
    return {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos}


# -- the export -----------------------------------------------------------------------------------------------------
def export(adapter: str | Path, out: str | Path, layout: str, base: str | None = None, dtype: str = "float32") -> Path:
    """Export the adapter in ``adapter`` to the new folder ``out`` (module docstring). Returns ``out``.
    Everything is checked (the adapter, the base, whether the method folds or peft takes it) before a model is built."""
    from stateft.adapters import read_adapter, read_adapter_config
    from stateft.atomic import replacing_dir

    if layout not in LAYOUTS or dtype not in DTYPES:
        raise UserError(f"--layout is one of {', '.join(LAYOUTS)} and --dtype one of {', '.join(DTYPES)}")
    adapter, out = Path(adapter).expanduser(), Path(out).expanduser()
    if not adapter.is_dir():
        raise UserError(f"adapter folder {adapter} not found: pass the folder save_adapter wrote (<run>/adapter)")
    _check_out(out, adapter)
    meta = read_adapter_config(adapter)
    config, build, record = resolve_base(meta, base, str(adapter / "adapter_config.json"))
    verified = read_adapter(adapter, config)  # config, method, tensors and digests
    _check_exportable(verified.method, config, layout)
    model = build()
    verified.apply(model)
    model.eval()
    info = _record(layout, dtype, verified.method.name, record)
    with replacing_dir(out) as tmp:
        _write(model, verified.method, tmp, info)
        (tmp / RECORD_NAME).write_text(json.dumps(info, indent=2))
    return out


def _check_exportable(method: Any, config: Any, layout: str) -> None:
    """UserError (one line) unless ``layout`` can hold the method on a model of ``config``; prints peft's caveat."""
    from stateft.export_peft import peft_refusal, unmerged_caveat
    from stateft.merge import refusal
    from stateft.models.backbone import MAMBA_ARCHS, is_vision
    from stateft.models.transformers_layout import transformers_config

    if is_vision(config.arch):
        raise UserError(
            f"a {config.arch} adapter (an image classifier) has no transformers, mamba_ssm or peft checkpoint layout; "
            "share it as an adapter (python -m stateft.hub push)"
        )
    if config.arch not in MAMBA_ARCHS:
        raise UserError(
            f"a {config.arch} adapter is in peft's format already: load it with PeftModel.from_pretrained and merge "
            "it with merge_and_unload(); stateft.export merges Mamba adapters"
        )
    if layout == "peft":
        if method.name != "lora":
            raise UserError(f"--layout peft exports LoRA adapters; this one is {method.name}: merge it instead")
        reason = peft_refusal(method, config.arch)
        if reason is None and unmerged_caveat(method, config.arch):
            print(f"warning: {unmerged_caveat(method, config.arch)}", file=sys.stderr)
    else:
        reason = refusal(method, config)
        if layout == "transformers":
            transformers_config(config)  # a model transformers cannot express is refused here
    if reason is not None:
        raise UserError(reason)


def _record(layout: str, dtype: str, method: str, base: dict[str, Any]) -> dict[str, Any]:
    """``stateft_export.json``: what was exported, from which base, with which tokenizer."""
    from stateft import __version__
    from stateft.tokenizer import DEFAULT_NAME

    return {
        "layout": layout,
        "dtype": dtype,
        "method": method,
        "base_model": base.get("name_or_path") or base.get("name"),
        "tokenizer": base.get("tokenizer") or DEFAULT_NAME,
        "stateft_version": __version__,
    }


def _write(model: Any, method: Any, folder: Path, info: dict[str, Any]) -> None:
    """The export's files into ``folder``: merged in ``info``'s layout and dtype, or peft's LoRA files."""
    from stateft.merge import merge
    from stateft.models.loading import DTYPES as TORCH_DTYPES
    from stateft.models.loading import cast_model, save_pretrained
    from stateft.tokenizer import write_transformers_tokenizer

    dtype = TORCH_DTYPES[info["dtype"]]
    if info["layout"] == "peft":
        from stateft.export_peft import write_peft_lora

        write_peft_lora(model, method, folder, info["base_model"], dtype)
        return
    cast_model(merge(model), dtype)
    if info["layout"] == "transformers":
        tokenizer = info["tokenizer"]
        write_transformers(model, folder, {**_token_ids(tokenizer), "dtype": info["dtype"], "tokenizer": tokenizer})
        write_transformers_tokenizer(folder, tokenizer)  # AutoTokenizer.from_pretrained(out) as well
    else:
        save_pretrained(model, folder)


def _check_out(out: Path, adapter: Path) -> None:
    """``out`` is new, empty or an earlier export (replaced whole); never the adapter or a folder holding it."""
    if out.resolve() == adapter.resolve() or out.resolve() in adapter.resolve().parents:
        raise UserError(f"{out} holds the adapter itself; choose a new folder for the export")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; choose a new folder for the export")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORD_NAME).is_file():
        raise UserError(f"{out} is not empty and holds no earlier export; choose a new folder (or empty it)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stateft.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("adapter_dir", help="the adapter folder (<run>/adapter)")
    parser.add_argument("out_dir", help="the folder to write (new, empty, or an earlier export)")
    parser.add_argument("--layout", choices=LAYOUTS, required=True, help="checkpoint layout, or peft (LoRA only)")
    parser.add_argument("--base", default=None, help="model config name or checkpoint folder (default: as recorded)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weights' dtype (default float32)")
    args = parser.parse_args(argv)
    try:
        out = export(args.adapter_dir, args.out_dir, args.layout, args.base, args.dtype)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported {args.adapter_dir} ({args.layout}, {args.dtype}) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
