"""TextToTextDataModule: load a benchmark, format prompt/target, tokenise, split, cache and batch.

Subclasses (one per benchmark family) set ``hub_id`` and implement ``load_rows`` (hub split -> rows), ``format``
(row -> Examples) and ``build_task`` (metric and decoding settings). Everything else is shared.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from stateft.data import cache
from stateft.data.collate import pad_and_mask
from stateft.data.loading import load_split, resolve_path
from stateft.data.sampler import SeededShuffleSampler
from stateft.data.splits import PROTOCOLS, subset, train_val_split
from stateft.data.task import Example, Task
from stateft.errors import UserError
from stateft.tokenizer import DEFAULT_NAME, load_tokenizer

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
# how a prefix meets the input: tokenised on its own (ids concatenated) or together with the input as one string
PREFIX_TOKENIZATIONS = ("separate", "joint")
STAGE_SPLITS = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",), "predict": ("test",)}


class TextToTextDataModule(L.LightningDataModule):
    """Shared data pipeline. Items are ``{"prompt_ids", "target_ids", "example"}``; see ``collate.pad_and_mask``.

    Protocols: ``clean`` (default) = train/validation = 80/20 split of the hub train split (``seed``), test = hub
    evaluation split(s); ``paper`` = train = hub train, validation = test = hub evaluation split(s) (the State-offset
    paper evaluated every epoch on it). ``subset_size`` keeps a seeded random subset of the training split (learning-
    rate search); ``max_eval_examples`` keeps the first N validation/test examples (demo, debugging).

    ``prefix_tokenization``: ``separate`` (default) tokenises an example's prefix on its own and concatenates the ids
    with the input's, so no token spans the boundary; ``joint`` tokenises prefix + input as one string (SST's GLUE:
    instruction + sentences + ``###``, where the instruction's trailing space merges into the next word). The target
    is always tokenised on its own.
    """

    hub_id: str = ""
    hub_config: str | None = None
    hub_revision: str | None = None
    eval_splits: tuple[str, ...] = ("validation",)  # hub splits used as the test set (clean) / val+test (paper)
    paper_eval_splits: tuple[str, ...] | None = None  # when the paper evaluated elsewhere (SAMSum: test)

    def __init__(
        self,
        name: str,
        metric: str,
        path: str | None = None,
        batch_size: int = 4,
        eval_batch_size: int = 8,
        max_length: int = 1536,
        protocol: str = "clean",
        subset_size: int | None = None,
        seed: int = 123,
        cache_dir: str | None = None,
        num_workers: int = 0,
        tokenizer: str = DEFAULT_NAME,
        num_beams: int = 1,
        max_new_tokens: int = 1,
        max_eval_examples: int | None = None,
        prefix_tokenization: str = "separate",
        batch_invariant: bool = False,
    ) -> None:
        super().__init__()
        if protocol not in PROTOCOLS:
            raise UserError(f"dataset.protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if prefix_tokenization not in PREFIX_TOKENIZATIONS:
            raise UserError(
                f"dataset.prefix_tokenization must be one of {PREFIX_TOKENIZATIONS}, got {prefix_tokenization!r}"
            )
        self.prefix_tokenization = prefix_tokenization
        self.name, self.path, self.protocol = name, resolve_path(path), protocol
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.max_length, self.subset_size, self.seed = max_length, subset_size, seed
        self.cache_dir, self.max_eval_examples = cache_dir, max_eval_examples
        self.tokenizer_name, self._tokenizer = tokenizer, None
        self._tok_fp: tuple[Any, str | None] | None = None  # (tokenizer object, its fingerprint)
        self.task: Task = self.build_task(metric=metric, num_beams=num_beams, max_new_tokens=max_new_tokens)
        self.task = replace(self.task, batch_invariant=batch_invariant)
        self.data: dict[str, list[dict[str, Any]]] = {}
        self.dropped: dict[str, int] = {}

    # ---- subclass interface -------------------------------------------------------------------------------------
    def load_rows(self, split: str) -> list[dict[str, Any]]:
        """Rows of a hub split (``train``, ``validation``...) from ``self.path`` or the hub."""
        return load_split(self.hub_id, self.hub_config, split, self.path, revision=self.hub_revision)

    def format(self, row: dict[str, Any], train: bool) -> list[Example]:
        """The examples made from one row (DART training makes one per reference, everything else one)."""
        raise NotImplementedError

    def build_task(self, metric: str, num_beams: int, max_new_tokens: int) -> Task:
        """The benchmark's Task (scorer and decoding settings)."""
        raise NotImplementedError

    def cache_options(self) -> dict[str, Any]:
        """Subclass options that change the tokenised data (e.g. the GLUE task); part of the cache key."""
        return {}

    # ---- late binding -------------------------------------------------------------------------------------------
    def connect(self, tokenizer: Any = None, max_length: int | None = None) -> None:
        """Late-bound settings: a tokenizer object (``encode``/``decode``/``pad_id``) and the length filter."""
        if tokenizer is not None:
            self._tokenizer = tokenizer
        if max_length is not None:
            self.max_length = max_length
        self.data.clear()

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    # ---- building -----------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Build (download, format, tokenise) and cache every split once; ``setup`` then reads the cache."""
        for split in SPLITS:
            self.split_items(split)

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage, SPLITS) if stage else SPLITS:
            self.split_items(split)

    def split_items(self, split: str) -> list[dict[str, Any]]:
        """Tokenised items of ``train``/``validation``/``test`` (from memory, the disk cache, or built now)."""
        if split in self.data:
            return self.data[split]
        use_cache = bool(self.cache_dir) and self._tokenizer_fingerprint() is not None
        if use_cache:  # one builder per entry at a time; a corrupt entry is rebuilt (stateft/data/cache.py)
            key = cache.cache_key(self._key_options(split))
            items = cache.load_or_build(self.cache_dir, key, lambda: self._build(split))
        else:
            items = self._build(split)
        self.data[split] = items
        return items

    def _key_options(self, split: str) -> dict[str, Any]:
        return {
            "class": type(self).__qualname__, "name": self.name,
            "hub": [self.hub_id, self.hub_config, self.hub_revision],
            "path": str(self.path), "files": cache.fingerprint_path(self.path), "protocol": self.protocol,
            "split": split, "seed": self.seed, "subset_size": self.subset_size, "max_length": self.max_length,
            "max_eval_examples": self.max_eval_examples, "tokenizer": self._tokenizer_fingerprint(),
            "prefix_tokenization": self.prefix_tokenization,
            **self.cache_options(),
        }  # fmt: skip

    def _tokenizer_fingerprint(self) -> str | None:
        """Hash of the tokenizer's full definition; None (no disk cache) for tokenizers we cannot fingerprint."""
        if self._tok_fp is None or self._tok_fp[0] is not self.tokenizer:
            backend = getattr(self.tokenizer, "backend", None)
            digest = cache.cache_key({"vocab": backend.to_str()}) if hasattr(backend, "to_str") else None
            self._tok_fp = (self.tokenizer, digest)
        return self._tok_fp[1]

    def _rows_for(self, split: str) -> list[dict[str, Any]]:
        """Raw rows of one of our splits under the chosen protocol."""
        evaluation = self.eval_splits
        if self.protocol == "paper" and self.paper_eval_splits:
            evaluation = self.paper_eval_splits
        if split == "test" or (split == "validation" and self.protocol == "paper"):
            return [row for hub_split in evaluation for row in self.load_rows(hub_split)]
        rows = self.load_rows("train")
        if self.protocol == "clean":
            train, val = train_val_split(rows, 0.2, self.seed)
            rows = train if split == "train" else val
        return subset(rows, self.subset_size, self.seed) if split == "train" else rows

    def _build(self, split: str) -> list[dict[str, Any]]:
        rows = self._rows_for(split)
        train = split == "train"
        examples = [ex for row in rows for ex in self.format(row, train)]
        items, dropped = [], 0
        for ex in examples:
            if not train and self.max_eval_examples is not None and len(items) >= self.max_eval_examples:
                break
            item = self.tokenize(ex)
            if len(item["prompt_ids"]) + len(item["target_ids"]) > self.max_length:
                dropped += 1  # the reference drops over-long examples rather than truncating them
                continue
            item["example"] = {**ex.meta, "index": len(items)}
            items.append(item)
        self.dropped[split] = dropped
        if dropped:
            log.warning("%s %s: dropped %d examples longer than %d tokens", self.name, split, dropped, self.max_length)
        return items

    def tokenize(self, ex: Example) -> dict[str, Any]:
        """Prompt ids (prefix and input, see ``prefix_tokenization``) and target ids, each tokenised on its own."""
        encode = self.tokenizer.encode
        if self.prefix_tokenization == "joint":
            prompt = encode(ex.prefix + ex.input)
        else:
            prompt = (encode(ex.prefix) if ex.prefix else []) + encode(ex.input)
        return {"prompt_ids": prompt, "target_ids": encode(ex.target)}

    # ---- loaders ------------------------------------------------------------------------------------------------
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        items: Sequence[dict[str, Any]] = self.split_items(split)
        if not items:
            raise UserError(f"{self.name}: the {split} split is empty (check dataset.path / subset_size)")
        pad_id = getattr(self.tokenizer, "pad_id", 0)
        return DataLoader(
            items,  # type: ignore[arg-type]  # a list is a map-style dataset
            batch_size=batch_size,
            sampler=SeededShuffleSampler(len(items), self.seed) if shuffle else None,
            collate_fn=partial(pad_and_mask, pad_id=pad_id, with_prompts=not shuffle),
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
