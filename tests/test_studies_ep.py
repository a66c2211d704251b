"""The EP learning studies as tasks: configs, tiny runs, resume after an interrupt, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import inmaterio.studies.ep_learning as ep_learning
from inmaterio.circuits import evaluate, fit
from inmaterio.circuits.examples import diode_network
from inmaterio.config import validate_config
from inmaterio.errors import ConfigError, RunInterrupted
from inmaterio.studies.ep_learning import DATASETS, EPLearningConfig
from inmaterio.studies.ep_mnist import EPMnistConfig
from inmaterio.tasks.registry import load_run_config, parse_run_config
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task
from test_studies_mnist import write_synthetic_mnist

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GATES_TINY = {
    "task": {"type": "ep_learning", "dataset": "gates", "gates": ["AND", "XOR"], "seeds": 2, "training": {"epochs": 25}}
}


@pytest.mark.parametrize(
    "path", [EXAMPLES / "ep_learning.yaml", *sorted((EXAMPLES / "ep_learning").glob("*.yaml"))], ids=lambda p: p.name
)
def test_ep_learning_examples_validate(path):
    config = load_run_config(path)
    assert isinstance(config, EPLearningConfig)
    recipe = DATASETS[config.task.dataset][3]
    for key in ("epochs", "batch_size", "lr"):  # the examples are the measured recipes
        assert getattr(config.task.training, key) == recipe[key], key
    assert validate_config(EPLearningConfig, yaml.safe_load(path.read_text())) == config


def test_ep_mnist_example_validates():
    config = load_run_config(EXAMPLES / "ep_mnist.yaml")
    assert isinstance(config, EPMnistConfig)
    assert config.task.hidden == 100 and config.task.training.loss == "cross_entropy" and config.data.dir is None


def test_partial_training_keeps_the_dataset_recipe():
    task = parse_run_config({"task": {"type": "ep_learning", "dataset": "wine", "training": {"epochs": 3}}}).task
    assert (task.training.epochs, task.training.lr, task.training.batch_size, task.training.readout) == (
        3,
        0.01,
        8,
        "differential",
    )
    assert task.n_hidden() == 10


def test_a_seed_of_the_study_is_plain_fit(tmp_path):
    """The study's numbers for a seed are those of fit + evaluate on the same circuit, data and settings."""
    config = parse_run_config(GATES_TINY)
    outcome = run_task(config, tmp_path / "run", progress=False)
    seed_row = next(s for s in outcome.metrics["seeds"] if s["problem"] == "AND" and s["seed"] == 1)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1])
    model = diode_network(2, 6, 2, seed=1)
    training = config.task.training.model_copy(update={"seed": 1})
    fit(model, x, y, training, validation=(x, y), progress=False)
    assert evaluate(model, x, y, training)["accuracy"] == seed_row["train_accuracy"] == seed_row["test_accuracy"]
    summary = outcome.metrics["summary"]["AND"]
    assert summary["seeds_at_100_test"] == sum(
        s["test_accuracy"] == 1.0 for s in outcome.metrics["seeds"] if s["problem"] == "AND"
    )
    assert (tmp_path / "run" / "learning_curve.png").is_file() and (tmp_path / "run" / "XOR" / "seed_1" / "run.json").is_file()
    report = build_report([tmp_path / "run"])
    assert "## ep_learning" in report and "| AND |" in report and "per seed" in report


def test_an_interrupted_study_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    config = parse_run_config(GATES_TINY)
    reference = run_task(config, tmp_path / "reference", progress=False).metrics
    real, calls = ep_learning._train_one, []

    def interrupt_third(task, problem, seed, run, progress):
        calls.append((problem, seed))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, problem, seed, run, progress)

    monkeypatch.setattr(ep_learning, "_train_one", interrupt_third)
    with pytest.raises(RunInterrupted):
        run_task(config, tmp_path / "run", progress=False)
    resumed = run_task(config, tmp_path / "run", progress=False).metrics
    assert calls == [("AND", 0), ("AND", 1), ("XOR", 0), ("XOR", 0), ("XOR", 1)]  # the finished seeds are not trained again
    strip = lambda m: [{k: v for k, v in s.items() if not k.startswith(("seconds", "samples"))} for s in m["seeds"]]  # noqa: E731
    assert strip(resumed) == strip(reference)


def test_ep_learning_bad_inputs_name_the_field():
    with pytest.raises(ConfigError, match=r"task\.dataset' = 'mnist'"):
        parse_run_config({"task": {"type": "ep_learning", "dataset": "mnist"}})
    with pytest.raises(ConfigError, match=r"gates must list each of .* at most once, got \['AND', 'AND'\]"):
        parse_run_config({"task": {"type": "ep_learning", "dataset": "gates", "gates": ["AND", "AND"]}})
    with pytest.raises(ConfigError, match=r"task\.training\.lr' = -0\.1"):
        parse_run_config({"task": {"type": "ep_learning", "training": {"lr": -0.1}}})
    with pytest.raises(ConfigError, match=r"task\.seeds' = 0"):
        parse_run_config({"task": {"type": "ep_learning", "seeds": 0}})


def test_ep_mnist_tiny_run_on_synthetic_idx_files(tmp_path):
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=120, n_test=40)
    config = parse_run_config({
        "task": {"type": "ep_mnist", "hidden": 8, "train_size": 60, "training": {"epochs": 2, "batch_size": 20}},
        "data": {"dir": str(data), "n_validation": 30},
    })  # fmt: skip
    outcome = run_task(config, tmp_path / "run", progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m == outcome.metrics and m["images"] == {"train": 60, "validation": 30, "test": 40}
    assert len(m["history"]) == 2 and 0.0 <= m["test_accuracy"] <= 1.0
    assert m["test_error_percent"] == pytest.approx(100 * (1 - m["test_accuracy"]))
    assert "3.46%" in build_report([tmp_path / "run"])
    with pytest.raises(ConfigError, match="task.train_size 500 exceeds the 90 training images"):
        run_task(config.model_copy(update={"task": config.task.model_copy(update={"train_size": 500})}), tmp_path / "other")
    assert not (tmp_path / "other").exists()
