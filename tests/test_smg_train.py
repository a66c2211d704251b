"""Surrogate training on the analytic device: accuracy, noise floor, checkpoints, resume, divergence."""

import json
import time

import numpy as np
import pytest
import torch

from inmaterio.devices import AnalyticDevice
from inmaterio.errors import ConfigError, RunInterrupted
from inmaterio.runs import read_run
from inmaterio.smg.config import SamplingConfig, TrainConfig
from inmaterio.smg.dataset import Dataset, split
from inmaterio.smg.evaluate import error_metrics, evaluate_surrogate
from inmaterio.smg.mlp_trainer import MLPTrainer
from inmaterio.smg.sampling import sample_plan
from inmaterio.smg.train import TrainingDivergedError, train_surrogate
from inmaterio.surrogate import DeviceInfo, load_surrogate

SMALL = TrainConfig(hidden_sizes=(32, 32), learning_rate=3e-3, batch_size=128, max_epochs=40, patience=10, seed=0, num_threads=1)


def measured(device, n, seed, kind="uniform"):
    v = sample_plan(SamplingConfig(kind=kind, n_samples=n, seed=seed), device.voltage_ranges)
    m = device.measure_with_error(v)
    return Dataset(v, m.current_na, m.stderr_na)


def train_val(device, n=5000):
    train, val, _ = split(measured(device, n, seed=0), (0.8, 0.2, 0.0), seed=0)
    return train, val


@pytest.fixture(scope="module")
def noise_free_run(tmp_path_factory):
    device = AnalyticDevice(n_activation=3)
    train, val = train_val(device)
    directory = tmp_path_factory.mktemp("noise_free")
    start = time.perf_counter()
    result = train_surrogate(train, val, SMALL, directory, DeviceInfo.from_device(device), progress=False)
    return device, train, val, result, time.perf_counter() - start


def test_noise_free_training_is_accurate_and_fast(noise_free_run):
    device, _, _, result, seconds = noise_free_run
    assert seconds < 20
    assert result.best_val_rmse_percent < 3.0
    assert result.noise_floor_na == 0.0
    # against an independent, never-seen test set from the closed form
    test = measured(device, 2000, seed=9)
    metrics = evaluate_surrogate(result.model, test)
    assert metrics["rmse_percent_of_range"] < 3.0
    assert metrics["correlation"] > 0.998
    assert metrics["rmse_over_noise_floor"] is None


def test_saved_best_model_is_the_best_epoch(noise_free_run):
    _, _, val, result, _ = noise_free_run
    history = json.loads((result.directory / "history.json").read_text())
    best = min(history, key=lambda h: h["val_rmse_na"])
    assert best["epoch"] == result.best_epoch
    assert best["val_rmse_na"] == pytest.approx(result.best_val_rmse_na)
    reloaded = load_surrogate(result.directory)
    for (name, a), (_, b) in zip(reloaded.state_dict().items(), result.model.state_dict().items()):
        assert torch.equal(a, b), name
    # the reloaded model really has the recorded validation RMSE
    rmse = np.sqrt(np.mean((reloaded.predict(val.voltages_v) - val.current_na) ** 2))
    assert rmse == pytest.approx(result.best_val_rmse_na, rel=1e-4)
    csv_lines = (result.directory / "history.csv").read_text().splitlines()
    assert csv_lines[0] == "epoch,train_rmse_na,val_rmse_na,time_s" and len(csv_lines) == len(history) + 1
    assert result.output_range_na == pytest.approx(np.ptp(noise_free_run[1].current_na))


def test_finished_run_is_reused_and_other_config_refused(noise_free_run, monkeypatch):
    device, train, val, result, _ = noise_free_run

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(MLPTrainer, "step", forbidden)
    again = train_surrogate(train, val, SMALL, result.directory, DeviceInfo.from_device(device), progress=False)
    assert again.best_epoch == result.best_epoch and again.history == result.history
    # num_threads changes the speed only: the finished run is still this one
    again = train_surrogate(train, val, SMALL.model_copy(update={"num_threads": 2}), result.directory,
                            DeviceInfo.from_device(device), progress=False)  # fmt: skip
    assert again.history == result.history
    other = SMALL.model_copy(update={"learning_rate": 1e-2})
    with pytest.raises(ConfigError, match=r"config\.learning_rate: 0\.003 in the folder, 0\.01 now"):
        train_surrogate(train, val, other, result.directory, DeviceInfo.from_device(device), progress=False)
    with pytest.raises(ConfigError, match=r"data_fingerprint: '[0-9a-f]+' in the folder, '[0-9a-f]+' now"):
        train_surrogate(val, train, SMALL, result.directory, DeviceInfo.from_device(device), progress=False)


