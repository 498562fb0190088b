"""Pixel-sequence image datasets read from their raw files: sequential MNIST and grayscale CIFAR-10, as the SDT
code's ``run_s4_real.py`` builds them with torchvision (which stateft does not need).

- MNIST: the four idx files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-...``; gzipped or
  not), in ``<path>``, ``<path>/mnist``, ``<path>/MNIST/raw`` (torchvision's layout). A 28 x 28 image is a sequence
  of 784 pixels in row order, each x / 255 (torchvision's ToTensor; the SDT code does not normalise MNIST).
- CIFAR-10: the binary version only (``cifar-10-binary.tar.gz``, or its folder ``cifar-10-batches-bin``), in
  ``<path>``, ``<path>/cifar10`` or ``<path>/cifar``: records of one label byte and 3 x 1024 bytes (R, G, B planes).
  Its python version is pickles, which stateft never loads. Grayscale as PIL's ``convert("L")`` (torchvision's
  Grayscale): L = (19595 R + 38470 G + 7471 B + 2^15) >> 16; then (L / 255 - 122.6 / 255) / (61 / 255) as the SDT
  code's Normalize; a sequence of 1024 pixels in row order.
Both give x (N, L, 1) float32 and labels y (N,) int64.
"""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import torch
from torch import Tensor

from stateft.errors import UserError

DATASETS = ("mnist", "cifar10")
SPLITS = ("train", "test")
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
CIFAR_RECORD = 1 + 3 * 1024


def _find(folder: Path, subfolders: list[str], names: list[str]) -> Path | None:
    """The first existing ``<folder>/<sub>/<name>``."""
    for sub in subfolders:
        for name in names:
            candidate = folder / sub / name
            if candidate.exists():
                return candidate
    return None


def read_idx(path: Path, dims: int) -> Tensor:
    """An idx file of unsigned bytes with ``dims`` dimensions (magic 0x0000 08 dims, big-endian sizes)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 + 4 * dims or data[:4] != bytes([0, 0, 8, dims]):
        raise UserError(f"{path} is not an idx file of unsigned bytes with {dims} dimensions")
    sizes = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    count = 1
    for size in sizes:
        count *= size
    body = data[4 + 4 * dims :]
    if len(body) != count:
        raise UserError(f"{path} holds {len(body)} bytes of data; its header says {count}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(sizes)


def load_mnist(folder: Path, split: str) -> tuple[Tensor, Tensor]:
    subfolders = [".", "mnist", "MNIST/raw"]
    paths = []
    for name in MNIST_FILES[split]:
        found = _find(folder, subfolders, [name, name + ".gz"])
        if found is None:
            raise UserError(f"MNIST's {name} (or {name}.gz) is not in {folder} (nor its mnist/, MNIST/raw/)")
        paths.append(found)
    images, labels = read_idx(paths[0], 3), read_idx(paths[1], 1)
    if images.shape[0] != labels.shape[0]:
        raise UserError(f"{paths[0]} holds {images.shape[0]} images but {paths[1]} {labels.shape[0]} labels")
    x = images.reshape(images.shape[0], -1, 1).float() / 255
    return x, labels.long()


def _cifar_bytes(folder: Path, split: str) -> list[bytes]:
    subfolders = [".", "cifar10", "cifar"]
    batches = _find(folder, subfolders, ["cifar-10-batches-bin"])
    if batches is not None:
        missing = [name for name in CIFAR_FILES[split] if not (batches / name).is_file()]
        if missing:
            raise UserError(f"{batches} has no {missing[0]}; extract the whole cifar-10-binary.tar.gz there")
        return [(batches / name).read_bytes() for name in CIFAR_FILES[split]]
    archive = _find(folder, subfolders, ["cifar-10-binary.tar.gz"])
    if archive is not None:
        with tarfile.open(archive, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in CIFAR_FILES[split] if n not in members]
            if missing:
                raise UserError(f"{archive} has no {missing[0]}; it is not CIFAR-10's binary version")
            return [tar.extractfile(members[name]).read() for name in CIFAR_FILES[split]]
    if _find(folder, subfolders, ["cifar-10-batches-py", "cifar-10-python.tar.gz"]) is not None:
        raise UserError(
            f"{folder} holds CIFAR-10's python version (pickles, which stateft does not load); download the binary "
            "version cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and put it there"
        )
    raise UserError(f"CIFAR-10's binary version (cifar-10-binary.tar.gz or cifar-10-batches-bin/) is not in {folder}")


def load_cifar10_gray(folder: Path, split: str) -> tuple[Tensor, Tensor]:
    records = []
    for blob in _cifar_bytes(folder, split):
        if len(blob) % CIFAR_RECORD:
            raise UserError(f"a CIFAR-10 binary batch of {len(blob)} bytes is not whole records of {CIFAR_RECORD}")
        records.append(torch.frombuffer(bytearray(blob), dtype=torch.uint8).reshape(-1, CIFAR_RECORD))
    data = torch.cat(records)
    labels = data[:, 0].long()
    if labels.max() > 9:
        raise UserError("a CIFAR-10 binary batch has a label above 9; is it CIFAR-100's?")
    rgb = data[:, 1:].reshape(-1, 3, 1024).long()
    gray = (19595 * rgb[:, 0] + 38470 * rgb[:, 1] + 7471 * rgb[:, 2] + 0x8000) >> 16
    x = (gray.float() / 255 - 122.6 / 255) / (61.0 / 255)
    return x.unsqueeze(-1), labels


def load(name: str, path: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """(x (N, L, 1), y (N,)) of dataset ``name`` (mnist | cifar10), ``split`` (train | test), from folder ``path``."""
    if name not in DATASETS:
        raise UserError(f"unknown pixel dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UserError(
            f"dataset.path {folder} is not a folder; put MNIST's idx files and CIFAR-10's binary version there "
            "(stateft/s4/pixels.py says where) or pass dataset.path=<folder>"
        )
    loader = load_mnist if name == "mnist" else load_cifar10_gray
    return loader(folder, split)
