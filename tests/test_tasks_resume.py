"""A task killed at a random point resumes to exactly the uninterrupted result (``inmaterio run``)."""

from __future__ import annotations

import json

import pytest

from killresume import kill_then_resume, python_argv, run_to_end, without_timings

# capacity on a noisy device: each N's measurements are keyed by N, so the resumed N are measured
# exactly as in the uninterrupted run although the earlier N are not measured again
CAPACITY = """\
task: {type: capacity, n_points: [4, 5, 6, 7, 8], attempts: 1, gd: {epochs: 100}}
validation: {device: {type: analytic, noise_na: 3.0}, plateau_samples: 2, ramp_samples: 1}
seed: 0
"""


@pytest.mark.parametrize("seed", [0])
def test_capacity_on_a_noisy_device_resumes_bit_for_bit(tmp_path, seed):
    config = tmp_path / "capacity.yaml"
    config.write_text(CAPACITY)

    def argv(out):
        return python_argv("-m", "inmaterio", "run", str(config), "--out", str(out), "--no-progress")

    run_to_end(argv(tmp_path / "clean"))
    report = kill_then_resume(argv(tmp_path / "killed"), tmp_path / "killed" / "checkpoint.pt", seed=seed, max_delay_s=1.0)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    metrics = [without_timings(json.loads((d / "metrics.json").read_text())) for d in (clean, killed)]
    assert metrics[0] == metrics[1], report
    assert metrics[0]["per_n"]["4"]["found_on_device"] < metrics[0]["per_n"]["4"]["found_on_surrogate"]  # the noise matters
    assert (clean / "controls.json").read_bytes() == (killed / "controls.json").read_bytes(), report
    history = [json.loads((d / "history.json").read_text()) for d in (clean, killed)]
    assert history[0] == history[1], report
    assert report.killed_while_running, report  # N = 5..8 take seconds after N = 4's checkpoint
    record = json.loads((killed / "run.json").read_text())
    assert record["state"] == "finished" and record["sessions"] == 2, record


RINGS = """\
task: {type: rings, architecture: 2-2-1, n_train: 40, n_test: 40, attempts: 2, gd: {epochs: 120}}
validation: {device: {type: analytic, noise_na: 3.0}, plateau_samples: 2, ramp_samples: 1}
seed: 0
"""


@pytest.mark.slow  # three processes (~35 s); its nested trainings are train_gd runs, whose kill-and-resume test runs by default
def test_rings_resumes_each_training_after_its_last_epoch(tmp_path):
    """Killed inside the trainings (nested run folders attempt_k/), the task ends with the same network and numbers."""
    config = tmp_path / "rings.yaml"
    config.write_text(RINGS)

    def argv(out):
        return python_argv("-m", "inmaterio", "run", str(config), "--out", str(out), "--no-progress")

    run_to_end(argv(tmp_path / "clean"))
    killed = tmp_path / "killed"
    report = kill_then_resume(argv(killed), killed / "attempt_0" / "checkpoint.pt", seed=1, max_delay_s=2.0)
    assert report.killed_while_running, report
    clean_metrics, killed_metrics = (
        without_timings(json.loads((d / "metrics.json").read_text())) for d in (tmp_path / "clean", killed)
    )
    assert clean_metrics == killed_metrics, report
    assert (tmp_path / "clean" / "model.safetensors").read_bytes() == (killed / "model.safetensors").read_bytes(), report
    assert json.loads((killed / "run.json").read_text())["sessions"] == 2
