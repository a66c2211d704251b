"""Surrogate ensembles: mean and spread by hand, calibration against Gaussian coverage, training and resuming."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inmaterio.devices import AnalyticDevice
from inmaterio.errors import ConfigError, VoltageError
from inmaterio.smg.config import SamplingConfig, TrainConfig
from inmaterio.smg.dataset import Dataset, split
from inmaterio.smg.ensemble import member_directory, train_ensemble
from inmaterio.smg.evaluate import calibration, evaluate_ensemble
from inmaterio.smg.mlp_trainer import MLPTrainer
from inmaterio.smg.sampling import sample_plan
from inmaterio.surrogate import DeviceInfo, SurrogateModel
from inmaterio.surrogate.ensemble import SurrogateEnsemble, load_ensemble

INFO = DeviceInfo.from_device(AnalyticDevice(n_activation=3))


def constant_model(value_na: float, info: DeviceInfo = INFO) -> SurrogateModel:
    """A surrogate that answers ``value_na`` everywhere: zero weights, output offset = value."""
    model = SurrogateModel(info, hidden_sizes=(4,))
    with torch.no_grad():
        for p in model.mlp.parameters():
            p.zero_()
    model.set_output_normalization(value_na, 1.0)
    return model


def test_mean_and_spread_by_hand():
    ensemble = SurrogateEnsemble([constant_model(1.0), constant_model(2.0), constant_model(6.0)])
    v = np.zeros((5, 3))
    mean, std = ensemble.predict_with_std(v)
    np.testing.assert_allclose(mean, 3.0)
    np.testing.assert_allclose(std, math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2))
    np.testing.assert_allclose(ensemble.predict(v), 3.0)
    assert ensemble.info == INFO


def test_forward_is_the_differentiable_mean_of_the_members():
    torch.manual_seed(0)
    members = [SurrogateModel(INFO, hidden_sizes=(8, 8)) for _ in range(3)]
    ensemble = SurrogateEnsemble(members)
    v = (torch.rand(6, 3) * 1.8 - 1.2).requires_grad_()
    out = ensemble(v)
    by_hand = sum(m(v) for m in members) / 3
    torch.testing.assert_close(out, by_hand)
    (grad,) = torch.autograd.grad(out.sum(), v)
    (grad_by_hand,) = torch.autograd.grad(by_hand.sum(), v)
    torch.testing.assert_close(grad, grad_by_hand)
    np.testing.assert_allclose(
        ensemble.member_predictions(v.detach().numpy()), np.stack([m(v).detach().numpy() for m in members]), rtol=1e-6
    )


def dataset(measured, stderr):
    n = len(measured)
    return Dataset(np.zeros((n, 3)), np.asarray(measured, dtype=float), np.asarray(stderr, dtype=float))


def test_calibration_counts_by_hand():
    ds = dataset([0.5, -1.5, 2.5, 0.9], [0.0] * 4)
    result = calibration(np.zeros(4), np.ones(4), ds)
    assert result["n_points"] == 4
    assert result["within_1_sigma"] == 0.5 and result["within_2_sigma"] == 0.75
    assert result["z_rms"] == pytest.approx(math.sqrt((0.25 + 2.25 + 6.25 + 0.81) / 4))
    # the measurement's own error adds in quadrature: sigma = sqrt(1 + 3) = 2
    result = calibration(np.zeros(4), np.ones(4), dataset([0.5, -1.5, 2.5, 0.9], [math.sqrt(3)] * 4))
    assert result["within_1_sigma"] == 0.75 and result["within_2_sigma"] == 1.0


def test_an_honest_gaussian_spread_is_calibrated_and_a_wrong_one_is_not():
    rng = np.random.default_rng(0)
    n = 40_000
    spread = rng.uniform(0.5, 3.0, n)  # the model's spread varies from point to point
    noise = rng.uniform(0.0, 1.0, n)
    truth_error = rng.normal(0.0, np.sqrt(spread**2 + noise**2))
    ds = dataset(truth_error, noise)
    honest = calibration(np.zeros(n), spread, ds)
    for k in (1, 2):
        assert abs(honest[f"within_{k}_sigma"] - honest[f"expected_{k}_sigma"]) < 4 * honest[f"sampling_error_{k}_sigma"]
    assert honest["expected_1_sigma"] == pytest.approx(0.6827, abs=1e-4)
    assert honest["expected_2_sigma"] == pytest.approx(0.9545, abs=1e-4)
    assert honest["z_rms"] == pytest.approx(1.0, abs=0.02)
    overconfident = calibration(np.zeros(n), spread / 4, dataset(truth_error, noise / 4))
    assert overconfident["within_1_sigma"] < honest["expected_1_sigma"] - 10 * honest["sampling_error_1_sigma"]
    assert overconfident["z_rms"] > 3


def test_a_trained_ensemble_disagrees_where_it_saw_no_data(tmp_path, monkeypatch):
    """Members trained on one half of the range agree there and spread out on the other half."""
    device = AnalyticDevice(n_activation=3, noise_na=1.0, seed=1)
    v = sample_plan(SamplingConfig(kind="uniform", n_samples=3000, seed=0), device.voltage_ranges)
    v = v[v[:, 0] < -0.3]  # e0 only in [-1.2, -0.3] V
    m = device.measure_with_error(v)
    train, val, _ = split(Dataset(v, m.current_na, m.stderr_na), (0.8, 0.2, 0.0), seed=0)
    config = TrainConfig(
        hidden_sizes=(32, 32), learning_rate=3e-3, batch_size=128, max_epochs=30, patience=30, seed=0, num_threads=1
    )
    messages = []
    ensemble, results = train_ensemble(
        train, val, config, tmp_path, DeviceInfo.from_device(device), 3, progress=False, notify=messages.append
    )
    assert [r.directory for r in results] == [member_directory(tmp_path, k) for k in range(3)]
    assert len({float(r.best_val_rmse_na) for r in results}) == 3  # three seeds, three models
    inside = np.column_stack([np.full(200, -0.8), np.linspace(-1.2, 0.6, 200), np.zeros(200)])
    outside = inside.copy()
    outside[:, 0] = 0.6
    spread_outside, spread_inside = ensemble.predict_with_std(outside)[1].mean(), ensemble.predict_with_std(inside)[1].mean()
    assert spread_outside > 3 * spread_inside, (spread_outside, spread_inside)
    report = evaluate_ensemble(ensemble, val)
    assert report["rmse_na"] < 5 and report["calibration"]["n_points"] == len(val.current_na)
    # a second call reads the finished members back and trains nothing
    messages.clear()

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished member trained again")

    monkeypatch.setattr(MLPTrainer, "step", forbidden)
    again, _ = train_ensemble(
        train, val, config, tmp_path, DeviceInfo.from_device(device), 3, progress=False, notify=messages.append
    )
    np.testing.assert_array_equal(again.predict(outside), ensemble.predict(outside))
    loaded = load_ensemble([member_directory(tmp_path, k) for k in range(3)])
    np.testing.assert_allclose(loaded.predict(outside), ensemble.predict(outside), rtol=1e-6)


def test_bad_ensembles_and_inputs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 2 members to give a spread, got 1"):
        SurrogateEnsemble([constant_model(1.0)])
    with pytest.raises(TypeError, match="ensemble member 1 must be a SurrogateModel, got Linear"):
        SurrogateEnsemble([constant_model(1.0), torch.nn.Linear(3, 1)])
    other = DeviceInfo.from_device(AnalyticDevice(n_activation=3, low_v=-1.0))
    with pytest.raises(ConfigError, match="ensemble member 1 models another device"):
        SurrogateEnsemble([constant_model(1.0), constant_model(2.0, other)])
    ensemble = SurrogateEnsemble([constant_model(1.0), constant_model(2.0)])
    with pytest.raises(VoltageError):
        ensemble.predict_with_std(np.full((1, 3), 5.0))
    with pytest.raises(ConfigError, match="members must be an integer >= 2"):
        train_ensemble(None, None, TrainConfig(), tmp_path, INFO, 1)
    ds = dataset([1.0, 2.0], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"predicted_std_na has shape \(3,\)"):
        calibration(np.zeros(2), np.ones(3), ds)
    with pytest.raises(ValueError, match="predicted_na has a non-finite value at point 1"):
        calibration(np.array([0.0, np.nan]), np.ones(2), ds)
    with pytest.raises(ValueError, match="predicted_std_na must be >= 0"):
        calibration(np.zeros(2), np.array([1.0, -1.0]), ds)
    with pytest.raises(ValueError, match="point 0 has predictive sigma 0"):
        calibration(np.zeros(2), np.array([0.0, 1.0]), ds)
