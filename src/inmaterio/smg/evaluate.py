"""Accuracy of a surrogate against measured data.

All errors are in nA over the ``N`` points of a dataset, with ``e = I_pred - I_meas``:

- ``rmse_na = sqrt(mean(e^2))``, ``mae_na = mean(|e|)``, ``max_abs_error_na = max(|e|)``;
- ``rmse_percent_of_range = 100 * rmse_na / (max(I_meas) - min(I_meas))``;
- ``correlation``: Pearson correlation of prediction and measurement;
- ``noise_floor_na``: RMS standard error of the measurements (see
  :func:`~inmaterio.smg.dataset.noise_floor_na`), and
  ``rmse_over_noise_floor = rmse_na / noise_floor_na`` (None for exact data):
  a value near 1 means the model is as good as the measurement allows.
- ``model_error_na = sqrt(max(rmse_na^2 - noise_floor_na^2, 0))``: the
  model's own RMS error against the device's true mean current. The noise of a
  point the model never saw is independent of the prediction, so
  ``E[(I_pred - I_meas)^2] = E[(I_pred - I_true)^2] + E[stderr^2]``; this
  estimate needs points the model was not trained on.

For an ensemble (:class:`~inmaterio.surrogate.ensemble.SurrogateEnsemble`),
:func:`calibration` asks whether its spread is honest: with the members'
standard deviation ``s_i`` and the measurement's standard error ``n_i``, a
fresh measurement should fall within ``k sigma_i = k sqrt(s_i^2 + n_i^2)`` of
the mean prediction as often as a Gaussian says (68.27% for ``k = 1``,
95.45% for ``k = 2``), within the binomial sampling error
``sqrt(p (1 - p) / N)``. ``s_i`` is the ensemble's spread as
:meth:`~inmaterio.surrogate.ensemble.SurrogateEnsemble.predict_with_std` gives
it, so corrected by the ensemble's
:class:`~inmaterio.surrogate.ensemble.SpreadCalibration` if it has one.

Members share part of their error, so their raw spread ``s_i`` is often
overconfident. :func:`fit_spread_calibration` fits the correction on a
calibration dataset (e.g. the validation split; check it on fresh points):

    sigma_i^2 = (scale * s_i)^2 + floor_na^2 + n_i^2,

with ``scale >= 0`` and ``floor_na >= 0`` nA maximising the Gaussian
likelihood of the residuals ``r_i = I_meas_i - mean_i``, i.e. minimising
``sum_i log(sigma_i^2) + r_i^2 / sigma_i^2``; ``scale = 1``, ``floor_na = 0``
is the uncalibrated ensemble. :func:`fit_spread` does the same on arrays.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize

from inmaterio.errors import ConfigError
from inmaterio.smg.dataset import Dataset, noise_floor_na
from inmaterio.surrogate import SurrogateModel
from inmaterio.surrogate.ensemble import SpreadCalibration, SurrogateEnsemble

__all__ = [
    "evaluate_surrogate",
    "error_metrics",
    "calibration",
    "evaluate_ensemble",
    "fit_spread",
    "fit_spread_calibration",
    "MIN_CALIBRATION_POINTS",
]

#: Gaussian probability of falling within k standard deviations, k = 1, 2.
GAUSSIAN_COVERAGE = {1: math.erf(1 / math.sqrt(2)), 2: math.erf(2 / math.sqrt(2))}

#: The fewest points :func:`fit_spread` fits two parameters on.
MIN_CALIBRATION_POINTS = 10

#: Relative variance added inside the fit so that the likelihood stays bounded where a point has no
#: residual, no spread and no measurement error (1e-12 of the mean squared residual; not in the result).
_FIT_JITTER = 1e-12


def error_metrics(predicted_na: np.ndarray, dataset: Dataset) -> dict[str, Any]:
    """The metrics of the module docstring for predictions ``(N,)`` nA of ``dataset``'s points."""
    predicted = np.asarray(predicted_na, dtype=np.float64)
    measured = dataset.current_na
    if predicted.shape != measured.shape or len(measured) == 0:
        raise ValueError(f"predictions {predicted.shape} must match the non-empty measurements {measured.shape}")
    error = predicted - measured
    rmse = float(np.sqrt(np.mean(error**2)))
    span = float(np.ptp(measured))
    floor = noise_floor_na(dataset)
    both_vary = np.std(predicted) > 0 and np.std(measured) > 0
    return {
        "n_points": len(measured),
        "rmse_na": rmse,
        "rmse_percent_of_range": 100.0 * rmse / span if span > 0 else None,
        "mae_na": float(np.mean(np.abs(error))),
        "max_abs_error_na": float(np.max(np.abs(error))),
        "correlation": float(np.corrcoef(predicted, measured)[0, 1]) if both_vary else None,
        "noise_floor_na": floor,
        "rmse_over_noise_floor": rmse / floor if floor > 0 else None,
        "model_error_na": math.sqrt(max(rmse**2 - floor**2, 0.0)),
    }