def test_noisy_training_approaches_the_noise_floor(tmp_path):
    device = AnalyticDevice(n_activation=3, noise_na=2.0)
    train, val = train_val(device, n=8000)
    result = train_surrogate(train, val, SMALL, tmp_path, DeviceInfo.from_device(device), progress=False)
    assert result.noise_floor_na == pytest.approx(2.0)
    metrics = evaluate_surrogate(result.model, measured(device, 3000, seed=11))
    assert metrics["noise_floor_na"] == pytest.approx(2.0)
    assert 0.9 < metrics["rmse_over_noise_floor"] < 1.3


def poison_after(monkeypatch, n_steps, action):
    """Make every training step after the ``n_steps``-th run ``action(trainer)`` after it."""
    original = MLPTrainer.step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= n_steps:
            action(self)
        return out

    monkeypatch.setattr(MLPTrainer, "step", step)


def test_nan_loss_aborts_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    device = AnalyticDevice(n_activation=3)
    train, val = train_val(device, n=1000)  # 800 training points: 7 steps per epoch
    config = SMALL.model_copy(update={"max_epochs": 10})

    def to_nan(trainer):
        trainer.params[:10].fill_(float("nan"))

    poison_after(monkeypatch, 7 * 3 + 2, to_nan)  # in epoch 4
    with pytest.raises(TrainingDivergedError, match="epoch 4"):
        train_surrogate(train, val, config, tmp_path, DeviceInfo.from_device(device), progress=False)
    survivor = load_surrogate(tmp_path)
    assert all(torch.isfinite(p).all() for p in survivor.parameters())
    assert survivor.metadata["epoch"] <= 3
    record = read_run(tmp_path)
    assert record["state"] == "failed" and "TrainingDivergedError: training diverged in epoch 4" in record["error"]
    assert [h["epoch"] for h in json.loads((tmp_path / "history.json").read_text())] == [1, 2, 3]


def test_interrupted_training_resumes_bit_for_bit(tmp_path, monkeypatch):
    """Interrupted mid-epoch, then resumed in a fresh call: weights and history equal an uninterrupted run's."""
    device = AnalyticDevice(n_activation=3)
    train, val = train_val(device, n=1000)
    config = SMALL.model_copy(update={"max_epochs": 8, "lr_schedule": "cosine"})
    info = DeviceInfo.from_device(device)
    reference = train_surrogate(train, val, config, tmp_path / "ref", info, progress=False, notify=print)

    def interrupt(optimizer):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        poison_after(patch, 7 * 4 + 3, interrupt)  # in epoch 5
        with pytest.raises(RunInterrupted):
            train_surrogate(train, val, config, tmp_path / "run", info, progress=False)
    assert read_run(tmp_path / "run")["state"] == "interrupted"
    messages = []
    result = train_surrogate(train, val, config, tmp_path / "run", info, progress=False, notify=messages.append)
    assert "resuming training after epoch 4 (best epoch 4)" in messages
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    assert result.stop_reason == "max_epochs" and read_run(tmp_path / "run")["state"] == "finished"

    def without_times(history):
        return [{k: v for k, v in row.items() if k != "time_s"} for row in history]

    assert without_times(result.history) == without_times(reference.history)
    assert result.best_epoch == reference.best_epoch and result.best_val_rmse_na == reference.best_val_rmse_na
    for (name, a), (_, b) in zip(result.model.state_dict().items(), reference.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert (tmp_path / "run" / "weights.safetensors").read_bytes() == (tmp_path / "ref" / "weights.safetensors").read_bytes()


def test_error_metrics_against_hand_computation():
    ds = Dataset(np.zeros((4, 2)), np.array([0.0, 1.0, 2.0, 3.0]), np.full(4, 0.5))
    m = error_metrics(np.array([1.0, 1.0, 2.0, 1.0]), ds)
    assert m["rmse_na"] == pytest.approx(np.sqrt(5 / 4))
    assert m["mae_na"] == pytest.approx(0.75)
    assert m["max_abs_error_na"] == pytest.approx(2.0)
    assert m["rmse_percent_of_range"] == pytest.approx(100 * np.sqrt(5 / 4) / 3)
    assert m["noise_floor_na"] == pytest.approx(0.5)
    assert m["rmse_over_noise_floor"] == pytest.approx(np.sqrt(5 / 4) / 0.5)
    assert m["correlation"] == pytest.approx(np.corrcoef([1, 1, 2, 1], [0, 1, 2, 3])[0, 1])


def test_cosine_schedule_by_hand():
    from inmaterio.smg.config import TrainConfig
    from inmaterio.smg.train import learning_rate_at

    cfg = TrainConfig(learning_rate=0.01, max_epochs=4, lr_schedule="cosine")
    # (1 + cos(pi * k / 4)) / 2 for k = 0..3: 1, 0.8536, 0.5, 0.1464
    expected = [0.01, 0.0085355, 0.005, 0.0014645]
    assert [round(learning_rate_at(cfg, e), 7) for e in range(1, 5)] == expected
    assert learning_rate_at(TrainConfig(learning_rate=0.01), 3) == 0.01
