"""The whole SMG life cycle on examples/smg_analytic.yaml, and its reuse on a second run."""

import json
from pathlib import Path

import pytest
import torch

import inmaterio.devices.analytic as analytic
from inmaterio.config import load_config
from inmaterio.errors import ConfigError
from inmaterio.smg import SMGConfig, run_smg
from inmaterio.surrogate import load_surrogate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "smg_analytic.yaml"


def test_pipeline_end_to_end_and_rerun(tmp_path, monkeypatch):
    config = load_config(SMGConfig, EXAMPLE)
    summary = run_smg(config, tmp_path, progress=False)

    for name in ("config.yaml", "summary.json", "iv_curves.png", "learning_curve.png", "test_predicted_vs_measured.png"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert load_config(SMGConfig, tmp_path / "config.yaml") == config
    assert summary["train_data"]["n_points"] == config.sampling.n_samples
    assert summary["test_data"]["n_points"] == config.test_sampling.n_samples
    assert summary["test_metrics"]["rmse_percent_of_range"] < 5.0
    assert summary["consistency"]["consistent"]

    model = load_surrogate(tmp_path / "model")
    assert model.info.noise_na == pytest.approx(summary["test_metrics"]["rmse_na"])
    assert model.info.provenance["train_data_fingerprint"] == summary["train_data"]["fingerprint"]
    assert model.info.provenance["smg_config"] == config.model_dump(mode="json")
    assert model.info.provenance["device"]["type"] == "AnalyticDevice"

    # second run of a complete run: nothing is measured or trained again
    data_before = (tmp_path / "train_data" / "data.npz").read_bytes()
    history_before = (tmp_path / "model" / "history.json").read_text()

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(torch.optim.Adam, "step", forbidden)
    monkeypatch.setattr(analytic.AnalyticDevice, "_measure", forbidden)
    again = run_smg(config, tmp_path, progress=False)
    assert (tmp_path / "train_data" / "data.npz").read_bytes() == data_before
    assert (tmp_path / "model" / "history.json").read_text() == history_before
    assert again["test_metrics"] == summary["test_metrics"]


def test_interrupted_pipeline_reuses_finished_stages(tmp_path, monkeypatch):
    """Interrupted after training: the re-run measures only the test set, consistency and I-V points."""
    config = load_config(SMGConfig, EXAMPLE)
    original_measure = analytic.AnalyticDevice._measure

    def interrupt_at_test_set(self, voltages):
        if (tmp_path / "model" / "model.json").is_file():  # training done: this is the test set
            raise KeyboardInterrupt
        return original_measure(self, voltages)

    with monkeypatch.context() as patch:
        patch.setattr(analytic.AnalyticDevice, "_measure", interrupt_at_test_set)
        with pytest.raises(KeyboardInterrupt):
            run_smg(config, tmp_path, progress=False)
    assert (tmp_path / "model" / "model.json").is_file() and not (tmp_path / "summary.json").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("the finished training ran again")

    sizes = []

    def counting(self, voltages):
        sizes.append(len(voltages))
        return original_measure(self, voltages)

    monkeypatch.setattr(torch.optim.Adam, "step", no_training)
    monkeypatch.setattr(analytic.AnalyticDevice, "_measure", counting)
    summary = run_smg(config, tmp_path, progress=False)
    assert config.test_sampling.n_samples <= config.acquisition.batch_size  # one call for the test set
    assert sizes == (
        [config.test_sampling.n_samples]
        + [config.consistency_points] * config.consistency_repeats
        + [config.device.n_activation * config.iv_points]
    )
    assert summary["test_metrics"]["n_points"] == config.test_sampling.n_samples


def test_other_config_in_same_directory_is_refused(tmp_path):
    config = SMGConfig(
        device={"type": "analytic", "n_activation": 3},
        sampling={"kind": "lhs", "n_samples": 600, "seed": 0},
        test_sampling={"kind": "uniform", "n_samples": 200, "seed": 1},
        training={"hidden_sizes": [16], "max_epochs": 2},
        consistency_repeats=0,
        iv_points=5,
    )
    summary = run_smg(config, tmp_path, progress=False)
    assert summary["consistency"] is None
    other = config.model_copy(update={"iv_points": 7})
    with pytest.raises(ConfigError, match="another configuration"):
        run_smg(other, tmp_path, progress=False)
