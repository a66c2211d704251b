"""Datasets for the tasks: generated (rings) or read from files (IDX, MNIST)."""

from inmaterio.data.idx import read_idx
from inmaterio.data.mnist import MNIST, MNISTSplits, download_mnist, load_mnist, mnist_splits, scale_pixels
from inmaterio.data.rings import make_rings, ring_radii

__all__ = [
    "MNIST",
    "MNISTSplits",
    "download_mnist",
    "load_mnist",
    "make_rings",
    "mnist_splits",
    "read_idx",
    "ring_radii",
    "scale_pixels",
]