def evaluate_surrogate(model: SurrogateModel, dataset: Dataset) -> dict[str, Any]:
    """Predict ``dataset``'s voltages with ``model`` (range-checked) and return :func:`error_metrics`."""
    return error_metrics(model.predict(dataset.voltages_v), dataset)


def calibration(predicted_na: np.ndarray, predicted_std_na: np.ndarray, dataset: Dataset) -> dict[str, Any]:
    """How often ``dataset``'s measurements fall within 1 and 2 predictive sigmas of the predictions.

    ``predicted_na``, ``predicted_std_na``: ``(N,)`` nA, the ensemble's mean and
    spread at the dataset's points. The predictive sigma adds the measurement's
    standard error in quadrature. Returns ``n_points``, ``within_1_sigma``,
    ``within_2_sigma`` (fractions), their Gaussian expectations
    ``expected_1_sigma`` / ``expected_2_sigma``, the binomial sampling errors
    ``sampling_error_1_sigma`` / ``sampling_error_2_sigma`` of those
    expectations, and ``z_rms``, the RMS of ``(I_meas - I_pred) / sigma``
    (1 for an honest Gaussian spread).

    Raises ValueError for shapes that do not match the dataset, non-finite
    values, a negative spread, or a point whose predictive sigma is 0 (an exact
    device needs a spread from the ensemble).
    """
    predicted = np.asarray(predicted_na, dtype=np.float64)
    spread = np.asarray(predicted_std_na, dtype=np.float64)
    measured = dataset.current_na
    for name, value in (("predicted_na", predicted), ("predicted_std_na", spread)):
        if value.shape != measured.shape or len(measured) == 0:
            raise ValueError(f"{name} has shape {value.shape}; it must match the non-empty measurements {measured.shape}")
        if not np.isfinite(value).all():
            raise ValueError(f"{name} has a non-finite value at point {int(np.argmin(np.isfinite(value)))}")
    if (spread < 0).any():
        raise ValueError(f"predicted_std_na must be >= 0, got {spread.min()} nA at point {int(np.argmin(spread))}")
    sigma = np.sqrt(spread**2 + dataset.stderr_na**2)
    if (sigma == 0).any():
        raise ValueError(
            f"point {int(np.argmin(sigma))} has predictive sigma 0 (no ensemble spread and an exact measurement); "
            "calibration needs a spread at every point"
        )
    z = (measured - predicted) / sigma
    n = len(measured)
    result: dict[str, Any] = {"n_points": n}
    for k, expected in GAUSSIAN_COVERAGE.items():
        result[f"within_{k}_sigma"] = float(np.mean(np.abs(z) <= k))
        result[f"expected_{k}_sigma"] = expected
        result[f"sampling_error_{k}_sigma"] = math.sqrt(expected * (1 - expected) / n)
    result["z_rms"] = float(np.sqrt(np.mean(z**2)))
    return result


def evaluate_ensemble(ensemble: SurrogateEnsemble, dataset: Dataset) -> dict[str, Any]:
    """:func:`error_metrics` of the ensemble's mean, the mean (calibrated) spread ``mean_std_na``, and
    :func:`calibration`."""
    mean, spread = ensemble.predict_with_std(dataset.voltages_v)
    return {
        **error_metrics(mean, dataset),
        "mean_std_na": float(np.mean(spread)),
        "calibration": calibration(mean, spread, dataset),
    }


