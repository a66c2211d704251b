"""The MNIST study as a task, on a tiny synthetic MNIST written here in IDX .gz files (never the real files)."""

from __future__ import annotations

import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from inmaterio.config import validate_config
from inmaterio.data.mnist import MNIST_FILES
from inmaterio.studies.mnist import RECIPES, MnistConfig, lr_factor
from inmaterio.tasks.registry import load_run_config
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task
from killresume import kill_then_resume, python_argv, run_to_end, without_timings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An IDX .gz file from its specification: 0x0000, dtype code 0x08 (uint8), ndim, big-endian uint32 dims, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


def write_synthetic_mnist(folder: Path, n_train: int = 200, n_test: int = 60, seed: int = 0) -> Path:
    """Four IDX .gz files of 28 x 28 images: digit k is a bright 8 x 4 block at a place of its own, on noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def images_and_labels(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            r, c = divmod(int(k), 5)
            images[i, 4 + 10 * r : 12 + 10 * r, 2 + 5 * c : 6 + 5 * c] = 255
        return images, labels

    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = images_and_labels(n)
        write_idx(folder / f"{MNIST_FILES[f'{split}_images']}.gz", images)
        write_idx(folder / f"{MNIST_FILES[f'{split}_labels']}.gz", labels)
    return folder


def tiny(data_dir: Path, **task) -> dict:
    return {
        "task": {"type": "mnist_10dnpu", "epochs": 4, "settings": {"batch_size": 16}, **task},
        "data": {"dir": str(data_dir), "n_validation": 40},
    }


def measured_and_refined(data_dir: Path, device: dict, fine_tune_epochs: int, retrain_epochs: int) -> dict:
    """:func:`tiny` with 3 inputs per node, measured on ``device`` (all 60 test images) and refined in one round."""
    spec = tiny(data_dir, inputs_per_node=3)
    spec["task"]["refine"] = {
        "rounds": 1, "max_operating_points": 150, "points_per_operating_point": 1, "fine_tune_epochs": fine_tune_epochs,
        "anchor_points": 256, "retrain_epochs": retrain_epochs,
    }  # fmt: skip
    spec["validation"] = {"enabled": True, "device": {"spec": device}, "test_images": 60}
    return spec


@pytest.mark.parametrize("path", [EXAMPLES / "mnist_10dnpu.yaml", *sorted((EXAMPLES / "mnist_10dnpu").glob("*.yaml"))],
                         ids=lambda p: p.name)  # fmt: skip
def test_examples_validate_as_mnist_runs(path):
    config = load_run_config(path)
    assert isinstance(config, MnistConfig)
    assert validate_config(MnistConfig, yaml.safe_load(path.read_text())) == config
    assert config.data.dir is None and config.task.epochs == 30 and config.task.overrides() == {}
    assert config.task.settings == RECIPES[config.task.recipe]


def test_the_examples_cover_the_table_once():
    runs = {(c.task.model, c.task.inputs_per_node, c.task.recipe)
            for c in map(load_run_config, [EXAMPLES / "mnist_10dnpu.yaml", *(EXAMPLES / "mnist_10dnpu").glob("*.yaml")])}  # fmt: skip
    assert runs == {(model, m, recipe) for model in ("dnpu", "relu") for m in (3, 7) for recipe in ("paper", "ours")}
    assert load_run_config(EXAMPLES / "mnist_10dnpu.yaml").task.recipe == "ours"


def test_settings_override_the_recipe_and_the_rest_is_filled_in():
    config = validate_config(
        MnistConfig, {"task": {"type": "mnist_10dnpu", "recipe": "paper", "settings": {"learning_rate": 0.005}}}
    )
    assert config.task.settings.learning_rate == 0.005
    assert config.task.settings.batch_size == 64 and config.task.settings.optimizer == "adam"
    assert config.task.overrides() == {"learning_rate": 0.005}
    # the dumped config holds every value and reads back to the same config
    assert validate_config(MnistConfig, config.model_dump(mode="json")) == config


def test_learning_rate_schedules_by_hand():
    assert lr_factor("constant", 7, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == 1.0 and lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("onecycle", 0, 100) == pytest.approx(0.04)
    assert lr_factor("onecycle", 5, 100) == pytest.approx(0.04 + 0.96 * 0.5)
    assert lr_factor("onecycle", 10, 100) == pytest.approx(1.0)
    assert lr_factor("onecycle", 55, 100) == pytest.approx(1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor("onecycle", 100, 100) == pytest.approx(1e-4)


def test_the_relu_baseline_learns_the_synthetic_digits(tmp_path):
    data = write_synthetic_mnist(tmp_path / "mnist")
    config = validate_config(MnistConfig, tiny(data, model="relu", epochs=6))
    metrics = run_task(config, tmp_path / "run", progress=False).metrics
    confusion = np.array(metrics["confusion"])
    assert confusion.sum() == 60 == metrics["images"]["test"] and metrics["images"] == {
        "train": 160,
        "validation": 40,
        "test": 60,
    }
    assert metrics["test_accuracy"] == pytest.approx(np.trace(confusion) / 60)
    assert metrics["test_accuracy"] > 0.8  # each digit is a block at its own place: easy
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    best = max(range(len(history)), key=lambda k: (history[k]["val_accuracy"], -k))  # the first of the best
    assert metrics["best_epoch"] == best + 1 and metrics["val_accuracy"] == history[best]["val_accuracy"]
    # the schedule is applied per step: the lr of the last step of the run is the one-cycle's end
    steps = math.ceil(160 / 16) * 6
    assert history[-1]["lr"] == pytest.approx(0.01 * lr_factor("onecycle", steps - 1, steps))


def test_a_tiny_dnpu_run_resumes_reads_back_and_reports(tmp_path):
    data = write_synthetic_mnist(tmp_path / "mnist")
    config = validate_config(MnistConfig, tiny(data, inputs_per_node=3))
    outcome = run_task(config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "training" / "checkpoint.pt").is_file()
    assert (tmp_path / "run" / "confusion.png").is_file() and (tmp_path / "run" / "learning_curve.png").is_file()
    assert outcome.metrics["paper_test_accuracy_percent"] == 94.7
    # threads and the data folder are speed only: a finished run is read back, not trained again
    moved = tmp_path / "elsewhere"
    (tmp_path / "mnist").rename(moved)
    again = validate_config(MnistConfig, {**tiny(moved, inputs_per_node=3), "threads": 2})
    assert run_task(again, tmp_path / "run", progress=False).metrics["test_accuracy"] == outcome.metrics["test_accuracy"]
    report = build_report([tmp_path / "run"])
    assert "### MNIST with 10 DNPUs" in report and "| 10 DNPUs | 3 | ours, batch_size 16 |" in report
    assert f"**{100 * outcome.metrics['test_accuracy']:.2f}%** | 94.7% |" in report
    assert "Confusion matrix, 3 inputs per node" in report


def test_a_dnpu_run_measured_and_refined_on_a_device(tmp_path):
    """The network on a noise-free analytic device, then one round of refinement, checked by hand."""
    from inmaterio.devices.analytic import AnalyticDevice
    from inmaterio.processors import DeviceProcessor
    from inmaterio.surrogate import load_surrogate

    spec = measured_and_refined(write_synthetic_mnist(tmp_path / "mnist"), {"type": "analytic"}, 20, 2)
    config = validate_config(MnistConfig, spec)
    outcome = run_task(config, tmp_path / "run", progress=False)
    metrics, run = outcome.metrics, tmp_path / "run"
    before, after = metrics["device"], metrics["device_refined"]
    # every test image measured: on the surrogate (no noise) the subset's accuracy is the test accuracy
    assert before["images"] == after["images"] == 60
    assert before["surrogate_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert after["surrogate_accuracy"] == pytest.approx(metrics["refined_test_accuracy"])
    for check in (before, after):
        assert check["device_minus_surrogate"]["difference"] == pytest.approx(
            check["device_accuracy"] - check["surrogate_accuracy"]
        )
        assert check["device_minus_surrogate"]["low"] <= check["device_minus_surrogate"]["difference"]
        assert check["device_minus_surrogate"]["difference"] <= check["device_minus_surrogate"]["high"]
    assert metrics["device_refined_minus_trained"]["difference"] == pytest.approx(
        after["device_accuracy"] - before["device_accuracy"]
    )
    # the measured node currents are the device's own (noise-free analytic device) at 10 operating points per image
    device = DeviceProcessor(AnalyticDevice(), plateau_samples=1, ramp_samples=0)
    for name in ("trained", "refined"):
        with np.load(run / "device" / f"{name}.npz") as saved:
            volts, current = saved["voltages_v"], saved["current_na"]
        assert volts.shape == (600, 7)
        with torch.no_grad():
            expected = device(torch.as_tensor(volts, dtype=torch.float32)).double().numpy()
        np.testing.assert_allclose(current, expected, rtol=1e-5, atol=1e-4)
    # the inputs are on e0, e3, e4 (linear outputs through the batch norm), the four controls one per node
    with np.load(run / "device" / "trained.npz") as saved:
        controls = saved["voltages_v"].reshape(60, 10, 7)[:, :, [1, 2, 5, 6]]
    np.testing.assert_allclose(controls, np.broadcast_to(controls[:1], controls.shape))
    # one round: 150 operating points and one neighbour each, the copy fine-tuned and saved with its record
    (round_1,) = metrics["refinement"]
    assert round_1["device_points"] == 300 and round_1["n_train"] + round_1["n_held_out"] == 300
    assert round_1["held_out_rmse_after_na"] < round_1["held_out_rmse_before_na"]
    refined = load_surrogate(run / "refinement" / "surrogate")
    assert refined.metadata["refinement"] == json.loads(json.dumps(metrics["refinement"]))
    assert (run / "refinement" / "retrain_1" / "run.json").is_file()
    assert outcome.columns[-2:] == ["device acc", "refined device acc"]
    assert outcome.rows[0][-2:] == [f"{100 * before['device_accuracy']:.1f}%", f"{100 * after['device_accuracy']:.1f}%"]
    report = build_report([run])
    assert "Measured on a device" in report
    assert f"device **{100 * before['device_accuracy']:.1f}%**" in report
    assert f"device **{100 * after['device_accuracy']:.1f}%**" in report
    # finished: read back, nothing measured again
    stamp = (run / "device" / "trained.npz").stat().st_mtime_ns
    assert run_task(config, run, progress=False).metrics == metrics
    assert (run / "device" / "trained.npz").stat().st_mtime_ns == stamp


@pytest.mark.slow  # three processes (~30 s); its training is a train_gd run, whose kill-and-resume test runs by default
def test_mnist_killed_at_a_random_point_resumes_bit_for_bit(tmp_path):
    data = write_synthetic_mnist(tmp_path / "mnist")
    config = tmp_path / "mnist.yaml"
    config.write_text(yaml.safe_dump(tiny(data, inputs_per_node=3, epochs=8, settings={"batch_size": 8})))

    def argv(out):
        return python_argv("-m", "inmaterio", "run", str(config), "--out", str(out), "--no-progress")

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_to_end(argv(clean))
    report = kill_then_resume(argv(killed), killed / "training" / "checkpoint.pt", seed=2, max_delay_s=1.0)
    for name in ("metrics.json", "history.json", "training/history.json"):
        pair = [without_timings(json.loads((d / name).read_text())) for d in (clean, killed)]
        assert pair[0] == pair[1], (name, report)
    assert report.killed_while_running, report
    assert json.loads((killed / "run.json").read_text())["sessions"] == 2


@pytest.mark.slow  # three processes (~20 s)
def test_mnist_measured_and_refined_killed_during_the_refinement_resumes_bit_for_bit(tmp_path):
    """Killed after the first device measurement (in the refinement's measuring, fine-tuning or re-training): the
    resumed run reads the saved measurements back and ends as an uninterrupted one, noise draws included."""
    spec = measured_and_refined(write_synthetic_mnist(tmp_path / "mnist"), {"type": "analytic", "noise_na": 2.0}, 200, 4)
    config = tmp_path / "mnist.yaml"
    config.write_text(yaml.safe_dump(spec))

    def argv(out):
        return python_argv("-m", "inmaterio", "run", str(config), "--out", str(out), "--no-progress")

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_to_end(argv(clean))
    report = kill_then_resume(argv(killed), killed / "device" / "trained.npz", seed=3, max_delay_s=1.5)
    for name in ("metrics.json", "refinement/retrain_1/history.json"):
        pair = [without_timings(json.loads((d / name).read_text())) for d in (clean, killed)]
        assert pair[0] == pair[1], (name, report)
    for name in ("device/trained.npz", "refinement/round_1.npz", "device/refined.npz"):
        with np.load(clean / name) as a, np.load(killed / name) as b:
            assert np.array_equal(a["current_na"], b["current_na"]), name
    assert report.killed_while_running, report
