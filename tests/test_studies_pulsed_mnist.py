"""The pulsed-device MNIST study as a task, on a tiny synthetic MNIST in IDX .gz files (never the real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import inmaterio.training.losses as losses
from inmaterio.errors import ConfigError, RunInterrupted
from inmaterio.studies.pulsed_mnist import PulsedMnistConfig, build_network, crop_images
from inmaterio.tasks.registry import load_run_config, parse_run_config
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task
from killresume import without_timings
from test_studies_mnist import write_synthetic_mnist

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> Path:
    return write_synthetic_mnist(tmp_path_factory.mktemp("data") / "mnist", n_train=160, n_test=60)


def tiny(data: Path, runs: list[dict] | None = None, **task) -> dict:
    runs = runs or [
        {"name": "digital", "rule": "digital", "batch_size": 10, "learning_rate": 2.0, "epochs": 4},
        {"name": "mbgd_sr", "rule": "mbgd", "batch_size": 20, "learning_rate": 0.5},
        {"name": "pt", "rule": "pulse_train", "batch_size": 1, "learning_rate": 0.2, "bl": 5, "epochs": 1},
        {"name": "nmf", "rule": "low_rank", "batch_size": 20, "learning_rate": 0.5, "low_rank": {"method": "nmf", "rank": 2,
         "transfer": "seq", "nmf_iterations": 10}},
    ]  # fmt: skip
    return {
        "task": {"type": "pulsed_mnist", "hidden": [12], "epochs": 2, "runs": runs, **task},
        "data": {"dir": str(data), "n_validation": 40},
    }


def test_the_examples_validate():
    config = load_run_config(EXAMPLES / "pulsed_mnist.yaml")
    assert isinstance(config, PulsedMnistConfig) and config.data.dir is None
    assert config.task.crop == 20 and config.task.hidden == (100,) and config.task.device == "zhao_neurosim"
    assert {r.rule for r in config.task.runs} == {"digital", "mbgd", "low_rank"}
    states = load_run_config(EXAMPLES / "pulsed_mnist" / "ttv2_states.yaml")
    assert states.task.hidden == (100,) and states.task.crop == 20 and states.task.train_size == 8000
    assert sorted({r.states for r in states.task.runs if r.states}) == [15, 30, 100, 300, 1200]
    assert {r.describe().split(",")[0] for r in states.task.runs} == {
        "digital SGD",
        "pulse trains",
        "TTv1",
        "TTv2",
        "TTv2 hysteretic",
    }


def test_crop_keeps_the_central_pixels():
    images = torch.arange(2 * 784, dtype=torch.float32).reshape(2, 784)
    cropped = crop_images(images, 20)
    assert cropped.shape == (2, 400)
    assert cropped[0, 0] == 4 * 28 + 4 and cropped[1, -1] == 784 + 23 * 28 + 23


def test_a_tiny_run_trains_every_rule_and_reports(tmp_path, mnist):
    outcome = run_task(parse_run_config(tiny(mnist)), tmp_path / "run", progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m == outcome.metrics and m["network"] == "400-12-10" and m["images"] == {"train": 120, "validation": 40, "test": 60}
    by_name = {r["name"]: r for r in m["results"]}
    assert set(by_name) == {"digital", "mbgd_sr", "pt", "nmf"}
    for r in m["results"]:
        assert all(round(a * 60) == a * 60 for a in r["per_seed_test"])  # counts of the 60 test images
    assert by_name["digital"]["test_accuracy"]["mean"] > 0.5  # the synthetic digits are easy
    assert (tmp_path / "run" / "accuracy_vs_epoch.png").stat().st_size > 10_000
    history = json.loads((tmp_path / "run" / "pt" / "seed_0" / "history.json").read_text())
    assert len(history) == 1  # the run's own epochs
    report = build_report([tmp_path / "run"])
    assert "## pulsed_mnist" in report and "| mbgd_sr | MBGD B = 20, SR | 0.5 | 2 |" in report
    assert "| nmf | NMF rank-seq k = 2, B = 20, SR |" in report


def test_an_interrupted_run_resumes_to_the_same_numbers(tmp_path, mnist, monkeypatch):
    config = parse_run_config(tiny(mnist))
    reference = run_task(config, tmp_path / "reference", progress=False).metrics
    real_loss, seen = losses.cross_entropy, []

    def loss_then_stop(out, y):
        seen.append(1)
        if len(seen) == 4 * 13 + 4:  # digital: 4 epochs x (12 batches + validation); mbgd: 4 batches in
            raise KeyboardInterrupt
        return real_loss(out, y)

    monkeypatch.setattr(losses, "cross_entropy", loss_then_stop)
    with pytest.raises(RunInterrupted):
        run_task(config, tmp_path / "run", progress=False)
    monkeypatch.setattr(losses, "cross_entropy", real_loss)
    resumed = run_task(config, tmp_path / "run", progress=False).metrics
    assert without_timings(resumed) == without_timings(reference)


def test_the_network_has_one_tile_per_layer_and_seeded_weights():
    config = parse_run_config({"task": {"type": "pulsed_mnist", "runs": [{"name": "a", "rule": "digital", "learning_rate": 1}]}})
    a, b = build_network(config.task, 0), build_network(config.task, 0)
    assert [type(m).__name__ for m in a] == ["Flatten", "AnalogLinear", "Sigmoid", "AnalogLinear"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_bad_configs_name_the_field(tmp_path, mnist):
    def refused(pattern: str, **task) -> None:
        data = tiny(mnist)
        with pytest.raises(ConfigError, match=pattern):
            parse_run_config({**data, "task": {**data["task"], **task}})

    refused(r"task\.crop", crop=30)
    refused(r"task\.hidden", hidden=[0])
    refused(r"task\.device.*'memristor'", device="memristor")
    refused(r"task\.device.*kind", device={"kind": "magic"})
    refused(r"task\.runs.*unique.*twice", runs=[{"name": "twice", "rule": "digital", "learning_rate": 1}] * 2)
    refused(r"task\.runs\.0\.rule", runs=[{"name": "a", "rule": "adam", "learning_rate": 1}])
    refused(r"task\.runs\.0\.learning_rate", runs=[{"name": "a", "rule": "mbgd", "learning_rate": 0}])
    refused(r"task\.runs\.0\.name", runs=[{"name": "a b", "rule": "mbgd", "learning_rate": 1}])
    refused(r"task\.runs", runs=[])
    refused(
        r"task\.runs\.0\.low_rank\.rank", runs=[{"name": "a", "rule": "low_rank", "learning_rate": 1, "low_rank": {"rank": 0}}]
    )
    with pytest.raises(ConfigError, match="task.train_size 500 exceeds the 120 training images"):
        run_task(parse_run_config(tiny(mnist, train_size=500)), tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_runs_over_the_number_of_states_with_tiki_taka_draw_the_states_figure(tmp_path, mnist):
    device = {"kind": "soft_bounds", "w_min": -1.0, "w_max": 1.0, "dw_min": 0.01, "up_down": 0.2}
    runs = [
        {"name": f"{rule}_{n}", "rule": rule, "batch_size": 10, "learning_rate": 0.2, "bl": 4, "states": n,
         **({"tiki_taka": {"version": 2, "transfer_every": 2, "transfer_lr": 0.5}} if rule == "tiki_taka" else {})}
        for rule in ("pulse_train", "tiki_taka") for n in (20, 200)
    ]  # fmt: skip
    config = parse_run_config(tiny(mnist, runs=runs, device=device, epochs=1))
    assert config.task.runs[0].pulsed_device(device).dw_min == pytest.approx(0.1)  # 2 / 20 states
    assert config.task.runs[2].tiki_taka_config(config.task.runs[2].pulsed_device(device)).device_a.reference == "zero_shift"
    outcome = run_task(config, tmp_path / "run", progress=False)
    assert [r["describe"] for r in outcome.metrics["results"]][2] == "TTv2, BL = 4, 20 states"
    assert (tmp_path / "run" / "error_vs_states.png").stat().st_size > 10_000
    assert "error_vs_states.png" in build_report([tmp_path / "run"])


def test_tiki_taka_settings_are_checked_with_the_run(mnist):
    def refused(pattern: str, run: dict) -> None:
        with pytest.raises(ConfigError, match=pattern):
            parse_run_config(tiny(mnist, runs=[{"name": "a", "learning_rate": 0.1, **run}]))

    refused("threshold", {"rule": "tiki_taka", "tiki_taka": {"version": 2, "threshold": 0.5}})
    refused("device_c", {"rule": "tiki_taka", "tiki_taka": {"device_c": {"kind": "constant_step"}}})
    refused("tiki_taka settings are given but rule is 'mbgd'", {"rule": "mbgd", "tiki_taka": {"version": 1}})
    refused(r"states", {"rule": "mbgd", "states": 1})
    refused(r"device.*'memristor'", {"rule": "mbgd", "device": "memristor"})
