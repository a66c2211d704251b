"""The capacity study as a task: examples validate, a tiny study runs and reports, resumes per trial, bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import inmaterio.studies.capacity as study
from inmaterio.config import validate_config
from inmaterio.errors import ConfigError, RunInterrupted
from inmaterio.studies.capacity import CapacityStudyConfig
from inmaterio.studies.capacity_trial import CapacityTrial, capacity_trial
from inmaterio.tasks.registry import load_run_config
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task
from killresume import kill_then_resume, python_argv, run_to_end, without_timings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY = {
    "task": {"type": "capacity_study", "models": ["logistic2", "dnpu_search"], "n_points": [4, 5], "epochs": 40,
             "restarts": 2, "screen_samples": 2000, "refine_steps": 10},
    "executor": {"kind": "serial"},
}  # fmt: skip


@pytest.mark.parametrize("path", [EXAMPLES / "capacity_study.yaml", *sorted((EXAMPLES / "capacity_study").glob("*.yaml"))],
                         ids=lambda p: p.name)  # fmt: skip
def test_examples_validate_as_capacity_studies(path):
    config = load_run_config(path)
    assert isinstance(config, CapacityStudyConfig)
    assert validate_config(CapacityStudyConfig, yaml.safe_load(path.read_text())) == config
    assert all(4 <= n <= 10 for n in config.task.n_points)


def test_the_default_example_is_the_surrogate_table():
    config = load_run_config(EXAMPLES / "capacity_study.yaml")
    assert config.task.models == ["dnpu", "dnpu_search", "logistic2", "logistic3"]
    assert config.task.n_points == list(range(4, 11)) and config.task.restarts == 30 and config.task.epochs == 1500


def test_a_tiny_study_runs_the_trials_of_its_models_and_reports_them(tmp_path):
    config = validate_config(CapacityStudyConfig, TINY)
    outcome = run_task(config, tmp_path / "run", progress=False)
    trials = outcome.metrics["trials"]
    assert sorted(trials) == ["dnpu_search/N=4", "dnpu_search/N=5", "logistic2/N=4", "logistic2/N=5"]
    # the study's numbers are those of the trial function called directly with the study's settings
    direct = capacity_trial(CapacityTrial(model="logistic2", n_points=5, seed=0, settings=config.task.settings()))
    assert without_timings(trials["logistic2/N=5"]) == without_timings(direct)
    for r in trials.values():
        assert r["fraction"] == r["found"] / 2 ** r["n_points"]
    # the printed table: one row per model plus the search's margin row; the fractions and the paper's bounds
    rows = {row[0]: row[1:] for row in outcome.rows}
    assert rows["2 logistic units"] == [f"{trials['logistic2/N=4']['fraction']:.3f}", f"{trials['logistic2/N=5']['fraction']:.3f}",
                                        rows["2 logistic units"][2], ">= 5"]  # fmt: skip
    assert rows["DNPU, max-margin search (ours), surrogate"][:2] == ["1.000", "1.000"]
    assert rows["DNPU, max-margin search (ours), surrogate"][2] == "5"  # every labelling of 5 points found: VC >= 5
    assert any(label.startswith("DNPU, max-margin search (ours), surrogate, margin >= test RMSE") for label in rows)
    assert (tmp_path / "run" / "capacity.png").is_file()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert {h["curve"] for h in history} == set(trials)
    assert sum(h["found"] for h in history if h["curve"] == "logistic2/N=4") == trials["logistic2/N=4"]["found"]

    report = build_report([tmp_path / "run"])
    assert "### Capacity: fraction of the 2^N labellings found" in report
    assert f"| 2 logistic units | {rows['2 logistic units'][0]} | {rows['2 logistic units'][1]} |" in report
    assert ">= 6 (surrogate)" in report and "Median margin of the searched classifiers" in report
    assert f"inmaterio run {tmp_path / 'run' / 'config.yaml'} --out {tmp_path / 'run'}" in report


def test_executor_and_device_threads_are_speed_only(tmp_path):
    config = validate_config(CapacityStudyConfig, TINY)
    run_task(config, tmp_path, progress=False)
    faster = validate_config(CapacityStudyConfig, {**TINY, "executor": {"kind": "local", "workers": 2}, "device": {"threads": 2}})
    assert faster.identity() == config.identity()
    assert run_task(faster, tmp_path, progress=False).metrics["executor"]["kind"] == "serial"  # read back, not rerun
    other = validate_config(CapacityStudyConfig, {**TINY, "task": {**TINY["task"], "epochs": 41}})
    with pytest.raises(ConfigError, match=r"config.task.epochs: 40 in the folder, 41 now"):
        run_task(other, tmp_path, progress=False)


def test_an_interrupted_study_reruns_only_the_unfinished_trials(tmp_path, monkeypatch):
    config = validate_config(CapacityStudyConfig, TINY)
    reference = run_task(config, tmp_path / "reference", progress=False).metrics

    calls: list[str] = []

    def interrupted_on_third(trial):
        calls.append(trial.key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return capacity_trial(trial)

    monkeypatch.setattr(study, "capacity_trial", interrupted_on_third)
    with pytest.raises(RunInterrupted, match="run the same command again to resume"):
        run_task(config, tmp_path / "run", progress=False)
    assert calls == ["logistic2/N=5", "logistic2/N=4", "dnpu_search/N=5"]

    calls.clear()
    monkeypatch.setattr(study, "capacity_trial", lambda trial: calls.append(trial.key) or capacity_trial(trial))
    resumed = run_task(config, tmp_path / "run", progress=False).metrics
    assert calls == ["dnpu_search/N=5", "dnpu_search/N=4"]
    assert without_timings(resumed) == without_timings(reference)


CAPACITY_ON_A_NOISY_DEVICE = """\
task:
  type: capacity_study
  models: [dnpu_search_device, dnpu_annealed]
  n_points: [4, 5]
  epochs: 60
  attempts: 6
  restarts: 3
  screen_samples: 3000
  refine_steps: 20
device: {spec: {type: analytic, noise_na: 5.0}, plateau_samples: 2}
executor: {kind: serial}
seed: 3
"""


@pytest.mark.slow  # three processes (~30 s); test_an_interrupted_study_reruns_only_the_unfinished_trials runs by default
def test_capacity_study_on_a_noisy_device_killed_at_a_random_point_resumes_bit_for_bit(tmp_path):
    config = tmp_path / "capacity.yaml"
    config.write_text(CAPACITY_ON_A_NOISY_DEVICE)

    def argv(out):
        return python_argv("-m", "inmaterio", "run", str(config), "--out", str(out), "--no-progress")

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_to_end(argv(clean))
    # the kill lands within 0.5 s of the first checkpoint; the trials after it take twice that (about 1 s
    # on a fast core), so the job is killed mid-run rather than after it finished
    report = kill_then_resume(argv(killed), killed / "checkpoint.pt", seed=5, max_delay_s=0.5)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (clean, killed)]
    assert without_timings(metrics[0]) == without_timings(metrics[1]), report
    history = [json.loads((d / "history.json").read_text()) for d in (clean, killed)]
    assert history[0] == history[1], report
    assert report.killed_while_running, report
    record = json.loads((killed / "run.json").read_text())
    assert record["state"] == "finished" and record["sessions"] == 2, record
    trials = metrics[0]["trials"]
    assert all(a["measured_on_device"] > 0 for a in trials["dnpu_annealed/N=5"]["attempts"])  # the device was used
