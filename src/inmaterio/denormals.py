"""Subnormal floats flushed to zero around CPU tensor work.

On x86 CPUs an operation whose operand or result is subnormal (a nonzero
float32 below 1.2e-38 in magnitude) can take a hundred times as long as one
on normal numbers. Trained networks hold tiny weights on units that died,
whose products with small activations are subnormal, and trainings that run
on after their losses saturate (a sigmoid or a log-sum-exp far in its tail,
Adam's second moments of vanishing gradients) fill their tensors with such
numbers. With flush-to-zero and denormals-are-zero set the CPU treats them as
0: a subnormal term is lost anyway when added to any normal number, so
results change only where a sum consists of subnormal terms alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["flushed_denormals"]

_depth = threading.local()


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """Inside the block, torch's CPU operations in the calling thread treat subnormal floats as zero.

    The mode belongs to the thread (its floating-point control register): a
    loop that runs torch on one thread, as every trial of a study does, gets
    it for all its operations, backward passes included (CPU autograd runs in
    the thread that calls ``backward``); threads started inside the block
    inherit it, threads already running keep theirs. Blocks nest; the outermost one
    restores the default (off) on leaving. Where the CPU has no such mode the
    block runs unchanged.
    """
    depth = getattr(_depth, "value", 0)
    enabled = torch.set_flush_denormal(True) if depth == 0 else True
    _depth.value = depth + 1
    try:
        yield
    finally:
        _depth.value = depth
        if depth == 0 and enabled:
            torch.set_flush_denormal(False)
