"""The GPT-NeoX-20B tokenizer used by every Mamba checkpoint.

A copy of ``EleutherAI/gpt-neox-20b``'s ``tokenizer.json`` ships in ``stateft/assets/`` (Apache-2.0, see
``stateft/assets/NOTICE``), so tokenisation works offline. ``load_tokenizer`` returns a small wrapper around
``tokenizers.Tokenizer`` (light to import); pass a folder or a hub id to use another ``tokenizer.json``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from stateft.errors import UserError

BUNDLED = Path(__file__).parent / "assets" / "gpt-neox-20b-tokenizer.json"
DEFAULT_NAME = "EleutherAI/gpt-neox-20b"
EOS_TOKEN = "<|endoftext|>"


class Tokenizer:
    """encode/decode with no special tokens added; ``eos_id`` = ``pad_id`` = id of ``<|endoftext|>`` (0)."""

    def __init__(self, backend) -> None:  # backend: tokenizers.Tokenizer
        self.backend = backend
        self.eos_id = backend.token_to_id(EOS_TOKEN)
        self.pad_id = self.eos_id
        self.vocab_size = backend.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)


def tokenizer_file(name_or_path: str = DEFAULT_NAME) -> Path:
    """The ``tokenizer.json`` of a tokenizer name: the bundled one for the default name; else from a folder, a file
    or the hub (its cache)."""
    if name_or_path == DEFAULT_NAME:
        return BUNDLED
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        return path
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(name_or_path, "tokenizer.json"))
    except Exception as err:
        raise UserError(
            f"cannot load tokenizer {name_or_path!r} ({type(err).__name__}); pass a folder holding "
            f"tokenizer.json, or use the bundled {DEFAULT_NAME}"
        ) from None


@lru_cache(maxsize=4)
def load_tokenizer(name_or_path: str = DEFAULT_NAME) -> Tokenizer:
    """The tokenizer of ``tokenizer_file(name_or_path)``."""
    from tokenizers import Tokenizer as Backend

    return Tokenizer(Backend.from_file(str(tokenizer_file(name_or_path))))


def write_transformers_tokenizer(folder: Path, name_or_path: str = DEFAULT_NAME) -> None:
    """``tokenizer.json`` and a ``tokenizer_config.json`` into ``folder``, so that transformers' ``AutoTokenizer``
    loads the tokenizer from it (offline): the end-of-text token stands for bos, eos, unk and pad, as in NeoX's."""
    import json
    import shutil

    shutil.copyfile(tokenizer_file(name_or_path), folder / "tokenizer.json")
    special = {name: EOS_TOKEN for name in ("bos_token", "eos_token", "unk_token", "pad_token")}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **special, "clean_up_tokenization_spaces": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
