"""Accuracy of a surrogate against measured data.

All errors are in nA over the ``N`` points of a dataset, with ``e = I_pred - I_meas``:

- ``rmse_na = sqrt(mean(e^2))``, ``mae_na = mean(|e|)``, ``max_abs_error_na = max(|e|)``;
- ``rmse_percent_of_range = 100 * rmse_na / (max(I_meas) - min(I_meas))``;
- ``correlation``: Pearson correlation of prediction and measurement;
- ``noise_floor_na``: RMS standard error of the measurements (see
  :func:`~inmaterio.smg.dataset.noise_floor_na`), and
  ``rmse_over_noise_floor = rmse_na / noise_floor_na`` (None for exact data):
  a value near 1 means the model is as good as the measurement allows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inmaterio.smg.dataset import Dataset, noise_floor_na
from inmaterio.surrogate import SurrogateModel

__all__ = ["evaluate_surrogate", "error_metrics"]


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
