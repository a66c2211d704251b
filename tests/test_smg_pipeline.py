"""The whole SMG life cycle on examples/smg_analytic.yaml, its reuse on a second run, its refusals."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import inmaterio.devices.analytic as analytic
from bad_inputs import snapshot
from inmaterio.config import load_config
from inmaterio.errors import ConfigError, ModelFileError, RunFolderError
from inmaterio.runs import read_run
from inmaterio.smg import SMGConfig, run_smg
from inmaterio.smg.dataset import load_dataset
from inmaterio.smg.mlp_trainer import MLPTrainer
from inmaterio.smg.pipeline import export_smg_model, smg_identity
from inmaterio.surrogate import SpreadCalibration, load_ensemble, load_surrogate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "smg_analytic.yaml"


def quiet(_message):
    pass


def test_pipeline_end_to_end_and_rerun(tmp_path, monkeypatch):
    config = load_config(SMGConfig, EXAMPLE)
    summary = run_smg(config, tmp_path, progress=False, notify=quiet)

    for name in ("config.yaml", "metrics.json", "iv_curves.png", "learning_curve.png", "test_predicted_vs_measured.png"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(summary))
    assert load_config(SMGConfig, tmp_path / "config.yaml") == config
    kinds = {sub: read_run(tmp_path / sub)["kind"] for sub in ("train_data", "training", "test_data")}
    assert kinds == {"train_data": "inmaterio.smg.acquisition", "training": "inmaterio.smg.training",
                     "test_data": "inmaterio.smg.acquisition"}  # fmt: skip
    assert read_run(tmp_path)["kind"] == "inmaterio.smg" and read_run(tmp_path)["state"] == "finished"
    assert summary["train_data"]["n_points"] == config.sampling.n_samples
    assert summary["test_data"]["n_points"] == config.test_sampling.n_samples
    assert summary["test_metrics"]["rmse_percent_of_range"] < 5.0
    assert summary["consistency"]["consistent"]
    assert summary["timings_s"]["train_s"] == read_run(tmp_path / "training")["wall_s"]

    model = load_surrogate(tmp_path / "model")
    assert model.info.noise_na == pytest.approx(summary["test_metrics"]["rmse_na"])
    assert model.info.provenance["train_data_fingerprint"] == summary["train_data"]["fingerprint"]
    assert model.info.provenance["smg_config"] == config.model_dump(mode="json")
    assert model.info.provenance["device"]["type"] == "analytic"

    # second run of a complete run: nothing is measured or trained again, nothing is rewritten
    before = snapshot(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(MLPTrainer, "step", forbidden)
    monkeypatch.setattr(analytic.AnalyticDevice, "_measure", forbidden)
    again = run_smg(config, tmp_path, progress=False, notify=quiet)
    assert snapshot(tmp_path) == before
    assert again == summary


def small_config(**changes):
    fields = dict(
        device={"type": "analytic", "n_activation": 3},
        sampling={"kind": "lhs", "n_samples": 600, "seed": 0},
        test_sampling={"kind": "uniform", "n_samples": 200, "seed": 1},
        training={"hidden_sizes": [16], "max_epochs": 2},
        consistency_repeats=0,
        iv_points=5,
    )
    return SMGConfig(**{**fields, **changes})


def test_interrupted_pipeline_reuses_finished_stages(tmp_path, monkeypatch):
    """Interrupted after training: the re-run measures only the test set, consistency and I-V points,
    and gets the numbers of an uninterrupted run."""
    config = small_config(
        device={"type": "analytic", "n_activation": 3, "noise_na": 0.5},
        sampling={"kind": "sine", "n_samples": 3000, "seed": 0},
        acquisition={"batch_size": 1000, "progress": False},
        training={"hidden_sizes": [16, 16], "max_epochs": 6, "num_threads": 1},
        consistency_repeats=2,
        consistency_points=100,
    )
    original_measure = analytic.AnalyticDevice._measure
    reference = run_smg(config, tmp_path / "ref", progress=False, notify=quiet)

    def interrupt_at_test_set(self, voltages):
        if (tmp_path / "run" / "training" / "metrics.json").is_file():  # training done: this is the test set
            raise KeyboardInterrupt
        return original_measure(self, voltages)

    with monkeypatch.context() as patch:
        patch.setattr(analytic.AnalyticDevice, "_measure", interrupt_at_test_set)
        with pytest.raises(KeyboardInterrupt, match=f"'{tmp_path / 'run'}' holds the run"):
            run_smg(config, tmp_path / "run", progress=False, notify=quiet)
    assert read_run(tmp_path / "run")["state"] == "interrupted"
    assert read_run(tmp_path / "run" / "training")["state"] == "finished"

    def no_training(*args, **kwargs):
        raise AssertionError("the finished training ran again")

    sizes = []

    def counting(self, voltages):
        sizes.append(len(voltages))
        return original_measure(self, voltages)

    monkeypatch.setattr(MLPTrainer, "step", no_training)
    monkeypatch.setattr(analytic.AnalyticDevice, "_measure", counting)
    summary = run_smg(config, tmp_path / "run", progress=False, notify=quiet)
    assert config.test_sampling.n_samples <= config.acquisition.batch_size  # one call for the test set
    assert sizes == (
        [config.test_sampling.n_samples]
        + [config.consistency_points] * config.consistency_repeats
        + [config.device.n_activation * config.iv_points]
    )
    # the noisy device measured the same numbers as in the uninterrupted run
    for key in ("test_metrics", "consistency", "iv_rmse_device_vs_surrogate_na", "train_data", "test_data", "training"):
        assert summary[key] == reference[key], key


def test_other_config_in_same_directory_is_refused_and_overwrite_replaces_it(tmp_path):
    config = small_config()
    summary = run_smg(config, tmp_path / "run", progress=False, notify=quiet)
    assert summary["consistency"] is None
    before = snapshot(tmp_path / "run")
    other = config.model_copy(update={"iv_points": 7})
    with pytest.raises(ConfigError, match=r"config\.iv_points: 5 in the folder, 7 now.*--overwrite"):
        run_smg(other, tmp_path / "run", progress=False, notify=quiet)
    assert snapshot(tmp_path / "run") == before
    # progress bars and threads change nothing in the result: the finished run is returned
    faster = SMGConfig(**{**config.model_dump(), "training": {**config.training.model_dump(), "num_threads": 1},
                          "acquisition": {"batch_size": 1000, "progress": False}})  # fmt: skip
    assert run_smg(faster, tmp_path / "run", progress=False, notify=quiet) == summary
    messages = []
    replaced = run_smg(other, tmp_path / "run", progress=False, overwrite=True, notify=messages.append)
    assert messages == [f"replacing the finished run in '{tmp_path / 'run'}'"]
    assert replaced["config"]["iv_points"] == 7


def test_run_folder_refusals_before_any_work(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("measured although the folder is unusable")

    monkeypatch.setattr(analytic.AnalyticDevice, "_measure", forbidden)
    stray = tmp_path / "notes.txt"
    stray.write_text("mine")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        run_smg(small_config(), stray, progress=False, notify=quiet)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(RunFolderError, match=r"is not a run folder \(it holds cat.jpg"):
        run_smg(small_config(), foreign, progress=False, notify=quiet)
    assert stray.read_text() == "mine" and sorted(p.name for p in foreign.iterdir()) == ["cat.jpg"]


def test_cli_run_on_an_exact_device_reports_no_noise_floor(tmp_path):
    """A noise-free device has no noise floor: the table says n/a instead of failing on None."""
    from typer.testing import CliRunner

    from inmaterio.cli import app

    config = tmp_path / "exact.yaml"
    config.write_text(yaml.safe_dump(small_config().model_dump(mode="json")))
    result = CliRunner().invoke(app, ["smg", "run", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["test_metrics"]["noise_floor_na"] == 0.0 and summary["test_metrics"]["rmse_over_noise_floor"] is None
    assert "RMSE / noise floor" in result.output and "n/a" in result.output


def test_ensemble_members_train_beside_the_model_and_are_calibrated(tmp_path):
    run = tmp_path / "run"
    noisy = {"type": "analytic", "n_activation": 3, "noise_na": 2.0}
    config = small_config(device=noisy, ensemble_members=3, training={"hidden_sizes": [16], "max_epochs": 5})
    summary = run_smg(config, run, progress=False, notify=quiet)
    ensemble = summary["ensemble"]
    assert ensemble["members"] == 3
    seeds = [read_run(run / "ensemble" / f"member_{k}")["identity"]["config"]["seed"] for k in (1, 2)]
    assert seeds == [config.training.seed + 1, config.training.seed + 2]
    assert not (run / "ensemble" / "member_0").exists()  # member 0 is the tested model in training/
    n_iv = config.device.n_activation * config.iv_points
    for part, n in (("test", 200), ("iv_sweeps", n_iv)):
        report = ensemble[part]
        assert report["n_points"] == n and report["mean_std_na"] > 0
        cal = report["calibration"]
        assert cal["n_points"] == n and 0 <= cal["within_1_sigma"] <= cal["within_2_sigma"] <= 1
    # the spread's calibration is fitted on the validation split, saved, and reproduces the calibrated reports
    fitted = SpreadCalibration.from_dict(json.loads((run / "ensemble" / "calibration.json").read_text()))
    assert ensemble["spread_calibration"] == {"fitted_on": "validation", "n_points": summary["split"]["validation"],
                                              **fitted.as_dict()}  # fmt: skip
    members = load_ensemble([run / "model"] + [run / "ensemble" / f"member_{k}" for k in (1, 2)], fitted)
    test = load_dataset(run / "test_data")
    mean, spread = members.predict_with_std(test.voltages_v)
    raw_spread = members.predict_with_std(test.voltages_v, raw=True)[1]
    np.testing.assert_allclose(spread, np.sqrt((fitted.scale * raw_spread) ** 2 + fitted.floor_na**2), rtol=1e-12)
    assert ensemble["calibrated"]["test"]["mean_std_na"] == pytest.approx(float(np.mean(spread)), rel=1e-5)
    assert ensemble["calibrated"]["test"]["rmse_na"] == ensemble["test"]["rmse_na"]  # the mean is unchanged
    # the run folder itself, and its export, load as the same calibrated ensemble
    from_run = load_ensemble(run)
    assert from_run.calibration == fitted
    np.testing.assert_array_equal(from_run.predict_with_std(test.voltages_v)[1], spread)
    exported = export_smg_model(run, tmp_path / "exported")
    assert sorted(p.name for p in (exported / "ensemble").iterdir()) == ["calibration.json", "member_1", "member_2"]
    again = load_ensemble(exported)
    np.testing.assert_array_equal(again.predict_with_std(test.voltages_v)[0], mean)
    np.testing.assert_array_equal(again.predict_with_std(test.voltages_v)[1], spread)
    assert load_surrogate(exported).info == members.info  # the folder is still one surrogate for everything else
    # a single model exported over it leaves no stale ensemble behind
    single = run_smg(small_config(), tmp_path / "single", progress=False, notify=quiet)
    assert single["ensemble"] is None
    export_smg_model(tmp_path / "single", exported, overwrite=True)
    assert not (exported / "ensemble").exists()
    with pytest.raises(ModelFileError, match=r"holds no ensemble \(no ensemble/member_<k> folders\)"):
        load_ensemble(exported)
    # the default (one surrogate) keeps the identity of runs made before ensembles existed
    assert "ensemble_members" not in smg_identity(small_config())["config"]
    assert smg_identity(config)["config"]["ensemble_members"] == 3
