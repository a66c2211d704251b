"""The EP-on-asymmetric-devices study as a task: its example, a tiny run end to end, resume, bad inputs, report."""

from __future__ import annotations

from pathlib import Path

import pytest

import inmaterio.studies.ep_asymmetric as ep_asymmetric
from inmaterio.circuits import EPTrainConfig, evaluate, fit
from inmaterio.circuits.examples import diode_network
from inmaterio.circuits.pulsed import PulsedOptimizerConfig
from inmaterio.crossbars.pulsed import SoftBoundsDevice
from inmaterio.data.tabular import load_iris_split
from inmaterio.errors import ConfigError, RunInterrupted
from inmaterio.studies.ep_asymmetric import EPAsymmetricConfig
from inmaterio.tasks.registry import load_run_config, parse_run_config
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DEVICE = {"kind": "soft_bounds", "up_down": 0.3, "c2c_std": 0.2}
TINY = {
    "task": {
        "type": "ep_asymmetric",
        "dataset": "iris",
        "seeds": 1,
        "hidden": 3,
        "training": {"epochs": 1, "batch_size": 32},
        "device": DEVICE,
        "states": [100, 10],
        "sgd": {"lr": 0.05},
        "shd": {"lr": 0.05, "lr_c": 0.2},
    }
}


def test_example_validates():
    config = load_run_config(EXAMPLES / "ep_asymmetric.yaml")
    assert isinstance(config, EPAsymmetricConfig)
    assert config.task.training.optimizer != "pulsed" and config.task.device.up_down != 0


def test_tiny_study_end_to_end_and_a_cell_is_plain_fit(tmp_path):
    config = parse_run_config(TINY)
    outcome = run_task(config, tmp_path / "run", progress=False)
    cells = [(s["method"], s["states"]) for s in outcome.metrics["summary"]]
    assert cells == [("baseline", None), ("sgd", 100), ("sgd", 10), ("shd", 100), ("shd", 10)]
    assert [r[:2] for r in outcome.rows] == [["baseline", "float"], ["sgd", "100"], ["sgd", "10"], ["shd", "100"], ["shd", "10"]]
    # the SHD cell at 10 states, rebuilt by hand: 10 states over [-1, 1] is dw_min = 0.2
    data = load_iris_split(0)
    model = diode_network(4, 3, 3, seed=0)
    device = SoftBoundsDevice(up_down=0.3, c2c_std=0.2, dw_min=0.2)
    training = EPTrainConfig(
        epochs=1, batch_size=32, beta=1e-7, lr=0.05, readout="differential", loss="mse", target_v=0.1, seed=0,
        optimizer="pulsed", pulsed=PulsedOptimizerConfig(device=device, rule="shd", lr_c=0.2),
    )  # fmt: skip
    fit(model, data.x_train, data.y_train, training, progress=False)
    row = next(s for s in outcome.metrics["seeds"] if s["method"] == "shd" and s["states"] == 10)
    assert evaluate(model, data.x_test, data.y_test, training)["accuracy"] == row["test_accuracy"]
    shd10 = next(s for s in outcome.metrics["summary"] if s["method"] == "shd" and s["states"] == 10)
    assert shd10["test_mean"] == row["test_accuracy"] and shd10["test_std"] == 0.0
    assert (tmp_path / "run" / "accuracy_vs_states.png").is_file()
    assert (tmp_path / "run" / "shd" / "states_10" / "seed_0" / "run.json").is_file()
    assert (tmp_path / "run" / "baseline" / "seed_0" / "run.json").is_file()
    report = build_report([tmp_path / "run"])
    assert "ep_asymmetric" in report and "| shd | 10 |" in report


def test_an_interrupted_study_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    tiny = {"task": {**TINY["task"], "states": [10]}}
    config = parse_run_config(tiny)
    reference = run_task(config, tmp_path / "reference", progress=False).metrics
    real, calls = ep_asymmetric._train_one, []

    def interrupt_second(task, method, states, seed, run, progress):
        calls.append((method, states))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(task, method, states, seed, run, progress)

    monkeypatch.setattr(ep_asymmetric, "_train_one", interrupt_second)
    with pytest.raises(RunInterrupted):
        run_task(config, tmp_path / "run", progress=False)
    resumed = run_task(config, tmp_path / "run", progress=False).metrics
    assert calls == [("baseline", None), ("sgd", 10), ("sgd", 10), ("shd", 10)]  # the finished one is not trained again
    strip = lambda m: [{k: v for k, v in s.items() if not k.startswith("seconds")} for s in m["seeds"]]  # noqa: E731
    assert strip(resumed) == strip(reference)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"states": [10, 10]}, r"states must list distinct numbers of states >= 2"),
        ({"states": [1]}, r"states must list distinct"),
        ({"training": {"optimizer": "pulsed"}}, r"task\.training"),
        ({"device": {**DEVICE, "reference": "zero_shift"}}, r"task\.device.*reference"),
        ({"shd": {"lr": 0.1}}, r"task\.shd\.lr_c"),
        ({"sgd": {"lr": -1}}, r"task\.sgd\.lr' = -1"),
        ({"dataset": "gates"}, r"task\.dataset' = 'gates'"),
        ({"rounding": "up"}, r"task\.rounding"),
    ],
)
def test_bad_inputs_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_run_config({"task": {**TINY["task"], **change}})
