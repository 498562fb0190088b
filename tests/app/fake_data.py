"""A tiny DataModule with the benchmark DataModules' interface: copy-the-word prompts over the NeoX vocabulary."""

from __future__ import annotations

from functools import partial

import lightning as L
from torch.utils.data import DataLoader

from stateft.data.collate import pad_and_mask
from stateft.data.sampler import SeededShuffleSampler
from stateft.data.task import Task
from stateft.tokenizer import load_tokenizer

WORDS = ["apple", "river", "stone", "cloud", "green", "tiger", "music", "paper"]


def _exact_match(predictions: list[str], examples: list[dict]) -> dict[str, float]:
    hits = [p.strip() == e["target"].strip() for p, e in zip(predictions, examples)]
    return {"accuracy": sum(hits) / len(hits)}


class CopyWordData(L.LightningDataModule):
    """``"Repeat: <word> ###"`` -> ``" <word>"``; n_train/n_eval examples; generative or one-step decoding."""

    def __init__(
        self,
        name: str = "copy",
        metric: str = "accuracy",
        n_train: int = 16,
        n_eval: int = 4,
        batch_size: int = 4,
        eval_batch_size: int = 4,
        seed: int = 123,
        generative: bool = False,
        num_beams: int = 1,
        max_new_tokens: int = 2,
        subset_size: int | None = None,
    ) -> None:
        super().__init__()
        self.name, self.seed, self.batch_size, self.eval_batch_size = name, seed, batch_size, eval_batch_size
        self.n_train = min(n_train, subset_size or n_train)
        self.n_eval = n_eval
        self.task = Task(name, metric, generative, _exact_match, num_beams, max_new_tokens)
        self.tokenizer = load_tokenizer()

    def _items(self, n: int, offset: int) -> list[dict]:
        items = []
        for i in range(n):
            word = WORDS[(i + offset) % len(WORDS)]
            prompt = self.tokenizer.encode(f"Repeat: {word} ###")
            target = self.tokenizer.encode(f" {word}") + [self.tokenizer.eos_id]
            items.append({"prompt_ids": prompt, "target_ids": target, "example": {"target": f" {word}", "index": i}})
        return items

    def _loader(self, items: list[dict], batch_size: int, shuffle: bool) -> DataLoader:
        sampler = SeededShuffleSampler(len(items), self.seed) if shuffle else None
        return DataLoader(
            items,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=partial(pad_and_mask, pad_id=0, with_prompts=not shuffle),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._items(self.n_train, 0), self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._items(self.n_eval, 3), self.eval_batch_size, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._items(self.n_eval, 5), self.eval_batch_size, False)


class FlakyWandbLogger:
    """Stands in for WandbLogger: starting an online run fails (an unreachable server); offline works."""

    starts: list[str] = []

    def __init__(self, offline: bool = False, mode: str | None = None, **kwargs) -> None:
        self.offline, self.mode = offline, mode

    @property
    def experiment(self):
        FlakyWandbLogger.starts.append(self.mode or "online")
        if self.mode != "offline":
            raise ConnectionError("context deadline exceeded")
        return self


class BrokenWandbLogger(FlakyWandbLogger):
    """Even the offline run cannot start (e.g. a read-only disk)."""

    @property
    def experiment(self):
        raise OSError("read-only file system")
