"""The rings study as a task: examples validate, a tiny study runs and reports, resumes per group and per device stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import inmaterio.studies.rings as study
from inmaterio.config import validate_config
from inmaterio.errors import ConfigError, RunFolderError, RunInterrupted
from inmaterio.studies.ring_trials import ring_trials
from inmaterio.studies.rings import RingsStudyConfig
from inmaterio.tasks.registry import load_run_config
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

TINY = {
    "task": {"type": "rings_study", "trials": 4, "group": 2, "epochs": 8, "data": {"n_train": 20, "n_val": 10, "n_test": 15},
             "candidates": 2, "ranking_draws": 2, "validate_repeats": 2, "readout": "device"},
    "device": {"spec": {"type": "analytic", "noise_na": 4.0}, "plateau_samples": 1},
    "executor": {"kind": "serial"},
}  # fmt: skip


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items()
                if not (k.endswith("seconds") or k in {"wall_s", "package_version", "table"})}  # fmt: skip
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


@pytest.mark.parametrize("path", [EXAMPLES / "rings_study.yaml", *sorted((EXAMPLES / "rings_study").glob("*.yaml"))],
                         ids=lambda p: p.name)  # fmt: skip
def test_examples_validate_as_rings_studies(path):
    config = load_run_config(path)
    assert isinstance(config, RingsStudyConfig)
    assert validate_config(RingsStudyConfig, yaml.safe_load(path.read_text())) == config


def test_the_default_example_is_the_published_protocol():
    config = load_run_config(EXAMPLES / "rings_study.yaml")
    task = config.task
    assert (task.trials, task.epochs, task.learning_rate, task.candidates, task.validate_repeats) == (1000, 400, 0.0065, 4, 3)
    assert task.input_electrodes == {"single": (2, 5), "2-2-1": (1, 6)}
    assert (task.data.n_train, task.data.n_val, task.data.n_test) == (200, 200, 500)
    assert config.device.plateau_samples == 4 and config.ranking_noise() == 0.5


def test_input_electrodes_of_one_architecture_keep_the_others_default():
    config = validate_config(RingsStudyConfig, {"task": {"type": "rings_study", "input_electrodes": {"single": [3, 4]}}})
    assert config.task.input_electrodes == {"single": (3, 4), "2-2-1": (1, 6)}


def test_a_tiny_study_trains_chooses_measures_and_reports(tmp_path):
    config = validate_config(RingsStudyConfig, TINY)
    outcome = run_task(config, tmp_path / "run", progress=False)
    summary = outcome.metrics["summary"]
    for arch in ("single", "2-2-1"):
        s = summary[arch]
        groups = config.groups(arch)
        direct = [ring_trials(g) for g in groups]  # the study's numbers are those of its groups, in trial order
        assert s["train_accuracy"] == [a for r in direct for a in r["train_accuracy"]]
        assert s["noisy_train_accuracy"] == [a for r in direct for a in r["noisy_train_accuracy"]]
        scores = [c["score"] for c in s["candidates"]]
        assert scores == sorted(s["noisy_train_accuracy"], reverse=True)[:2]  # the two best-ranked trials of all groups
        v = s["validation"]
        assert [c["rank"] for c in v["candidates"]] == [0, 1]
        best = max(c["device_validation_accuracy"] for c in v["candidates"])
        assert v["chosen"]["device_validation_accuracy"] == best
        assert v["chosen"] == next(c for c in v["candidates"] if c["device_validation_accuracy"] == best)  # the first of equals
        correct = np.array(v["device_test_correct"])
        assert correct.shape == (2, 30)
        assert v["device_test_accuracy_per_repeat"] == pytest.approx(correct.mean(axis=1).tolist())
        assert v["device_test_accuracy_mean"] == pytest.approx(correct.mean())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["step"] for h in history if h["curve"] == "2-2-1"] == [0, 1, 2, 3]
    assert (tmp_path / "run" / "histograms.png").is_file()
    text = " ".join(" ".join(row) for row in outcome.rows)
    assert "84.95%" in text and "93.98%" in text  # the paper's numbers beside ours

    report = build_report([tmp_path / "run"])
    assert "### Rings: one DNPU vs the 2-2-1 network" in report
    assert "| single | 4 |" in report and "| 2-2-1 | 4 |" in report
    assert "Margin of the chosen 2-2-1 over the chosen single DNPU" in report and "paired points" in report
    assert "the best 2 are calibrated on the device" in report


def test_an_interrupted_study_resumes_per_group_and_per_device_stage(tmp_path, monkeypatch):
    config = validate_config(RingsStudyConfig, TINY)
    reference = run_task(config, tmp_path / "reference", progress=False).metrics

    groups: list[str] = []
    monkeypatch.setattr(study, "ring_trials", lambda g: groups.append(g.key) or ring_trials(g))
    measured: list[tuple] = []
    real_measure = study._measure

    def measure_then_stop(*args):
        measured.append(args[-1])
        if len(measured) == 4:  # single: two candidates and the test done; the 2-2-1's first candidate interrupted
            raise KeyboardInterrupt
        return real_measure(*args)

    monkeypatch.setattr(study, "_measure", measure_then_stop)
    with pytest.raises(RunInterrupted):
        run_task(config, tmp_path / "run", progress=False)
    assert measured[-1] == ("rings_study", "2-2-1", "validation", 0)
    assert len(groups) == 4  # both architectures trained before the 2-2-1's device stage

    groups.clear()
    measured.clear()
    monkeypatch.setattr(study, "_measure", lambda *args: measured.append(args[-1]) or real_measure(*args))
    resumed = run_task(config, tmp_path / "run", progress=False).metrics
    assert groups == []  # every group was saved
    assert measured == [("rings_study", "2-2-1", "validation", 0), ("rings_study", "2-2-1", "validation", 1),
                        ("rings_study", "2-2-1", "test")]  # fmt: skip
    assert _without_timings(resumed) == _without_timings(reference)


def test_reuse_training_measures_the_stored_candidates_again(tmp_path):
    source = tmp_path / "source"
    run_task(validate_config(RingsStudyConfig, {**TINY, "task": {**TINY["task"], "validate_repeats": 0}}), source, progress=False)
    assert "validation" not in json.loads((source / "metrics.json").read_text())["summary"]["single"]
    again = {**TINY, "task": {**TINY["task"], "architectures": ["single"], "candidates": 1, "reuse_training": str(source)}}
    outcome = run_task(validate_config(RingsStudyConfig, again), tmp_path / "again", progress=False)
    stored = json.loads((source / "metrics.json").read_text())["summary"]["single"]
    single = outcome.metrics["summary"]["single"]
    assert single["candidates"] == stored["candidates"] and single["train_accuracy"] == stored["train_accuracy"]
    assert single["validation"]["chosen"]["trial"] == stored["candidates"][0]["trial"]

    other = {**again, "task": {**again["task"], "epochs": 9}}
    with pytest.raises(ConfigError, match=r"reuse_training: .* other settings \(task.epochs: 8 in the folder, 9 now\)"):
        run_task(validate_config(RingsStudyConfig, other), tmp_path / "other", progress=False)
    assert not (tmp_path / "other").exists()
    more = {**again, "task": {**again["task"], "candidates": 3}}
    with pytest.raises(ConfigError, match="task.candidates = 3: .* kept 2 candidates of single"):
        run_task(validate_config(RingsStudyConfig, more), tmp_path / "more", progress=False)
    with pytest.raises(RunFolderError, match="is not a run folder"):
        run_task(validate_config(RingsStudyConfig, {**again, "task": {**again["task"], "reuse_training": str(tmp_path)}}),
                 tmp_path / "none", progress=False)  # fmt: skip


# ------------------------------------------------------------------------ the electrode sweep of the rings study


def test_electrode_sweep_example_validates():
    from inmaterio.studies.ring_electrodes import RingElectrodesConfig

    config = load_run_config(EXAMPLES / "ring_electrodes.yaml")
    assert isinstance(config, RingElectrodesConfig) and config.task.pairs is None and config.task.trials == 32


def test_electrode_sweep_judges_each_pair_by_its_trials(tmp_path):
    from inmaterio.studies.ring_electrodes import RingElectrodesConfig
    from inmaterio.studies.ring_trials import RingGroup

    config = validate_config(RingElectrodesConfig, {
        "task": {"type": "ring_electrodes", "architectures": ["single"], "pairs": [[3, 4], ["e1", "e6"]], "trials": 3,
                 "epochs": 5, "data": {"n_train": 15, "n_test": 5}, "ranking_draws": 2, "sensitivity_points": 40},
        "executor": {"kind": "serial"},
    })  # fmt: skip
    outcome = run_task(config, tmp_path / "run", progress=False)
    rows = {tuple(r["pair"]): r for r in outcome.metrics["rows"]}
    assert sorted(rows) == [(1, 6), (3, 4)]  # names resolved to indices
    direct = ring_trials(RingGroup(architecture="single", first_seed=0, count=3, input_electrodes=(1, 6), data=config.task.data,
                                   training={"epochs": 5}, noisy_draws=2, noisy_std_factor=0.5))  # fmt: skip
    assert rows[(1, 6)]["best_train"] == max(direct["train_accuracy"])
    assert rows[(1, 6)]["best_noisy_train"] == max(direct["noisy_train_accuracy"])
    assert rows[(1, 6)]["median_train"] == float(np.median(direct["train_accuracy"]))
    sensitivity = outcome.metrics["sensitivity_na"]
    assert len(sensitivity) == 7 and sensitivity[0] == max(sensitivity)  # e0 drives the output hardest
    report = build_report([tmp_path / "run"])
    assert "### Rings: which electrodes take the data" in report and "| single | e1, e6 |" in report
