"""Subnormal floats flushed to zero inside a block, restored after it, nested blocks included."""

import threading

import pytest
import torch

from inmaterio.denormals import flushed_denormals

SUBNORMAL = torch.finfo(torch.float32).tiny / 8


def flushed() -> bool:
    """Whether this thread now flushes subnormal results to zero."""
    return (torch.tensor([SUBNORMAL]) * 1.0).item() == 0.0


@pytest.fixture(autouse=True)
def needs_the_mode():
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero mode")


def test_inside_flushed_outside_not_nested_blocks_keep_it():
    assert not flushed()
    with flushed_denormals():
        assert flushed()
        with flushed_denormals():
            assert flushed()
        assert flushed()  # the inner block does not turn it off for the outer one
    assert not flushed()


def test_restored_after_an_exception():
    with pytest.raises(ValueError), flushed_denormals():
        raise ValueError("boom")
    assert not flushed()


def test_the_mode_belongs_to_the_thread():
    """A thread that was running before the block keeps its own mode."""
    go, seen = threading.Event(), []

    def check() -> None:
        go.wait()
        seen.append(flushed())

    worker = threading.Thread(target=check)
    worker.start()
    with flushed_denormals():
        go.set()
        worker.join()
    assert seen == [False]
