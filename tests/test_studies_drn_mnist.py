"""The DRN MNIST study as a task: the bundled config, a tiny run on synthetic IDX files, resume, report, bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inmaterio.errors import ConfigError
from inmaterio.studies.drn_mnist import DRNMnistConfig
from inmaterio.tasks.registry import load_run_config, parse_run_config
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task
from test_studies_mnist import write_synthetic_mnist

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_bundled_config_is_the_published_recipe():
    config = load_run_config(EXAMPLES / "drn_mnist.yaml")
    assert isinstance(config, DRNMnistConfig)
    t = config.task
    assert t.hidden == [100] and t.input_gain == 100.0 and t.algorithms == ["ep", "implicit"] and t.seeds == 3
    assert t.training.variant == "symmetric" and t.training.beta == 1.0 and t.training.batch_size == 4
    assert t.training.epochs == 10 and config.data.n_validation == 0 and config.data.dir is None


def _tiny(data: Path, **task) -> dict:
    return {
        "task": {"type": "drn_mnist", "hidden": [100], "seeds": 2, "train_size": 40, "training": {"epochs": 2, "batch_size": 10},
                 **task},
        "data": {"dir": str(data), "n_validation": 20},
    }  # fmt: skip


def test_a_tiny_run_trains_every_algorithm_and_seed_and_reports(tmp_path):
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=80, n_test=30)
    outcome = run_task(parse_run_config(_tiny(data)), tmp_path / "run", progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m == outcome.metrics and m["images"] == {"train": 40, "validation": 20, "test": 30}
    assert [(r["algorithm"], r["seed"]) for r in m["runs"]] == [("ep", 0), ("ep", 1), ("implicit", 0), ("implicit", 1)]
    for r in m["runs"]:
        assert len(r["history"]) == 2 and 0 <= r["test_error"] <= 1 and r["val_error"] is not None
    ep = m["summary"][0]
    assert ep["published_percent"] == 3.46
    assert ep["test_error_percent_mean"] == pytest.approx(50 * (m["runs"][0]["test_error"] + m["runs"][1]["test_error"]))
    assert (tmp_path / "run" / "test_error.png").stat().st_size > 0
    assert (tmp_path / "run" / "ep" / "seed_1" / "checkpoint.pt").exists()
    report = build_report([tmp_path / "run"])
    assert "3.46%" in report and "exact gradients" in report


def test_an_interrupted_study_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    import inmaterio.studies.drn_mnist as study
    from inmaterio.errors import RunInterrupted

    data = write_synthetic_mnist(tmp_path / "mnist", n_train=80, n_test=30)
    config = parse_run_config(_tiny(data, seeds=1))
    whole = run_task(config, tmp_path / "whole", progress=False).metrics
    real = study._train_one
    calls = {"n": 0}

    def stop_at_the_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(study, "_train_one", stop_at_the_second)
    with pytest.raises(RunInterrupted):
        run_task(config, tmp_path / "parts", progress=False)
    monkeypatch.setattr(study, "_train_one", real)
    resumed = run_task(config, tmp_path / "parts", progress=False).metrics
    strip = lambda m: [{k: v for k, v in r.items() if k not in ("history", "seconds_per_epoch")} for r in m["runs"]]  # noqa: E731
    assert strip(resumed) == strip(whole)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"training": {"algorithm": "ep"}}, "training.algorithm is set per run"),
        ({"algorithms": ["ep", "ep"]}, "algorithms must list"),
        ({"hidden": []}, "hidden must list"),
        ({"input_gain": 0}, "input_gain"),
        ({"training": {"lr_weights": [0.1, 0.1, 0.1]}}, "lr_weights lists 3 rates"),
    ],
)
def test_bad_configs_name_the_field(tmp_path, change, match):
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=80, n_test=30)
    with pytest.raises(ConfigError, match=match):
        parse_run_config(_tiny(data, **change))


def test_the_1024_hidden_config_is_the_published_recipe():
    t = load_run_config(EXAMPLES / "drn_mnist" / "h1024.yaml").task
    assert t.hidden == [1024] and t.input_gain == 480.0 and t.algorithms == ["ep"] and t.training.epochs == 30
