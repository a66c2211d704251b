"""Vectorised ring trials equal independent networks; one group of trials runs end to end."""

import pytest
import torch

from inmaterio.config import validate_config
from inmaterio.data.rings import make_rings
from inmaterio.errors import ConfigError
from inmaterio.nn import processor_swapped
from inmaterio.processors import SurrogateProcessor
from inmaterio.studies.ring_trials import BatchedRingNetworks, RingData, RingGroup, RingTraining, calibrate_on_device, ring_trials
from inmaterio.surrogate import load_default_surrogate

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


def test_ring_data_splits_are_the_seeded_ring_sets():
    data = RingData(gap=0.2, n_train=10, n_val=7, n_test=5)
    for name, n, offset in (("train", 10, 0), ("test", 5, 1), ("val", 7, 2)):
        x, y = data.split(name, 3)
        x_ref, y_ref = make_rings(n, gap=0.2, seed=3 + offset)
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_ring_trials_group_runs_and_reports_every_trial():
    spec = RingGroup(
        architecture="single", first_seed=5, count=4, data=RingData(n_train=50, n_test=30), training=RingTraining(epochs=30)
    )
    r = ring_trials(spec)
    assert len(r["fisher"]) == len(r["train_accuracy"]) == len(r["test_accuracy"]) == 4
    assert all(0.0 <= a <= 1.0 for a in r["train_accuracy"] + r["test_accuracy"])
    assert r["best"]["index"] == max(range(4), key=lambda t: r["train_accuracy"][t])
    assert [c["index"] for c in r["top"]] == [r["best"]["index"]]  # keep defaults to 1
    assert ring_trials(spec)["fisher"] == r["fisher"]  # seeded: the same numbers again


def test_unknown_architecture():
    with pytest.raises(ConfigError, match="unknown ring architecture"):
        BatchedRingNetworks(SurrogateProcessor(load_default_surrogate()), "3-3-1", 2)
    with pytest.raises(ConfigError, match=r"field 'architecture' = '3-3-1': Input should be 'single' or '2-2-1'"):
        validate_config(RingGroup, {"architecture": "3-3-1", "first_seed": 0, "count": 2})
    with pytest.raises(ConfigError, match="unknown key 'x_train'"):
        validate_config(RingGroup, {"architecture": "single", "first_seed": 0, "count": 2, "x_train": []})
    with pytest.raises(ConfigError, match="ring_trials takes a RingGroup, got dict"):
        ring_trials({"architecture": "single", "first_seed": 0, "count": 2})


def test_ring_trials_keep_returns_the_best_trials_in_order():
    data = RingData(n_train=40, n_test=40)
    spec = RingGroup(architecture="single", first_seed=3, count=5, data=data, training=RingTraining(epochs=20), keep=3)
    r = ring_trials(spec)
    order = sorted(range(5), key=lambda t: (-r["train_accuracy"][t], t))[:3]
    assert [c["index"] for c in r["top"]] == order
    assert [c["train_accuracy"] for c in r["top"]] == [r["train_accuracy"][t] for t in order]
    assert r["top"][0]["state"] == r["best"]["state"]


def _trained_2_2_1():
    torch.manual_seed(0)
    nets = BatchedRingNetworks(SurrogateProcessor(load_default_surrogate()), "2-2-1", 1, seed=5)
    x, y = make_rings(30, seed=6)
    with torch.no_grad():
        nets(x * 0.7)  # running statistics that do not match x
    return nets.trial(0), x, y


def test_calibrate_on_device_takes_the_batch_norm_statistics_of_the_measured_training_set():
    net, x, y = _trained_2_2_1()
    device = SurrogateProcessor(load_default_surrogate(), amplification=1.5)
    threshold, out = calibrate_on_device(net, device, x, y)
    assert not net.training
    with torch.no_grad(), processor_swapped(net, device):
        # eval mode reproduces the calibration pass, up to float32 rounding (which differs between BLAS kernels)
        torch.testing.assert_close(net(x), out, rtol=1e-5, atol=1e-3)
        first = net[0](x)
    torch.testing.assert_close(net[1].running_mean, first.mean(dim=0))
    torch.testing.assert_close(net[1].running_var, first.var(dim=0, unbiased=False))
    assert net[1].momentum == 0.1  # restored
    assert threshold.mean.shape == ()


def test_batch_norm_calibration_removes_a_gain_of_the_hidden_nodes():
    """A device = the surrogate x 1.5: after calibration the hidden values are the surrogate's, the output 1.5 x."""
    net, x, y = _trained_2_2_1()
    surrogate = SurrogateProcessor(load_default_surrogate())
    _, on_surrogate = calibrate_on_device(net, surrogate, x, y)
    _, on_device = calibrate_on_device(net, SurrogateProcessor(load_default_surrogate(), amplification=1.5), x, y)
    torch.testing.assert_close(on_device, 1.5 * on_surrogate, rtol=1e-4, atol=1e-3)
    _, uncalibrated = calibrate_on_device(
        net, SurrogateProcessor(load_default_surrogate(), amplification=1.5), x, y, batch_norm=False
    )
    torch.testing.assert_close(uncalibrated, on_device, rtol=1e-5, atol=1e-3)  # the statistics already fit this device


def test_ring_trials_noisy_ranking():
    """Zero noise: the noisy accuracy is the clean one; with noise, ``top`` follows the noisy accuracy."""
    data = RingData(n_train=40, n_test=40)
    spec = RingGroup(
        architecture="2-2-1", first_seed=1, count=4, data=data, training=RingTraining(epochs=10), keep=4, noisy_draws=3
    )
    quiet = ring_trials(spec.model_copy(update={"noisy_std_factor": 0.0}))
    assert quiet["noisy_train_accuracy"] == pytest.approx(quiet["train_accuracy"])
    noisy = ring_trials(spec.model_copy(update={"noisy_std_factor": 2.0}))
    scores = noisy["noisy_train_accuracy"]
    assert [c["index"] for c in noisy["top"]] == sorted(range(4), key=lambda t: (-scores[t], t))
    assert [c["score"] for c in noisy["top"]] == sorted(scores, reverse=True)
    assert "noisy_train_accuracy" not in ring_trials(spec.model_copy(update={"noisy_draws": 0}))
