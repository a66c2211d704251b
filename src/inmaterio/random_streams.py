"""Random streams keyed by what they serve, never by call order.

A resumed run must draw the same numbers as an uninterrupted one, so every
stream is a pure function of a seed and of *keys* that name its purpose:
the operating point's index in a plan, the epoch, the trial, the attempt.
Keys are integers (any size, negative allowed) or strings (hashed); the
same keys always give the same stream, in any process, in any order::

    gen = torch_generator(config.seed, "shuffle", epoch)      # torch.Generator
    rng = numpy_generator(device_seed, "noise", point_index)  # numpy Generator
    seed = stream_seed(config.seed, "trial", 17)              # 63-bit int
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

__all__ = ["Key", "stream_seed", "stream_seeds", "torch_generator", "numpy_generator", "key_words"]

Key = int | str


def key_words(*keys: Key) -> list[int]:
    """The keys as non-negative 32-bit words for :class:`numpy.random.SeedSequence`.

    An integer becomes its sign and its 32-bit limbs (so ``1`` and ``2**32 + 1``
    differ), a string the first 16 bytes of its BLAKE2b digest; each key is
    preceded by a tag word, so ``("a", 1)`` and ``(1, "a")`` differ.
    """
    words: list[int] = []
    for key in keys:
        if isinstance(key, bool) or not isinstance(key, int | str | np.integer):
            raise TypeError(f"a stream key must be an int or a str, got {type(key).__name__} {key!r}")
        if isinstance(key, str):
            digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
            words += [0x5354_5200, *np.frombuffer(digest, dtype="<u4").tolist()]
            continue
        value = int(key)
        limbs = []
        magnitude = abs(value)
        while True:
            limbs.append(magnitude & 0xFFFF_FFFF)
            magnitude >>= 32
            if not magnitude:
                break
        words += [0x494E_5400 + (value < 0) + 2 * len(limbs), *limbs]
    return words


def stream_seeds(n: int, *keys: Key) -> np.ndarray:
    """``(n,)`` uint64 seeds of the stream named by ``keys`` (e.g. one per point of a batch)."""
    return np.random.SeedSequence(key_words(*keys)).generate_state(n, dtype=np.uint64)


def stream_seed(*keys: Key) -> int:
    """One 63-bit seed (fits ``torch.manual_seed`` and int64) of the stream named by ``keys``."""
    return int(stream_seeds(1, *keys)[0] >> np.uint64(1))


def torch_generator(*keys: Key) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded by :func:`stream_seed` of ``keys``."""
    return torch.Generator().manual_seed(stream_seed(*keys))


def numpy_generator(*keys: Key) -> np.random.Generator:
    """A numpy :class:`~numpy.random.Generator` (PCG64) seeded from ``keys``."""
    return np.random.default_rng(np.random.SeedSequence(key_words(*keys)))
