"""Pixel-sequence data from raw files (against independent decodings) and the transfer experiment end to end on the
fixture files (tests/fixtures/s4: 40 + 10 MNIST-format and 40 + 10 CIFAR-10-binary-format images), with the
pretrained weights cached as safetensors and reused."""

from __future__ import annotations

import gzip
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from stateft.app.checks import compose_checked
from stateft.app.training import train
from stateft.errors import UserError
from stateft.s4 import pixels

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "s4"
BIN = FIXTURES / "cifar10" / "cifar-10-batches-bin"


def test_mnist_idx_files_decode_to_row_order_pixels():
    x, y = pixels.load("mnist", FIXTURES, "train")
    raw = (FIXTURES / "mnist" / "train-images-idx3-ubyte").read_bytes()
    assert int.from_bytes(raw[4:8], "big") == 40
    assert x.shape == (40, 784, 1)
    first = np.frombuffer(raw[16 : 16 + 784], dtype=np.uint8)
    torch.testing.assert_close(x[0, :, 0], torch.tensor(first / 255.0, dtype=torch.float32))
    assert y.tolist() == list((FIXTURES / "mnist" / "train-labels-idx1-ubyte").read_bytes()[8:])


def test_gzipped_mnist_in_torchvisions_layout_reads_the_same(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (FIXTURES / "mnist").iterdir():
        (raw / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
    for a, b in zip(pixels.load("mnist", tmp_path, "test"), pixels.load("mnist", FIXTURES, "test")):
        assert torch.equal(a, b)


def test_cifar_binary_records_are_pils_grayscale_normalised():
    x, y = pixels.load("cifar10", FIXTURES, "train")
    assert x.shape == (40, 1024, 1)
    assert y.shape == (40,)
    record = (BIN / "data_batch_2.bin").read_bytes()[: 1 + 3072]
    rgb = np.frombuffer(record[1:], dtype=np.uint8).reshape(3, 32, 32).transpose(1, 2, 0)
    gray = np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("L"), dtype=np.float64)
    expected = torch.tensor((gray.flatten() / 255 - 122.6 / 255) / (61 / 255), dtype=torch.float32)
    torch.testing.assert_close(x[8, :, 0], expected)  # data_batch_2's first record follows batch 1's 8
    assert y[8].item() == record[0]


def test_cifar_archive_reads_like_its_folder(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for path in BIN.iterdir():
            tar.add(path, arcname=f"cifar-10-batches-bin/{path.name}")
    for a, b in zip(pixels.load("cifar10", tmp_path, "test"), pixels.load("cifar10", FIXTURES, "test")):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "cifar-10-batches-py").mkdir(), "python version \\(pickles"),
        (lambda d: None, "CIFAR-10's binary version .* is not in"),
        (lambda d: (d / "cifar-10-batches-bin").mkdir(), "cifar-10-batches-bin has no data_batch_1.bin"),
    ],
)
def test_cifar_other_than_the_binary_version_is_refused(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(UserError, match=message):
        pixels.load("cifar10", tmp_path, "train")


def test_a_damaged_idx_file_is_one_line(tmp_path):
    shutil.copytree(FIXTURES / "mnist", tmp_path / "mnist")
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UserError, match="holds 7835 bytes of data; its header says 7840"):
        pixels.load("mnist", tmp_path, "test")


TINY = [
    "experiment=sdt_s4/transfer",
    f"dataset.path={FIXTURES}",
    "model.d_model=8",
    "model.n_layers=1",
    "model.d_state=4",
    "dataset.pretrain_epochs=1",
    "dataset.epochs=1",
    "dataset.batch_size=16",
    "s4.compare=[{label:Frozen,method:s4_frozen},{label:LoRA,method:s4_lora,rank:1},"
    "{label:SDT,method:s4_sdt,select_channels:8,update_channels:2,select_states:2,update_states:1,warmup_steps:2}]",
]


def test_transfer_runs_on_fixtures_and_reuses_the_cached_pretraining(tmp_path):
    cache = tmp_path / "cache"
    overrides = [*TINY, f"dataset.pretrain_cache={cache}"]
    train(compose_checked("train", [*overrides, f"output_dir={tmp_path / 'a'}"]))
    first = json.loads((tmp_path / "a" / "results.json").read_text())
    assert first["pretrain"]["cached"] is False
    (weights,) = cache.glob("s4_mnist_*.safetensors")
    assert set(load_file(str(weights))) >= {"encoder.weight", "layers.0.ssm.C", "decoder.bias"}
    assert [r["label"] for r in first["results"]] == ["Frozen", "LoRA", "SDT"]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in first["results"])
    assert (tmp_path / "a" / "accuracy_vs_params.png").is_file()
    train(compose_checked("train", [*overrides, f"output_dir={tmp_path / 'b'}"]))
    second = json.loads((tmp_path / "b" / "results.json").read_text())
    assert second["pretrain"]["cached"] is True
    assert second["pretrain"]["cache"] == str(weights)
    assert [r["accuracy"] for r in second["results"]] == [r["accuracy"] for r in first["results"]]
    other = [*overrides, "dataset.pretrain_epochs=2", f"output_dir={tmp_path / 'c'}"]
    train(compose_checked("train", other))
    assert len(list(cache.glob("s4_mnist_*.safetensors"))) == 2  # another record, another file


def test_stdout_names_the_pretraining(tmp_path, capsys):
    train(compose_checked("train", [*TINY, f"dataset.pretrain_cache={tmp_path}", f"output_dir={tmp_path / 'r'}"]))
    out = capsys.readouterr().out
    assert "pretraining on mnist (1 epochs of 36 images)" in out
    assert "| Frozen | 0 | 0.00% |" in out
