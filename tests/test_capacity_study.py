"""The capacity study's pieces: the annealing schedule, the vectorised models, one trial per model."""

import pytest
import torch

from inmaterio.config import validate_config
from inmaterio.devices.registry import AnalyticDeviceConfig
from inmaterio.errors import ConfigError
from inmaterio.studies.capacity_trial import (
    CapacitySettings,
    CapacityTrial,
    DecisionNode,
    LogisticFeatures,
    anneal_schedule,
    capacity_trial,
    train_classifiers,
)
from inmaterio.studies.common import DeviceChoice
from inmaterio.tasks.capacity import labellings
from inmaterio.tasks.config import CAPACITY_POINTS

ANALYTIC = DeviceChoice(spec=AnalyticDeviceConfig())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_anneal_schedule_by_hand():
    f = anneal_schedule(15)
    assert len(f) == 15 and f[0] == 1.0
    assert f[1] == pytest.approx(14 / 15) and f[2] == pytest.approx(14 / 15 * 13 / 15)
    assert f[13] == pytest.approx(f[12] * 2 / 15) and f[14] == pytest.approx(f[13] * 1 / 15)
    assert all(a > b > 0 for a, b in zip(f, f[1:]))


def test_logistic_features_are_independent_per_labelling():
    """Labelling l's feature depends only on its own weights: a loop over labellings gives the same."""
    f = LogisticFeatures(3, 2, torch.Generator().manual_seed(0))
    x = torch.randn(5, 2)
    out = f(x)
    for k in range(3):
        h = torch.sigmoid(x @ f.w[k].T + f.b[k])
        torch.testing.assert_close(out[:, k], h @ f.v[k])


def test_decision_node_normalises_each_labelling_separately():
    node = DecisionNode(2)
    features = torch.tensor([[1.0, 100.0], [3.0, 300.0]])
    out = node(features)  # training mode: batch statistics, affine = identity at start
    torch.testing.assert_close(out, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), atol=1e-4, rtol=0)


def test_three_logistic_units_shatter_four_points():
    """XOR-type corners included: every one of the 16 labellings of 4 points is separated."""
    r = capacity_trial(CapacityTrial(model="logistic3", n_points=4, seed=0, settings=CapacitySettings(epochs=800)))
    assert r["labellings"] == 16 and r["found"] == 16 and r["fraction"] == 1.0


def test_training_reaches_full_accuracy_on_separable_labellings():
    x = torch.tensor(CAPACITY_POINTS[:4], dtype=torch.float32)
    linear = labellings(4)[[3, 5, 12]]  # 0011, 0101, 1100: one line separates them
    _, acc = train_classifiers(LogisticFeatures(3, 2, torch.Generator().manual_seed(1)), x, linear, epochs=300)
    assert acc.tolist() == [1.0, 1.0, 1.0]


def test_annealed_dnpu_validates_on_a_device():
    """The annealed model trains on the surrogate and counts what the (analytic) device separates."""
    r = capacity_trial(CapacityTrial(
        model="dnpu_annealed", n_points=4, seed=0, settings=CapacitySettings(epochs=100, attempts=3), device=ANALYTIC,
    ))  # fmt: skip
    assert [a["noise_variance_factor"] for a in r["attempts"]] == pytest.approx(anneal_schedule(3)[: len(r["attempts"])])
    assert r["attempts"][0]["trained"] == 16
    assert sum(a["found_on_device"] for a in r["attempts"]) == r["found"] <= 16
    assert r["fraction"] == r["found"] / 16


def test_unknown_model_and_untyped_specs_are_refused():
    with pytest.raises(ConfigError, match=r"field 'model' = 'mlp': Input should be 'dnpu', 'dnpu_annealed'"):
        validate_config(CapacityTrial, {"model": "mlp", "n_points": 4, "seed": 0})
    with pytest.raises(ConfigError, match="unknown key 'settings.epoch'"):
        validate_config(CapacityTrial, {"model": "dnpu", "n_points": 4, "settings": {"epoch": 10}})
    with pytest.raises(ConfigError, match="capacity_trial takes a CapacityTrial, got dict"):
        capacity_trial({"model": "logistic2", "n_points": 4, "seed": 0})


def test_device_prefilter_measures_only_what_the_surrogate_separates():
    """With the pre-filter the device sees only surrogate-separated classifiers; the count is a lower bound.

    The device's verdict on a classifier does not depend on which others are
    measured with it (the analytic device is deterministic), so every
    classifier found with the pre-filter is also found without it.
    """
    spec = CapacityTrial(
        model="dnpu_annealed", n_points=5, seed=0, settings=CapacitySettings(epochs=150, attempts=1), device=ANALYTIC
    )
    prefiltered = spec.model_copy(update={"settings": CapacitySettings(epochs=150, attempts=1, device_prefilter=True)})
    full, filtered = capacity_trial(spec), capacity_trial(prefiltered)
    assert full["attempts"][0]["measured_on_device"] == 32
    assert filtered["attempts"][0]["measured_on_device"] == filtered["found_on_surrogate_any_attempt"] < 32
    both = [d and s for d, s in zip(full["device_found_mask"], full["surrogate_found_mask"])]
    assert filtered["device_found_mask"] == both  # the same verdicts, restricted to surrogate-separated ones
    assert filtered["found"] == sum(both) <= full["found"]
