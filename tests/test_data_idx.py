"""IDX reader and MNIST loader, on tiny files written here byte by byte (struct + gzip)."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from inmaterio.data.idx import read_idx
from inmaterio.data.mnist import (
    MNIST_DIR_ENV,
    download_mnist,
    load_mnist,
    mnist_dir,
    mnist_splits,
    scale_pixels,
)
from inmaterio.errors import ConfigError, ModelFileError

# 3 images of 4 x 5 pixels, every value distinct: image i, row r, column c holds 4 (20 i + 5 r + c) mod 256
IMAGES = [[[(20 * i + 5 * r + c) * 4 % 256 for c in range(5)] for r in range(4)] for i in range(3)]
LABELS = [7, 0, 9]


def idx_bytes(code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file written from its specification: 0x0000, dtype code, ndim, big-endian uint32 dims, data."""
    return struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + payload


def image_bytes() -> bytes:
    return bytes(v for image in IMAGES for row in image for v in row)


def write(path, content: bytes, gz: bool):
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(content)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize("gz", [True, False])
def test_uint8_images_and_labels_read_back_exactly(tmp_path, gz):
    suffix = ".gz" if gz else ""
    images = read_idx(write(tmp_path / f"img{suffix}", idx_bytes(0x08, (3, 4, 5), image_bytes()), gz))
    labels = read_idx(write(tmp_path / f"lab{suffix}", idx_bytes(0x08, (3,), bytes(LABELS)), gz))
    assert images.dtype == np.uint8 and images.shape == (3, 4, 5)
    assert images.tolist() == IMAGES
    assert labels.dtype == np.uint8 and labels.tolist() == LABELS


def test_multibyte_dtypes_are_big_endian(tmp_path):
    values = [-2, 300, 70000]
    got = read_idx(write(tmp_path / "i4", idx_bytes(0x0C, (3,), struct.pack(">3i", *values)), False))
    assert got.tolist() == values and got.dtype == np.int32 and got.dtype.isnative
    floats = [1.5, -0.25]
    got = read_idx(write(tmp_path / "f8", idx_bytes(0x0E, (1, 2), struct.pack(">2d", *floats)), False))
    assert got.tolist() == [floats]
    got = read_idx(write(tmp_path / "i2", idx_bytes(0x0B, (2,), struct.pack(">2h", -1, 513)), False))
    assert got.tolist() == [-1, 513]


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\x00\x00", "truncated"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x05", "bad magic"),
        (b"\x00\x00\x0a\x01" + struct.pack(">I", 1) + b"\x05", "unknown dtype code 0x0A"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 3), "truncated"),  # 3 dims declared, 1 given
        (idx_bytes(0x08, (3, 4, 5), image_bytes()[:-1]), "truncated"),
        (idx_bytes(0x08, (3,), bytes(LABELS) + b"\x00"), "size mismatch"),
    ],
)
def test_corrupt_files_raise_model_file_error_naming_file_and_problem(tmp_path, content, problem):
    path = write(tmp_path / "broken-idx1-ubyte", content, False)
    with pytest.raises(ModelFileError, match=problem) as err:
        read_idx(path)
    assert "broken-idx1-ubyte" in str(err.value)


def test_corrupt_gzip_and_missing_file(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"not a gzip stream")
    with pytest.raises(ModelFileError, match="x.gz"):
        read_idx(bad)
    with pytest.raises(ModelFileError, match="does not exist"):
        read_idx(tmp_path / "missing")


def mnist_dir_with(tmp_path, n_train: int = 12, n_test: int = 4, gz: bool = True):
    """A fake MNIST directory: 28x28 images whose pixel (0, 0) is the image index."""
    d = tmp_path / "mnist"
    d.mkdir()
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 0, 0] = np.arange(n)
        images[:, 27, 27] = 255
        write(d / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(0x08, (n, 28, 28), images.tobytes()), gz)
        write(d / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(0x08, (n,), bytes([i % 10 for i in range(n)])), gz)
    return d


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_directory(tmp_path, gz):
    data = load_mnist(mnist_dir_with(tmp_path, gz=gz))
    assert data.train_images.shape == (12, 28, 28) and data.test_labels.tolist() == [0, 1, 2, 3]
    assert data.train_images[5, 0, 0] == 5


def test_env_var_is_the_default_directory(tmp_path, monkeypatch):
    d = mnist_dir_with(tmp_path)
    monkeypatch.setenv(MNIST_DIR_ENV, str(d))
    assert mnist_dir() == d
    assert load_mnist().train_labels.tolist() == [i % 10 for i in range(12)]


def test_no_directory_message_lists_both_options(monkeypatch):
    monkeypatch.delenv(MNIST_DIR_ENV, raising=False)
    with pytest.raises(ConfigError) as err:
        load_mnist()
    assert "data_dir" in str(err.value) and MNIST_DIR_ENV in str(err.value)


def test_missing_directory_and_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv(MNIST_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ModelFileError, match=f"nowhere.*{MNIST_DIR_ENV}"):
        load_mnist()
    d = mnist_dir_with(tmp_path)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ModelFileError, match="t10k-labels-idx1-ubyte"):
        load_mnist(d)


def test_label_count_mismatch(tmp_path):
    d = mnist_dir_with(tmp_path)
    write(d / "train-labels-idx1-ubyte.gz", idx_bytes(0x08, (3,), bytes(3)), True)
    with pytest.raises(ModelFileError, match="train-labels"):
        load_mnist(d)


def test_scaling_and_seeded_split(tmp_path):
    x = scale_pixels(np.array([[[0, 255], [51, 102]]], np.uint8))
    assert x.dtype == torch.float32 and x.shape == (1, 4)
    assert torch.allclose(x, torch.tensor([[-0.5, 0.5, -0.3, -0.1]]))
    d = mnist_dir_with(tmp_path)
    s = mnist_splits(d, n_validation=5, seed=3)
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (7, 5, 4)
    assert s.x_train.shape[1] == 784 and s.y_train.dtype == torch.int64
    # the validation and training images are a partition of the 12, labels travel with their images
    index = torch.cat([s.x_train, s.x_val])[:, 0] + 0.5  # pixel (0, 0) = index / 255
    ids = torch.round(index * 255).long()
    assert sorted(ids.tolist()) == list(range(12))
    assert torch.equal(torch.cat([s.y_train, s.y_val]), ids % 10)
    assert torch.equal(mnist_splits(d, n_validation=5, seed=3).y_val, s.y_val)
    assert not torch.equal(mnist_splits(d, n_validation=5, seed=4).x_val, s.x_val)
    with pytest.raises(ConfigError, match="n_validation"):
        mnist_splits(d, n_validation=12)


def test_download_from_local_url_checks_sums(tmp_path):
    src = mnist_dir_with(tmp_path)
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    dest = download_mnist(tmp_path / "dl", base_url=src.as_uri(), checksums=sums)
    assert sorted(p.name for p in dest.iterdir()) == sorted(sums)
    assert load_mnist(dest).train_images.tolist() == load_mnist(src).train_images.tolist()
    wrong = dict(sums, **{"t10k-images-idx3-ubyte.gz": "0" * 64})
    with pytest.raises(ModelFileError, match="SHA-256") as err:
        download_mnist(tmp_path / "dl2", base_url=src.as_uri(), checksums=wrong)
    assert "t10k-images" in str(err.value)
    assert not (tmp_path / "dl2" / "t10k-images-idx3-ubyte.gz").exists()
