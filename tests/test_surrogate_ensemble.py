"""Surrogate ensembles: mean and spread by hand, calibration against Gaussian coverage, training and resuming,
and the spread calibration fitted by maximum likelihood against synthetic data of known truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inmaterio.devices import AnalyticDevice
from inmaterio.errors import ConfigError, ModelFileError, VoltageError
from inmaterio.smg.config import SamplingConfig, TrainConfig
from inmaterio.smg.dataset import Dataset, split
from inmaterio.smg.ensemble import member_directory, train_ensemble
from inmaterio.smg.evaluate import calibration, evaluate_ensemble, fit_spread, fit_spread_calibration
from inmaterio.smg.mlp_trainer import MLPTrainer
from inmaterio.smg.sampling import sample_plan
from inmaterio.surrogate import DeviceInfo, SpreadCalibration, SurrogateModel, save_surrogate
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


# --- spread calibration -------------------------------------------------------------------------------------


def synthetic_residuals(rng, n, scale, floor_na, spread_range=(0.5, 3.0), max_stderr_na=1.0):
    """Raw spreads s ~ U(spread_range), standard errors n ~ U(0, max_stderr_na) and residuals
    r ~ N(0, (scale s)^2 + floor^2 + n^2), nA, each ``(n,)``."""
    spread = rng.uniform(*spread_range, n)
    stderr = rng.uniform(0.0, max_stderr_na, n)
    residual = rng.normal(0.0, np.sqrt((scale * spread) ** 2 + floor_na**2 + stderr**2))
    return residual, spread, stderr


def variance_standard_errors(spread, stderr, scale, floor_na):
    """Cramér-Rao standard errors of (scale^2, floor^2) at the truth: the inverse of the Fisher information
    ``I = 1/2 sum g g^T / var^2`` of a zero-mean Gaussian with ``var = scale^2 s^2 + floor^2 + n^2``, ``g = (s^2, 1)``."""
    var = (scale * spread) ** 2 + floor_na**2 + stderr**2
    g = np.stack([spread**2, np.ones_like(spread)])
    fisher = 0.5 * (g / var) @ (g / var).T
    return np.sqrt(np.diag(np.linalg.inv(fisher)))


def test_fit_spread_recovers_a_known_scale_and_floor():
    rng = np.random.default_rng(11)
    scale, floor_na = 1.7, 0.8
    residual, spread, stderr = synthetic_residuals(rng, 20_000, scale, floor_na)
    fitted = fit_spread(residual, spread, stderr)
    se_scale2, se_floor2 = variance_standard_errors(spread, stderr, scale, floor_na)
    assert abs(fitted.scale**2 - scale**2) < 4 * se_scale2, (fitted, se_scale2)
    assert abs(fitted.floor_na**2 - floor_na**2) < 4 * se_floor2, (fitted, se_floor2)
    assert se_scale2 < 0.05 * scale**2 and se_floor2 < 0.5 * floor_na**2  # the test has power


def test_a_fitted_calibration_covers_fresh_points_and_the_raw_spread_does_not():
    rng = np.random.default_rng(12)
    scale, floor_na = 1.6, 0.7  # the members see 1/1.6 of their error and miss a shared 0.7 nA
    # fitted on 5x the fresh points, so that the fit's own error (~0.3 binomial errors) hardly adds to the sampling error
    fitted = fit_spread(*synthetic_residuals(rng, 100_000, scale, floor_na))
    residual, spread, stderr = synthetic_residuals(rng, 20_000, scale, floor_na)  # fresh points
    fresh = dataset(residual, stderr)
    calibrated = calibration(np.zeros(len(residual)), fitted.apply(spread), fresh)
    raw = calibration(np.zeros(len(residual)), spread, fresh)
    for k in (1, 2):
        expected, error = calibrated[f"expected_{k}_sigma"], calibrated[f"sampling_error_{k}_sigma"]
        assert abs(calibrated[f"within_{k}_sigma"] - expected) < 3 * error, calibrated
        assert raw[f"within_{k}_sigma"] < expected - 10 * error, raw
    assert calibrated["z_rms"] == pytest.approx(1.0, abs=0.02)
    assert raw["z_rms"] > 1.3


def test_an_uninformative_spread_gives_scale_zero_and_the_floor():
    rng = np.random.default_rng(13)
    floor_na = 2.0
    residual, spread, stderr = synthetic_residuals(rng, 20_000, 0.0, floor_na)
    fitted = fit_spread(residual, spread, stderr)
    se_scale2, se_floor2 = variance_standard_errors(spread, stderr, 0.0, floor_na)
    assert fitted.scale**2 < 4 * se_scale2, (fitted, se_scale2)
    assert abs(fitted.floor_na**2 - floor_na**2) < 4 * se_floor2, (fitted, se_floor2)
    # and the other edge: a spread that is right up to a factor, no shared error, exact measurements
    residual, spread, stderr = synthetic_residuals(rng, 20_000, 2.0, 0.0, max_stderr_na=0.0)
    fitted = fit_spread(residual, spread, stderr)
    se_scale2, se_floor2 = variance_standard_errors(spread, stderr, 2.0, 0.05)
    assert abs(fitted.scale**2 - 4.0) < 4 * se_scale2 and fitted.floor_na**2 < 4 * se_floor2, fitted


def test_fit_spread_calibration_uses_the_raw_spread_of_an_ensemble():
    """Constant members -1 and +1 nA: mean 0, raw spread sqrt(2) nA at every point; measurements ~ N(0, 3^2 + n^2).
    With one spread everywhere only the total model variance (scale s)^2 + floor^2 is defined: 9 nA^2."""
    rng = np.random.default_rng(14)
    n = 4000
    stderr = rng.uniform(0.0, 1.0, n)
    measured = rng.normal(0.0, np.sqrt(9.0 + stderr**2))
    calib = Dataset(np.zeros((n, 3)), measured, stderr)
    ensemble = SurrogateEnsemble([constant_model(-1.0), constant_model(1.0)])
    fitted = fit_spread_calibration(ensemble, calib)
    model_var = (fitted.scale * math.sqrt(2.0)) ** 2 + fitted.floor_na**2
    assert model_var == pytest.approx(9.0, abs=4 * 9.0 * math.sqrt(2 / n))
    # the ensemble's own calibration is ignored: the fit starts from the members' raw spread
    again = fit_spread_calibration(ensemble.with_calibration(SpreadCalibration(scale=5.0, floor_na=5.0)), calib)
    assert again == fitted
    # and the calibrated ensemble is honest on fresh points
    fresh_stderr = rng.uniform(0.0, 1.0, n)
    fresh = Dataset(np.zeros((n, 3)), rng.normal(0.0, np.sqrt(9.0 + fresh_stderr**2)), fresh_stderr)
    report = evaluate_ensemble(ensemble.with_calibration(fitted), fresh)["calibration"]
    for k in (1, 2):
        assert abs(report[f"within_{k}_sigma"] - report[f"expected_{k}_sigma"]) < 3 * report[f"sampling_error_{k}_sigma"]


def test_a_calibration_scales_the_spread_as_the_formula_says(tmp_path):
    members = [constant_model(1.0), constant_model(2.0), constant_model(6.0)]
    raw_std = math.sqrt(7.0)  # ((1-3)^2 + (2-3)^2 + (6-3)^2) / 2 = 7
    v = np.zeros((4, 3))
    plain = SurrogateEnsemble(members)
    assert plain.calibration == SpreadCalibration(scale=1.0, floor_na=0.0)
    np.testing.assert_allclose(plain.predict_with_std(v)[1], raw_std)
    cal = SpreadCalibration(scale=2.0, floor_na=3.0)
    calibrated = plain.with_calibration(cal)
    assert calibrated.calibration is cal and plain.calibration == SpreadCalibration()
    assert all(a is b for a, b in zip(calibrated.members, plain.members, strict=True))  # shared, not copied
    mean, std = calibrated.predict_with_std(v)
    np.testing.assert_allclose(mean, 3.0)
    np.testing.assert_allclose(std, math.sqrt((2.0 * raw_std) ** 2 + 3.0**2))  # sqrt(28 + 9)
    np.testing.assert_allclose(calibrated.predict_with_std(v, raw=True)[1], raw_std)
    np.testing.assert_allclose(calibrated.predict(v), 3.0)
    assert calibrated.with_calibration(None).calibration == SpreadCalibration()
    floor_only = plain.with_calibration(SpreadCalibration(scale=0.0, floor_na=0.5))
    np.testing.assert_allclose(floor_only.predict_with_std(v)[1], 0.5)
    paths = [save_surrogate(m, tmp_path / f"m{k}") for k, m in enumerate(members)]
    loaded = load_ensemble(paths, calibration=cal)
    assert loaded.calibration == cal
    np.testing.assert_allclose(loaded.predict_with_std(v)[1], math.sqrt(37.0), rtol=1e-6)
    assert load_ensemble(paths).calibration == SpreadCalibration()
    # a JSON round trip
    text = json.dumps(cal.as_dict())
    assert json.loads(text) == {"scale": 2.0, "floor_na": 3.0}
    assert SpreadCalibration.from_dict(json.loads(text)) == cal
    assert SpreadCalibration.from_dict({"floor_na": 1}) == SpreadCalibration(scale=1.0, floor_na=1.0)


def one_line_config_error(call, match):
    with pytest.raises(ConfigError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_bad_spread_calibrations_are_refused():
    one_line_config_error(lambda: SpreadCalibration(scale=-1.0), r"spread calibration scale must be .* \[0, inf\), got -1.0")
    one_line_config_error(lambda: SpreadCalibration(floor_na=float("nan")), "spread calibration floor_na .* got nan")
    one_line_config_error(lambda: SpreadCalibration(scale=math.inf), "scale .* got inf")
    one_line_config_error(lambda: SpreadCalibration(scale=True), "scale .* got True")
    one_line_config_error(lambda: SpreadCalibration(floor_na="1"), "floor_na .* got '1'")
    one_line_config_error(
        lambda: SpreadCalibration.from_dict({"scale": 1.0, "floor": 2.0}), "unknown spread calibration key 'floor'"
    )
    one_line_config_error(lambda: SpreadCalibration.from_dict([1.0, 2.0]), "must be a mapping .* got list")
    with pytest.raises(TypeError, match="calibration must be a SpreadCalibration or None, got dict"):
        SurrogateEnsemble([constant_model(1.0), constant_model(2.0)], {"scale": 2.0})
    ones = np.ones(20)
    one_line_config_error(lambda: fit_spread(ones[:9], ones[:9], ones[:9]), "at least 10 points, got 9")
    one_line_config_error(lambda: fit_spread(ones, ones[:19], ones), "must be 1-D of one shape")
    one_line_config_error(
        lambda: fit_spread(np.r_[ones[:19], np.nan], ones, ones), "residual_na has a non-finite value nan at point 19"
    )
    one_line_config_error(
        lambda: fit_spread(ones, np.r_[-1.0, ones[1:]], ones), "spread_na must be >= 0 nA, got -1.0 nA at point 0"
    )
    one_line_config_error(lambda: fit_spread(ones, ones, -ones), "stderr_na must be >= 0 nA")
    one_line_config_error(lambda: fit_spread(0 * ones, ones, ones), "residual_na is 0 at every point")
    one_line_config_error(lambda: fit_spread(ones, 0 * ones, ones), "spread_na is 0 at every point")
    ensemble = SurrogateEnsemble([constant_model(1.0), constant_model(2.0)])
    one_line_config_error(lambda: fit_spread_calibration(ensemble, dataset([], [])), "calibration dataset has 0 points")
    one_line_config_error(lambda: fit_spread_calibration(ensemble, dataset([1.0] * 5, [0.1] * 5)), "has 5 points; .* at least 10")


def test_an_ensemble_folder_loads_by_hand_and_refuses_a_bad_calibration_file(tmp_path):
    """Members 1, 2, 6 nA: mean 3, raw spread sqrt(7); calibration.json scale 2, floor 3 gives sqrt(37)."""
    folder = tmp_path / "model"
    save_surrogate(constant_model(1.0), folder)
    for k, value in ((1, 2.0), (2, 6.0)):
        save_surrogate(constant_model(value), folder / "ensemble" / f"member_{k}")
    v = np.zeros((2, 3))
    plain = load_ensemble(folder)
    np.testing.assert_allclose(plain.predict_with_std(v)[1], math.sqrt(7.0))
    (folder / "ensemble" / "calibration.json").write_text('{"scale": 2.0, "floor_na": 3.0}')
    mean, spread = load_ensemble(folder).predict_with_std(v)
    np.testing.assert_allclose(mean, 3.0)
    np.testing.assert_allclose(spread, math.sqrt(4 * 7.0 + 9.0))
    # a calibration given by the caller wins over the file
    np.testing.assert_allclose(load_ensemble(folder, SpreadCalibration(1.0, 0.0)).predict_with_std(v)[1], math.sqrt(7.0))
    (folder / "ensemble" / "calibration.json").write_text('{"scale": -1, "floor_na": 3.0}')
    with pytest.raises(ConfigError, match=r"spread calibration scale must be a finite number in \[0, inf\), got -1"):
        load_ensemble(folder)
    (folder / "ensemble" / "calibration.json").write_text('{"scale": 1')
    with pytest.raises(ModelFileError, match="calibration.json"):
        load_ensemble(folder)
    with pytest.raises(ModelFileError, match=r"holds no ensemble"):
        load_ensemble(folder / "ensemble" / "member_1")
