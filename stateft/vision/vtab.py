"""VTAB-1k as a DataModule: the common preprocessed layout, MambaPEFT's transforms, top-1 accuracy.

Layout (the RepAdapter / NOAH release MambaPEFT downloads): ``<path>/<task folder>/`` holds the images and the lists
``train800.txt``, ``val200.txt``, ``train800val200.txt`` and ``test.txt``, one ``relative/path label`` per line
(the path relative to the task folder). Splits by ``protocol``:

- ``paper`` (MambaPEFT): train on train800val200 (1000 images), test on test; validation = val200 (inside the
  training set: the paper selects nothing on it, ``experiment=mambapeft/vtab`` runs no validation and keeps the last
  epoch's adapter).
- ``clean``: train on train800, validate on val200, test on test.

Transforms (MambaPEFT's vtab1k_bs32_224 pipeline, train and test alike): RGB, a bicubic resize to ``image_size``
square with Pillow, then per channel (x - mean) / std on the 0-255 scale with ImageNet's mean and std. No
augmentation.

Items are ``{"pixel_values" (3 S S) float32, "label" int, "example" {"index", "label", "path"}}``; batches stack them
(``pixel_values`` (b 3 S S), ``labels`` (b,)). The task's predictions are class indices as strings, scored as top-1
accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from stateft.data.task import Task
from stateft.errors import UserError
from stateft.vision.tasks import VTAB_TASKS

MEAN = (123.675, 116.28, 103.53)  # ImageNet's per-channel mean and std on the 0-255 scale (mmpretrain's)
STD = (58.395, 57.12, 57.375)
SPLIT_FILES = {
    "paper": {"train": "train800val200.txt", "validation": "val200.txt", "test": "test.txt"},
    "clean": {"train": "train800.txt", "validation": "val200.txt", "test": "test.txt"},
}


def load_image(path: Path, size: int) -> torch.Tensor:
    """One image as the model reads it: (3 size size) float32, normalised (module docstring)."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        pixels = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    x = pixels.permute(2, 0, 1).float()
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def read_list(folder: Path, name: str, num_classes: int) -> list[tuple[str, int]]:
    """The (relative path, label) rows of one list file, every image present and every label a class."""
    path = folder / name
    if not path.is_file():
        raise UserError(f"VTAB list {path} is missing; dataset.path should hold one folder per task with {name}")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise UserError(f"{path}:{n}: expected 'relative/path label', got {line[:80]!r}")
        relative, label = parts[0], int(parts[1])
        image = (folder / relative).resolve()
        if not image.is_relative_to(folder.resolve()) or not image.is_file():
            raise UserError(f"{path}:{n}: image {relative!r} is not a file in {folder}; re-extract the task folder")
        if not 0 <= label < num_classes:
            raise UserError(f"{path}:{n}: label {label} is not one of the task's {num_classes} classes")
        rows.append((relative, label))
    if not rows:
        raise UserError(f"VTAB list {path} is empty")
    return rows


class ImageList(Dataset):
    def __init__(self, folder: Path, rows: list[tuple[str, int]], image_size: int) -> None:
        self.folder, self.rows, self.image_size = folder, rows, image_size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        relative, label = self.rows[index]
        example = {"index": index, "label": label, "path": relative}
        return {"pixel_values": load_image(self.folder / relative, self.image_size), "label": label, "example": example}


def collate_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in items]),
        "labels": torch.tensor([item["label"] for item in items], dtype=torch.long),
        "examples": [item["example"] for item in items],
    }


def accuracy(predictions: list[str], examples: list[dict[str, Any]]) -> dict[str, float]:
    """Top-1 accuracy (percent, as the VTAB tables report it) of predicted class indices."""
    correct = sum(p.strip() == str(ex["label"]) for p, ex in zip(predictions, examples))
    return {"accuracy": 100.0 * correct / max(len(examples), 1)}


class VtabDataModule(L.LightningDataModule):
    """One VTAB-1k task (``task``: a key of ``stateft.vision.tasks.VTAB_TASKS``) from the folder ``path``."""

    def __init__(
        self,
        name: str,
        task: str,
        path: str | None,
        metric: str = "accuracy",
        image_size: int = 224,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        protocol: str = "paper",
        seed: int = 123,
        num_workers: int = 0,
        max_eval_examples: int | None = None,
    ) -> None:
        super().__init__()
        # the options are checked when the data is first read (`folder`): an error raised while Hydra builds this
        # module would reach the user wrapped in Hydra's traceback instead of as one line
        self.name, self.task_name, self.metric, self.protocol, self.path = name, task, metric, protocol, path
        self.image_size, self.batch_size, self.eval_batch_size = image_size, batch_size, eval_batch_size
        self.seed, self.num_workers, self.max_eval_examples = seed, num_workers, max_eval_examples
        self.task = Task(name, metric, generative=False, scorer=accuracy)
        self.tokenizer = None  # images: nothing to tokenise
        self._splits: dict[str, ImageList] = {}

    @property
    def num_classes(self) -> int:
        self._check_options()
        return VTAB_TASKS[self.task_name].num_classes

    @property
    def folder(self) -> Path:
        """The task's folder, checked to exist (with the options)."""
        self._check_options()
        folder = Path(self.path).expanduser() / VTAB_TASKS[self.task_name].folder
        if not folder.is_dir():
            raise UserError(f"VTAB task folder {folder} does not exist; dataset.path should be the VTAB-1k root")
        return folder

    def _check_options(self) -> None:
        if self.task_name not in VTAB_TASKS:
            raise UserError(f"dataset.task must be one of {', '.join(VTAB_TASKS)}, got {self.task_name!r}")
        if self.protocol not in SPLIT_FILES:
            raise UserError(f"dataset.protocol must be one of {', '.join(SPLIT_FILES)}, got {self.protocol!r}")
        if not self.path:
            raise UserError("dataset.path is not set: pass dataset.path=<VTAB-1k root> (one folder per task)")

    def split(self, split: str) -> ImageList:
        if split not in self._splits:
            rows = read_list(self.folder, SPLIT_FILES[self.protocol][split], self.num_classes)
            if split != "train" and self.max_eval_examples is not None:
                rows = rows[: self.max_eval_examples]
            self._splits[split] = ImageList(self.folder, rows, self.image_size)
        return self._splits[split]

    def split_items(self, split: str) -> list[dict[str, Any]]:
        """The examples of a split (what a predictions file is scored against), without reading the images."""
        data = self.split(split)
        return [{"example": {"index": i, "label": label, "path": rel}} for i, (rel, label) in enumerate(data.rows)]

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",)}
        for split in needed.get(stage or "fit", ("train", "validation", "test")):
            self.split(split)

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            self.split(split), batch_size=batch_size, shuffle=shuffle, generator=generator,
            collate_fn=collate_images, num_workers=self.num_workers,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
