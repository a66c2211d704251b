"""Accuracy of a surrogate against measured data.

All errors are in nA over the ``N`` points of a dataset, with ``e = I_pred - I_meas``:

- ``rmse_na = sqrt(mean(e^2))``, ``mae_na = mean(|e|)``, ``max_abs_error_na = max(|e|)``;
- ``rmse_percent_of_range = 100 * rmse_na / (max(I_meas) - min(I_meas))``;
- ``correlation``: Pearson correlation of prediction and measurement;
- ``noise_floor_na``: RMS standard error of the measurements (see
  :func:`~inmaterio.smg.dataset.noise_floor_na`), and
  ``rmse_over_noise_floor = rmse_na / noise_floor_na`` (None for exact data):
  a value near 1 means the model is as good as the measurement allows.

For an ensemble (:class:`~inmaterio.surrogate.ensemble.SurrogateEnsemble`),
:func:`calibration` asks whether its spread is honest: with the members'
standard deviation ``s_i`` and the measurement's standard error ``n_i``, a
fresh measurement should fall within ``k sigma_i = k sqrt(s_i^2 + n_i^2)`` of
the mean prediction as often as a Gaussian says (68.27% for ``k = 1``,
95.45% for ``k = 2``), within the binomial sampling error
``sqrt(p (1 - p) / N)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from inmaterio.smg.dataset import Dataset, noise_floor_na
from inmaterio.surrogate import SurrogateModel
from inmaterio.surrogate.ensemble import SurrogateEnsemble

__all__ = ["evaluate_surrogate", "error_metrics", "calibration", "evaluate_ensemble"]

#: Gaussian probability of falling within k standard deviations, k = 1, 2.
GAUSSIAN_COVERAGE = {1: math.erf(1 / math.sqrt(2)), 2: math.erf(2 / math.sqrt(2))}


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
    """:func:`error_metrics` of the ensemble's mean, the mean spread ``mean_std_na``, and :func:`calibration`."""
    mean, spread = ensemble.predict_with_std(dataset.voltages_v)
    return {
        **error_metrics(mean, dataset),
        "mean_std_na": float(np.mean(spread)),
        "calibration": calibration(mean, spread, dataset),
    }
