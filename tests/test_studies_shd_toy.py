"""The SHD toy study as a task: a tiny run end to end, its qualitative result, its report and its config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from inmaterio.errors import ConfigError
from inmaterio.studies.shd_toy import ShdToyConfig
from inmaterio.tasks.registry import TASKS, load_run_config, parse_run_config, resolve
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tiny(**task) -> dict:
    """Seconds: three optima, 20 replicates, 1500 steps."""
    return {
        "task": {"type": "shd_toy", "targets": [0.0, 0.3, 0.6], "steps": 1500, "average_last": 700, "phase_steps": 800,
                 "replicates": 20, **task},
    }  # fmt: skip


def test_the_example_validates_and_the_task_is_registered():
    config = load_run_config(EXAMPLES / "shd_toy.yaml")
    assert isinstance(config, ShdToyConfig) and TASKS["shd_toy"].example == "shd_toy.yaml"
    assert config.task.device.kind == "soft_bounds" and config.task.symmetric_device.kind == "constant_step"
    assert callable(resolve(TASKS["shd_toy"].runner)) and callable(resolve(TASKS["shd_toy"].report))


@pytest.mark.parametrize(
    ("task", "field"),
    [({"targets": [0.5, 1.5]}, "targets"), ({"average_last": 5000}, "average_last"), ({"noise_std": -1}, "noise_std"),
     ({"shd": {"lr_a": 0, "lr_c": 0.1}}, "lr_a")],
)  # fmt: skip
def test_bad_values_are_errors_naming_the_field(task, field):
    with pytest.raises(ConfigError, match=field):
        parse_run_config(tiny(**task))


def test_a_tiny_run_shows_sgd_biased_by_the_distance_and_shd_not(tmp_path):
    config = parse_run_config(tiny())
    m = run_task(config, tmp_path / "run", progress=False).metrics
    rows = m["noisy_1d"]
    assert m["symmetry_point"] == pytest.approx(0.0, abs=1e-12)
    sgd = [abs(r["sgd_error"]) for r in rows]
    shd = [abs(r["shd_error"]) for r in rows]
    assert sgd[0] < 0.02 and sgd[1] > 0.05 and sgd[2] > sgd[1] + 0.04  # grows with the distance
    assert all(r["sgd_error"] == pytest.approx(r["sgd_theory_error"], abs=0.015) for r in rows)
    assert max(shd) < 0.4 * sgd[2] and shd[2] < 0.04
    pp = m["phase_plane"]
    assert pp["asymmetric"]["energy_ratio"] < 0.1 < 0.6 < pp["symmetric"]["energy_ratio"]
    reg = m["regression_2d"]
    assert reg["shd"]["error_mean"] < 0.5 * reg["sgd"]["error_mean"]
    for name in ("noisy_1d.png", "phase_plane.png", "regression_2d.png"):
        assert (tmp_path / "run" / name).stat().st_size > 1000
    report = build_report([tmp_path / "run"])
    assert "| C0 - w_sym | SGD error | SGD theory | SHD error |" in report and "H_end / H_0" in report
    # the same config reads the finished run back, without running again
    assert run_task(config, tmp_path / "run", progress=False).metrics["noisy_1d"] == rows
