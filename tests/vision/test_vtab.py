"""The VTAB-1k DataModule on the fixture folder: splits by protocol, MambaPEFT's transform, accuracy, bad folders."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from stateft.errors import UserError
from stateft.vision.tasks import GROUPS, VTAB_TASKS
from stateft.vision.vtab import VtabDataModule, accuracy, load_image
from tests.vision.conftest import VTAB_FIXTURES


def _dm(**kwargs):
    values = dict(name="vtab_cifar100", task="cifar100", path=str(VTAB_FIXTURES), image_size=32, batch_size=2)
    return VtabDataModule(**{**values, **kwargs})


def test_the_19_tasks_in_three_groups():
    assert len(VTAB_TASKS) == 19
    counts = {g: sum(t.group == g for t in VTAB_TASKS.values()) for g in GROUPS}
    assert counts == {"natural": 7, "specialized": 4, "structured": 8}
    for task in VTAB_TASKS.values():  # the fixture has every task folder of the release layout
        assert (VTAB_FIXTURES / task.folder / "test.txt").is_file()


def test_protocols_pick_the_list_files():
    paper, clean = _dm(), _dm(protocol="clean")
    assert len(paper.split("train")) == 6
    assert len(clean.split("train")) == 4
    assert len(paper.split("test")) == len(clean.split("test")) == 4
    assert len(clean.split("validation")) == 2


def test_the_transform_is_a_bicubic_resize_and_imagenet_normalisation():
    path = VTAB_FIXTURES / "cifar" / "images" / "train" / "000.png"
    x = load_image(path, 32)
    pixels = np.asarray(Image.open(path).convert("RGB").resize((32, 32), Image.BICUBIC), dtype=np.float64)
    want = (pixels - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])
    torch.testing.assert_close(x, torch.from_numpy(want).permute(2, 0, 1).float())


def test_batches_and_scores():
    dm = _dm()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["labels"].dtype == torch.long
    examples = [{"label": 3}, {"label": 1}, {"label": 0}, {"label": 2}]
    assert accuracy(["3", "1", "2", "9"], examples) == {"accuracy": 50.0}


def test_bad_folders_are_one_line(tmp_path):
    with pytest.raises(UserError, match="task folder .* does not exist"):
        _dm(path=str(tmp_path)).setup("fit")
    shutil.copytree(VTAB_FIXTURES / "cifar", tmp_path / "cifar")
    (tmp_path / "cifar" / "images" / "test" / "001.png").unlink()
    with pytest.raises(UserError, match=r"test.txt:2: image 'images/test/001.png' is not a file"):
        _dm(path=str(tmp_path)).setup("test")
    (tmp_path / "cifar" / "val200.txt").write_text("images/train/000.png 100\n")
    with pytest.raises(UserError, match="label 100 is not one of the task's 100 classes"):
        _dm(path=str(tmp_path), protocol="clean").setup("validate")
    (tmp_path / "cifar" / "val200.txt").write_text("../../etc/passwd 1\n")
    with pytest.raises(UserError, match="is not a file in"):
        _dm(path=str(tmp_path), protocol="clean").setup("validate")
    with pytest.raises(UserError, match="dataset.task must be one of"):
        _dm(task="imagenet").setup("fit")
