"""The table of finished SMG runs for ``inmaterio report``: accuracy in noise units, I-V slices, calibration.

One row per run, so runs of one device at the same budget (adaptive or not) read side by side:

- points measured: the initial plan, plus the adaptive rounds' points;
- the independent test set: RMSE, the model's own error with the measurement noise removed
  (``model_error_na``, see :mod:`inmaterio.smg.evaluate`), the noise floor, and their ratio;
- the single-electrode I-V sweeps: RMSE of the worst electrode (which one), over the test noise floor;
- with an ensemble: the fraction of fresh test points and I-V points within 1 and 2 calibrated
  sigmas (Gaussian: 68.3% and 95.4%).
"""

from __future__ import annotations

from typing import Any

__all__ = ["smg_report", "smg_row", "COLUMNS"]

COLUMNS = [
    "run",
    "device points",
    "test RMSE / nA",
    "model error / nA",
    "noise / nA",
    "model error / noise",
    "I-V worst / nA",
    "I-V worst / noise",
    "within 1 / 2 sigma: test",
    "within 1 / 2 sigma: I-V",
]


def _coverage(report: dict[str, Any] | None) -> str:
    if not report:
        return "n/a"
    cal = report["calibration"]
    return f"{100 * cal['within_1_sigma']:.1f} / {100 * cal['within_2_sigma']:.1f} %"


def smg_row(name: str, metrics: dict[str, Any]) -> list[str]:
    """One row of :data:`COLUMNS` from an SMG run's ``metrics.json``."""
    test = metrics["test_metrics"]
    initial = metrics["train_data"]["n_points"]
    adaptive = metrics.get("adaptive")
    points = f"{initial:,} + {adaptive['n_points'] - initial:,} adaptive" if adaptive else f"{initial:,}"
    noise = test["noise_floor_na"]
    error = test.get("model_error_na")
    per_electrode = metrics.get("iv_rmse_per_electrode_na")
    if per_electrode:
        worst = max(range(len(per_electrode)), key=per_electrode.__getitem__)
        iv = f"{per_electrode[worst]:.2f} (e{worst})"
        iv_ratio = f"{per_electrode[worst] / noise:.2f}" if noise else "n/a"
    else:
        iv, iv_ratio = "n/a", "n/a"
    calibrated = (metrics.get("ensemble") or {}).get("calibrated") or {}
    return [
        name,
        points,
        f"{test['rmse_na']:.2f}",
        "n/a" if error is None else f"{error:.2f}",
        f"{noise:.2f}",
        "n/a" if error is None or not noise else f"{error / noise:.2f}",
        iv,
        iv_ratio,
        _coverage(calibrated.get("test")),
        _coverage(calibrated.get("iv_sweeps")),
    ]


def smg_report(runs: list[Any]) -> str:
    """Markdown: the table of :data:`COLUMNS` for finished SMG runs (:class:`~inmaterio.tasks.registry.FinishedRun`)."""
    from inmaterio.tasks.report import markdown_table

    rows = [smg_row(f"`{run.path}`", run.metrics) for run in runs]
    note = ("Noise: the RMS standard error of the test points' measurements; model error: the test RMSE with that "
            "noise removed in quadrature. I-V worst: RMSE of the worst single-electrode sweep (others at 0 V). "
            "Coverage with the ensemble's calibrated spread (Gaussian: 68.3 / 95.4 %).")  # fmt: skip
    return markdown_table(COLUMNS, rows) + "\n\n" + note
