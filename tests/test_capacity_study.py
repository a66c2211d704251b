"""The capacity study's pieces: the annealing schedule, the vectorised models, one trial per model."""

import pytest
import torch

from inmaterio.config import validate_config
from inmaterio.devices.registry import AnalyticDeviceConfig
from inmaterio.errors import ConfigError
from inmaterio.nn import DNPU, processor_swapped
from inmaterio.studies.capacity_trial import (
    CapacitySettings,
    CapacityTrial,
    DecisionNode,
    LogisticFeatures,
    _found_on_device,
    _selected,
    anneal_schedule,
    capacity_trial,
    train_classifiers,
)
from inmaterio.studies.common import DeviceChoice, device_processor, surrogate_processor
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


def test_device_measurement_stops_at_each_classifiers_first_error():
    """Found on the device means every point right, so each classifier is measured point by point up to its
    first error: the verdicts are those of measuring every point at once, and the operating points spent
    are, per classifier, the index of its first error + 1 (N when it has none)."""
    trial = CapacityTrial(model="dnpu_annealed", n_points=6, seed=0, device=ANALYTIC)
    settings = trial.settings
    processor = surrogate_processor(trial.surrogate)
    device = device_processor(trial.device, processor)
    x = torch.tensor(CAPACITY_POINTS[:6], dtype=torch.float32)
    labels = labellings(6)
    layer = DNPU(processor, len(labels), settings.input_electrodes, settings.data_range, seed=3)
    decision, _ = train_classifiers(layer, x, labels, epochs=60)
    measure = torch.arange(len(labels)) % 5 != 0  # some classifiers are not measured at all
    found, points = _found_on_device(trial, 0, layer, decision, measure, x, labels, device)

    sub, node = _selected(layer, decision, measure, settings.input_electrodes, settings.data_range)
    with torch.no_grad(), processor_swapped(sub, device):
        right = ((node(sub(x)) > 0) == labels[measure].T.bool()).T  # (measured, N), every point measured
    assert found[~measure].sum() == 0
    assert found[measure].tolist() == (right.float().mean(dim=1) > 1 - 0.5 / 6).tolist()
    first_error = torch.where(right.all(dim=1), 5, (~right).int().argmax(dim=1))
    assert points == int((first_error + 1).sum()) < 6 * int(measure.sum())
    assert 0 < int(found.sum()) < int(measure.sum())  # the case is not trivial


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
