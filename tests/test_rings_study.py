"""Vectorised ring trials equal independent networks; one group of trials runs end to end."""

import pytest
import torch

from inmaterio.data.rings import make_rings
from inmaterio.errors import ConfigError
from inmaterio.processors import SurrogateProcessor
from inmaterio.surrogate import load_default_surrogate
from inmaterio.tasks.rings_study import BatchedRingNetworks, ring_trials


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("architecture", ["single", "2-2-1"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batched_trials_equal_standalone_networks(architecture, mode):
    """Trial t of the batch gives the output of its own network (batch norm per trial in both modes)."""
    torch.manual_seed(0)
    nets = BatchedRingNetworks(SurrogateProcessor(load_default_surrogate()), architecture, 3, seed=1)
    x, _ = make_rings(20, seed=2)
    with torch.no_grad():
        nets(x)  # move the running statistics away from their initial values
        nets(x * 0.5)
    nets.train(mode == "train")
    with torch.no_grad():
        batched = nets(x)
    for t in range(3):
        single = nets.trial(t)
        single.train(mode == "train")
        with torch.no_grad():
            torch.testing.assert_close(single(x), batched[:, t], rtol=1e-5, atol=1e-4)


def test_gradients_of_one_trial_ignore_the_others():
    """Summed losses: the gradient of trial 0's controls is what trial 0 alone would get."""
    from inmaterio.training.losses import fisher

    torch.manual_seed(0)
    nets = BatchedRingNetworks(SurrogateProcessor(load_default_surrogate()), "2-2-1", 2, seed=3)
    x, y = make_rings(30, seed=4)
    fisher(nets(x).T, y).sum().backward()
    alone = nets.trial(0)
    fisher(alone(x)[None], y).sum().backward()
    torch.testing.assert_close(nets.layers[0].controls.grad[:2], alone[0].controls.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(nets.layers[2].controls.grad[:1], alone[4].controls.grad, rtol=1e-4, atol=1e-6)


def test_ring_trials_group_runs_and_reports_every_trial():
    x_train, y_train = make_rings(50, seed=0)
    x_test, y_test = make_rings(30, seed=1)
    spec = {"architecture": "single", "first_seed": 5, "count": 4, "epochs": 30,
            "x_train": x_train.tolist(), "y_train": y_train.tolist(), "x_test": x_test.tolist(), "y_test": y_test.tolist()}  # fmt: skip
    r = ring_trials(spec)
    assert len(r["fisher"]) == len(r["train_accuracy"]) == len(r["test_accuracy"]) == 4
    assert all(0.0 <= a <= 1.0 for a in r["train_accuracy"] + r["test_accuracy"])
    assert r["best"]["index"] == max(range(4), key=lambda t: r["train_accuracy"][t])
    assert ring_trials(spec)["fisher"] == r["fisher"]  # seeded: the same numbers again


def test_unknown_architecture():
    with pytest.raises(ConfigError, match="unknown ring architecture"):
        BatchedRingNetworks(SurrogateProcessor(load_default_surrogate()), "3-3-1", 2)
