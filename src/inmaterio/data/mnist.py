"""MNIST handwritten digits: loading from IDX files, the 55k/5k/10k split, pixel scaling, download.

The data live in a directory holding the four standard files (gzip-compressed
or not)::

    train-images-idx3-ubyte[.gz]   60000 x 28 x 28 uint8
    train-labels-idx1-ubyte[.gz]   60000 uint8
    t10k-images-idx3-ubyte[.gz]    10000 x 28 x 28 uint8
    t10k-labels-idx1-ubyte[.gz]    10000 uint8

The directory is the ``data_dir`` argument or, when that is None, the
environment variable :data:`MNIST_DIR_ENV` (``INMATERIO_MNIST_DIR``); there is
no built-in path. :func:`download_mnist` fetches the files into a directory
and checks their SHA-256 sums.

:func:`mnist_splits` gives the split of Ruiz Euler et al. (2021): 55,000
training and 5,000 validation images drawn from the 60,000 training images by
a seeded permutation, and the 10,000 test images; pixels scaled to
[-0.5, 0.5] (:func:`scale_pixels`) and flattened to 784 values.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inmaterio.data.idx import read_idx
from inmaterio.errors import ConfigError, ModelFileError
from inmaterio.fileio import atomic_path

__all__ = [
    "MNIST_BASE_URL",
    "MNIST_DIR_ENV",
    "MNIST_FILES",
    "MNIST_SHA256",
    "MNIST",
    "MNISTSplits",
    "download_mnist",
    "load_mnist",
    "mnist_dir",
    "mnist_splits",
    "scale_pixels",
]

#: Environment variable naming the MNIST directory when ``data_dir`` is not given.
MNIST_DIR_ENV = "INMATERIO_MNIST_DIR"

#: Role -> standard file name (without ``.gz``).
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: SHA-256 of the standard ``.gz`` files (as served by the mirrors below).
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "b09d8b89df4ad239afc76a323dbe9559169cd8cca365467dfe8aa1f7ca54109b",
    "train-labels-idx1-ubyte.gz": "c51906e7929bbf7c824fbd16019b56297269ca82cba449c5b5d59c0a02147fed",
    "t10k-images-idx3-ubyte.gz": "f72c2dff3457595ec2fe452d25d97b7f974a74ad5b006687704212bedd1486d8",
    "t10k-labels-idx1-ubyte.gz": "4baf84ddd60ae342cfdd282ec3fba3249a201a4459782165496a7cbebbe49a2e",
}

#: Default download mirror (the one torchvision uses).
MNIST_BASE_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


@dataclass(frozen=True)
class MNIST:
    """The raw MNIST arrays: images ``(n, 28, 28)`` uint8, labels ``(n,)`` uint8."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclass(frozen=True)
