"""Shared pytest setup: ``--runslow`` enables tests marked ``@pytest.mark.slow``; a one-thread fixture."""

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny batches: one intra-op thread is faster and immune to other processes on the 2 cores.

    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``; the count is restored after the module.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