def fit_spread(residual_na: np.ndarray, spread_na: np.ndarray, stderr_na: np.ndarray) -> SpreadCalibration:
    """The maximum-likelihood :class:`SpreadCalibration` of residuals, raw spreads and measurement errors.

    ``residual_na``: ``(N,)`` nA, ``I_meas - mean``; ``spread_na``: ``(N,)`` nA,
    the members' raw standard deviation ``s``; ``stderr_na``: ``(N,)`` nA, the
    measurements' standard errors ``n``. Minimises the negative log-likelihood
    of the module docstring over the variances ``scale^2 >= 0`` and
    ``floor_na^2 >= 0`` (L-BFGS-B with bounds, in units where both are of
    order 1), so an optimum at ``scale = 0`` or ``floor_na = 0`` is reached exactly.

    Raises ConfigError for arrays that are not 1-D of one shape, fewer than
    :data:`MIN_CALIBRATION_POINTS` points, non-finite values, a negative spread
    or standard error, residuals all 0, or spreads all 0 (the scale is then undefined).
    """
    arrays = {
        "residual_na": np.asarray(residual_na, dtype=np.float64),
        "spread_na": np.asarray(spread_na, dtype=np.float64),
        "stderr_na": np.asarray(stderr_na, dtype=np.float64),
    }
    shapes = {name: a.shape for name, a in arrays.items()}
    if any(a.ndim != 1 for a in arrays.values()) or len(set(shapes.values())) > 1:
        raise ConfigError(f"residual_na, spread_na and stderr_na must be 1-D of one shape (N,), got {shapes}")
    n = len(arrays["residual_na"])
    if n < MIN_CALIBRATION_POINTS:
        raise ConfigError(f"fitting the spread needs at least {MIN_CALIBRATION_POINTS} points, got {n}")
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            k = int(np.argmin(np.isfinite(a)))
            raise ConfigError(f"{name} has a non-finite value {a[k]} at point {k}")
    for name in ("spread_na", "stderr_na"):
        a = arrays[name]
        if (a < 0).any():
            k = int(np.argmin(a))
            raise ConfigError(f"{name} must be >= 0 nA, got {a[k]} nA at point {k}")
    r2, s2, n2 = arrays["residual_na"] ** 2, arrays["spread_na"] ** 2, arrays["stderr_na"] ** 2
    r2_mean, s2_mean = float(r2.mean()), float(s2.mean())
    if r2_mean == 0:
        raise ConfigError("residual_na is 0 at every point: the predictions are exact, there is no spread to fit")
    if s2_mean == 0:
        raise ConfigError("spread_na is 0 at every point: the members agree everywhere, the scale is undefined")
    # units: p[0] = scale^2 * mean(s^2) / mean(r^2), p[1] = floor^2 / mean(r^2); both near 1 or below
    s2, r2, n2 = s2 / s2_mean, r2 / r2_mean, n2 / r2_mean + _FIT_JITTER

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        var = p[0] * s2 + p[1] + n2
        dvar = (1.0 - r2 / var) / var  # d(log var + r^2 / var) / d var
        return float(np.mean(np.log(var) + r2 / var)), np.array([np.mean(dvar * s2), np.mean(dvar)])

    start = max(1.0 - float(n2.mean()), 0.05) / 2  # share the excess variance between scale and floor
    result = minimize(
        objective,
        np.array([start, start]),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None), (0.0, None)],
        options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 1000},
    )
    u, v = np.maximum(result.x, 0.0)
    return SpreadCalibration(scale=math.sqrt(u * r2_mean / s2_mean), floor_na=math.sqrt(v * r2_mean))


def fit_spread_calibration(ensemble: SurrogateEnsemble, dataset: Dataset) -> SpreadCalibration:
    """:func:`fit_spread` of ``ensemble``'s raw spread (its own calibration ignored) on ``dataset``'s points.

    ``dataset`` is the calibration data (e.g. the validation split): its
    residuals ``I_meas - mean`` and standard errors ``stderr_na`` nA. Raises
    ConfigError for fewer than :data:`MIN_CALIBRATION_POINTS` points and as
    :func:`fit_spread` does; a VoltageError for voltages outside the ensemble's ranges.
    """
    if len(dataset) < MIN_CALIBRATION_POINTS:
        raise ConfigError(
            f"the calibration dataset has {len(dataset)} points; fitting the spread needs at least {MIN_CALIBRATION_POINTS}"
        )
    mean, spread = ensemble.predict_with_std(dataset.voltages_v, raw=True)
    return fit_spread(dataset.current_na - mean, spread, dataset.stderr_na)