class MNISTSplits:
    """Scaled, flattened tensors: ``x_*`` ``(n, 784)`` float32 in [-0.5, 0.5], ``y_*`` ``(n,)`` int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def mnist_dir(data_dir: str | Path | None = None) -> Path:
    """The MNIST directory: ``data_dir``, else ``$INMATERIO_MNIST_DIR``; it must exist.

    Raises :class:`ConfigError` when neither is given, :class:`ModelFileError`
    when the directory does not exist.
    """
    source = "data_dir"
    if data_dir is None:
        env = os.environ.get(MNIST_DIR_ENV, "").strip()
        if not env:
            raise ConfigError(
                "no MNIST directory given: pass data_dir (e.g. load_mnist('/path/to/mnist')) or set the "
                f"environment variable {MNIST_DIR_ENV}=/path/to/mnist; the directory must hold "
                f"{', '.join(n + '.gz' for n in MNIST_FILES.values())} (or the unzipped files); "
                "download_mnist(dest) fetches them"
            )
        data_dir, source = env, f"${MNIST_DIR_ENV}"
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise ModelFileError(
            f"MNIST directory '{path}' (from {source}) does not exist; pass data_dir or set {MNIST_DIR_ENV} "
            "to a directory holding the four IDX files, or fetch them with download_mnist(dest)"
        )
    return path


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    raise ModelFileError(f"MNIST directory '{directory}' has neither '{name}.gz' nor '{name}'")


def load_mnist(data_dir: str | Path | None = None) -> MNIST:
    """Read the four MNIST files from ``data_dir`` (default ``$INMATERIO_MNIST_DIR``).

    Checks that images are ``(n, rows, cols)``, labels ``(n,)`` with the same
    ``n`` and values 0..9, and that training and test images have the same
    size (else :class:`ModelFileError` naming the file).
    """
    directory = mnist_dir(data_dir)
    arrays = {role: (read_idx(p := _find(directory, name)), p) for role, name in MNIST_FILES.items()}
    for split in ("train", "test"):
        (images, ip), (labels, lp) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3:
            raise ModelFileError(f"MNIST images '{ip}' have shape {images.shape}, expected (n, rows, cols)")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ModelFileError(
                f"MNIST labels '{lp}' have shape {labels.shape}, expected ({len(images)},) like the images '{ip}'"
            )
        if labels.size and int(labels.max()) > 9:
            raise ModelFileError(f"MNIST labels '{lp}' hold class {int(labels.max())}; digits are 0..9")
    (train, train_path), (test, test_path) = arrays["train_images"], arrays["test_images"]
    if train.shape[1:] != test.shape[1:]:
        raise ModelFileError(
            f"MNIST images '{test_path}' are {test.shape[1]} x {test.shape[2]} pixels, the training images "
            f"'{train_path}' {train.shape[1]} x {train.shape[2]}; both sets need the same size"
        )
    return MNIST(*(arrays[role][0] for role in MNIST_FILES))


def scale_pixels(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels 0..255 -> float32 ``pixel / 255 - 0.5`` in [-0.5, 0.5], flattened to ``(n, rows * cols)``."""
    t = torch.as_tensor(np.asarray(images))
    return (t.reshape(t.shape[0], -1).to(torch.float32) / 255.0) - 0.5


def mnist_splits(data: MNIST | str | Path | None = None, *, n_validation: int = 5000, seed: int = 0) -> MNISTSplits:
    """The training/validation/test split (55k/5k/10k for MNIST) with pixels scaled to [-0.5, 0.5].

    ``data`` is a loaded :class:`MNIST` or a directory for :func:`load_mnist`.
    The validation images are the first ``n_validation`` of a permutation of
    the training images drawn by ``torch.Generator().manual_seed(seed)``; the
    rest (in that permuted order) are the training set.
    """
    if not isinstance(data, MNIST):
        data = load_mnist(data)
    n = len(data.train_images)
    if not 0 <= n_validation < n:
        raise ConfigError(f"n_validation must be in [0, {n}) for {n} training images, got {n_validation}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    x = scale_pixels(data.train_images)
    y = torch.as_tensor(data.train_labels.astype(np.int64))
    val, train = perm[:n_validation], perm[n_validation:]
    return MNISTSplits(
        x_train=x[train],
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=scale_pixels(data.test_images),
        y_test=torch.as_tensor(data.test_labels.astype(np.int64)),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_mnist(
    dest: str | Path,
    base_url: str = MNIST_BASE_URL,
    *,
    checksums: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """Download the four ``.gz`` files from ``base_url`` into ``dest`` and check their SHA-256 sums.

    ``checksums`` maps file name -> SHA-256 (default :data:`MNIST_SHA256`).
    A file already in ``dest`` with the right sum is kept; a download with the
    wrong sum raises :class:`ModelFileError` and is not written. Any URL
    scheme urllib knows works (``https://``, ``file://``). Returns ``dest``.
    """
    checksums = MNIST_SHA256 if checksums is None else checksums
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    for name in (f"{n}.gz" for n in MNIST_FILES.values()):
        want = checksums.get(name)
        if want is None:
            raise ConfigError(f"no SHA-256 checksum given for '{name}'; checksums has {sorted(checksums)}")
        target = dest / name
        if target.is_file() and _sha256(target) == want:
            continue
        url = base + name
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - user-chosen mirror
                payload = response.read()
        except OSError as err:
            raise ModelFileError(f"cannot download '{url}': {err}") from None
        got = hashlib.sha256(payload).hexdigest()
        if got != want:
            raise ModelFileError(f"download '{url}' has SHA-256 {got}, expected {want}; nothing written for '{name}'")
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(payload)
    return dest
