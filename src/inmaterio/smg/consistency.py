"""Consistency check: does the device still answer as it did when the data were taken?

The first ``n_points`` of a stored dataset are the *reference signal*. They
are measured again ``n_repeats`` times; for repeat ``r`` with differences
``d_i = I_new,i - I_ref,i`` (nA) and combined standard errors
``s_i = sqrt(stderr_ref,i^2 + stderr_new,i^2)``:

- ``mean_diff_na = mean(d)``, ``rms_diff_na = sqrt(mean(d^2))``;
- ``rms_diff_over_stderr = rms_diff_na / sqrt(mean(s^2))`` (about 1 for a
  device that only shows its measurement noise; None when both are exact);
- ``stderr_of_mean_na = sqrt(sum(s^2)) / n``, the standard error of ``mean_diff_na``;
- ``within_3_stderr``: ``|mean_diff_na| <= 3 * stderr_of_mean_na``, i.e. no
  drift beyond what the noise explains (for exact devices: no difference at all).

Repeat ``r`` is measured inside ``device.random_streams("consistency",
<fingerprint of the reference voltages>, r)``: its noise is independent of the
acquisition's and of the other repeats', and the same in every run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inmaterio.devices.base import Device
from inmaterio.runs import fingerprint_tensors
from inmaterio.smg.dataset import Dataset

__all__ = ["consistency_check"]


def consistency_check(device: Device, dataset: Dataset, n_repeats: int, n_points: int) -> dict[str, Any]:
    """Re-measure the reference signal (first ``n_points`` of ``dataset``) ``n_repeats`` times.

    Returns ``{"n_points", "n_repeats", "repeats": [per-repeat dict, see module docstring],
    "max_abs_mean_diff_na", "consistent"}`` where ``consistent`` is True when every repeat is
    within 3 standard errors.
    """
    if n_repeats < 0 or n_points <= 0:
        raise ValueError(f"n_repeats must be >= 0 and n_points > 0, got {n_repeats} and {n_points}")
    n = min(n_points, len(dataset))
    if n == 0:
        raise ValueError("the dataset is empty: there is no reference signal to re-measure")
    voltages = dataset.voltages_v[:n]
    reference, ref_err = dataset.current_na[:n], dataset.stderr_na[:n]
    repeats = []
    reference_id = fingerprint_tensors(np.ascontiguousarray(voltages, dtype=np.float64))
    for repeat in range(n_repeats):
        with device.random_streams("consistency", reference_id, repeat):
            measurement = device.measure_with_error(voltages)
        diff = np.asarray(measurement.current_na, dtype=np.float64) - reference
        combined_var = ref_err**2 + np.asarray(measurement.stderr_na, dtype=np.float64) ** 2
        mean_diff = float(np.mean(diff))
        rms_diff = float(np.sqrt(np.mean(diff**2)))
        rms_err = float(np.sqrt(np.mean(combined_var)))
        stderr_of_mean = float(np.sqrt(np.sum(combined_var)) / n)
        repeats.append(
            {
                "repeat": repeat + 1,
                "mean_diff_na": mean_diff,
                "rms_diff_na": rms_diff,
                "rms_diff_over_stderr": rms_diff / rms_err if rms_err > 0 else None,
                "stderr_of_mean_na": stderr_of_mean,
                "within_3_stderr": bool(abs(mean_diff) <= 3 * stderr_of_mean),
            }
        )
    return {
        "n_points": n,
        "n_repeats": n_repeats,
        "repeats": repeats,
        "max_abs_mean_diff_na": max((abs(r["mean_diff_na"]) for r in repeats), default=0.0),
        "consistent": all(r["within_3_stderr"] for r in repeats),
    }
