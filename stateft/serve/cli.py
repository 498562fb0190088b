"""``python -m stateft.serve --base BASE --adapter NAME=PATH ...``: serve adapters of one base model over HTTP.

``--base`` is a model config name of ``conf/model/`` (``mamba-130m``, ``mamba-tiny``), a model config file (.yaml),
or a checkpoint folder (``config.json`` + weights, either layout: `stateft.models.loading.load_pretrained`). Every
``--adapter`` is read and checked against that base before the server starts (`AdapterBank.load`); any problem ends
the command with one ``error:`` line (exit code 2). With ``--allow-loading`` clients may load more adapters while
the server runs (``POST /adapters``: folders of this machine or hub ids); off by default. The app itself:
`stateft.serve.app`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stateft.errors import UserError


def load_base(spec: str, device: str, dtype: str = "float32") -> tuple[Any, str | None]:
    """(the base model in eval mode, the tokenizer its config names or None for the default) for ``--base``, its
    frozen weights stored in ``dtype`` (A_log, D and dt_bias stay fp32, as ``model.dtype`` keeps them)."""
    from omegaconf import OmegaConf

    from stateft.app.checks import group_options
    from stateft.app.run_config import our_config
    from stateft.models.loading import DTYPES, load_pretrained, model_from_config

    path = Path(spec).expanduser()
    names = group_options("model")
    if path.is_dir():
        return load_pretrained(str(path), dtype=DTYPES[dtype], device=device).eval(), None
    if path.suffix in (".yaml", ".yml") and path.is_file():
        cfg = OmegaConf.load(path)
    elif spec in names:
        cfg = OmegaConf.create(our_config("model", spec))
    else:
        raise UserError(
            f"--base {spec!r} is neither a checkpoint folder, a model config file nor a model config name; "
            f"names: {', '.join(sorted(names))}"
        )
    if cfg.get("arch") not in ("mamba1", "mamba2"):
        raise UserError(f"--base {spec}: adapters are served over a Mamba model, not arch {cfg.get('arch')!r}")
    model = model_from_config(OmegaConf.merge(cfg, {"dtype": dtype}), device=device)
    return model.eval(), cfg.get("tokenizer")


def worker_context(device: str, dtype: str) -> Any:
    """What the decoding worker runs inside: autocast to bf16 over a bf16 base (fp32 adapters, as train.py and
    eval.py compute), nothing over an fp32 one."""
    from contextlib import nullcontext

    if dtype == "float32":
        return nullcontext
    import torch

    return lambda: torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def _adapter_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stateft.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="conf/model name, model config .yaml, or checkpoint folder")
    p.add_argument("--adapter", action="append", type=_adapter_arg, default=[], metavar="NAME=PATH",
                   help="an adapter folder (save_adapter's) served under NAME; repeat for more")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="the base's weights, and bf16 autocast for bfloat16 (default float32)")  # fmt: skip
    p.add_argument("--tokenizer", default=None, help="tokenizer name or folder (default: the base config's)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=32,
                   help="requests decoding together at most, greedy and beam search each")  # fmt: skip
    p.add_argument("--max-new-tokens", type=int, default=1024, help="the most new tokens a request may ask for")
    p.add_argument("--allow-loading", action="store_true",
                   help="let clients load adapters while the server runs (POST /adapters reads the folder or hub "
                        "adapter a client names; default off)")  # fmt: skip
    return p


def build_app(args: argparse.Namespace) -> Any:
    """The app for parsed arguments: base model, adapters (each checked), tokenizer, batcher. UserError if any is
    wrong."""
    try:
        from stateft.serve.app import create_app
    except ImportError as err:
        raise UserError(f"serving needs the serve extra ({err.name} is missing): pip install -e '.[serve]'") from None
    from stateft.hub import resolve_adapter
    from stateft.serve.bank import AdapterBank
    from stateft.serve.batcher import Batcher, Limits
    from stateft.tokenizer import DEFAULT_NAME, load_tokenizer

    if args.max_batch < 1 or args.max_new_tokens < 0:
        raise UserError("--max-batch must be >= 1 and --max-new-tokens >= 0")
    model, tokenizer_name = load_base(args.base, args.device, args.dtype)
    bank = AdapterBank(model)
    for name, spec in args.adapter:  # a local folder or a hub adapter (hf://owner/name[@revision], stateft.hub)
        bank.load(name, resolve_adapter(str(spec))[0])
    bank.stack()
    tokenizer = load_tokenizer(args.tokenizer or tokenizer_name or DEFAULT_NAME)
    if tokenizer.vocab_size > model.config.padded_vocab_size:
        raise UserError(
            f"tokenizer has {tokenizer.vocab_size} tokens, the model's vocabulary {model.config.vocab_size}: "
            "pass the base model's --tokenizer"
        )
    limits = Limits(max_new_tokens=args.max_new_tokens, max_batch=args.max_batch)
    batcher = Batcher(bank, limits, eos_id=tokenizer.eos_id, worker_context=worker_context(args.device, args.dtype))
    return create_app(batcher, tokenizer, base_name=args.base, allow_loading=args.allow_loading)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        app = build_app(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port)
    return 0
