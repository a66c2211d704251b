"""The command line: every subcommand has help, errors are one clear line with exit code 2."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from inmaterio.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args", [[], ["smg"], ["device"], ["surrogate"]])
def test_help_lists_subcommands(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_device_measure_on_analytic_device(tmp_path):
    cfg = tmp_path / "dev.yaml"
    cfg.write_text("device: {type: analytic, n_activation: 3, noise_na: 0.0}\n")
    result = runner.invoke(app, ["device", "measure", "0,0,0", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "I = 0.000 ± 0.000 nA" in result.output


@pytest.mark.parametrize(
    "voltages, message",
    [("0,0,0.9", "electrode 'e2' voltage 0.9 V"), ("0,0", "shape (batch, 3)"), ("0,a,0", "numbers separated by commas")],
)
def test_device_measure_bad_voltages(tmp_path, voltages, message):
    cfg = tmp_path / "dev.yaml"
    cfg.write_text("device: {type: analytic, n_activation: 3}\n")
    result = runner.invoke(app, ["device", "measure", voltages, "--config", str(cfg)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_unknown_config_key_is_named(tmp_path):
    cfg = tmp_path / "dev.yaml"
    cfg.write_text("device: {type: analytic, n_activaton: 3}\n")
    result = runner.invoke(app, ["device", "measure", "0,0,0", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "unknown key 'device.analytic.n_activaton'" in " ".join(result.output.split())


def test_smg_run_export_and_info(tmp_path):
    config = yaml.safe_load((ROOT / "examples" / "smg_analytic.yaml").read_text())
    config["sampling"]["n_samples"] = 3000
    config["test_sampling"]["n_samples"] = 500
    config["training"]["max_epochs"] = 5
    config["acquisition"]["progress"] = False
    path = tmp_path / "smg.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    result = runner.invoke(app, ["smg", "run", str(path), "--out", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "test RMSE / nA" in result.output
    summary = json.loads((run / "metrics.json").read_text())
    dest = tmp_path / "exported"
    assert runner.invoke(app, ["smg", "export", str(run), "--to", str(dest)]).exit_code == 0
    assert sorted(p.name for p in dest.iterdir()) == ["model.json", "summary.json", "weights.safetensors"]
    assert json.loads((dest / "summary.json").read_text()) == summary
    # the destination exists now: a second export must refuse and keep it
    before = (dest / "weights.safetensors").read_bytes()
    again = runner.invoke(app, ["smg", "export", str(run), "--to", str(dest)])
    assert again.exit_code == 2
    assert "holds a model already (pass --overwrite" in " ".join(again.output.split())
    assert (dest / "weights.safetensors").read_bytes() == before
    info = runner.invoke(app, ["surrogate", "info", str(dest)])
    assert info.exit_code == 0, info.output
    assert f"{summary['noise_na']}" in info.output
    assert "e6" in info.output


def test_export_of_unfinished_run_is_refused(tmp_path):
    result = runner.invoke(app, ["smg", "export", str(tmp_path), "--to", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "not a finished SMG run" in result.output


def test_import_brainspy_refuses_garbage(tmp_path):
    bad = tmp_path / "training_data.pt"
    bad.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["surrogate", "import-brainspy", str(bad), str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "training_data.pt" in result.output
    assert not (tmp_path / "out").exists()
