"""`inmaterio ep train|check`: results folder, resume, errors, and the native-vs-ngspice check."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from typer.testing import CliRunner

from inmaterio.circuits import FIT_KIND
from inmaterio.circuits.examples import EXAMPLES, get_example
from inmaterio.circuits.solve.ngspice import ngspice_available
from inmaterio.cli import app
from inmaterio.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lock"}


def test_ep_train_writes_one_run_folder_resumes_and_reprints(tmp_path):
    out = tmp_path / "xor"
    result = runner.invoke(app, ["ep", "train", "xor", "--epochs", "3", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    for name in (
        "run.json",
        "config.yaml",
        "checkpoint.pt",
        "history.json",
        "history.csv",
        "metrics.json",
        "parameters.safetensors",
        "circuit.cir",
        "learning_curve.png",
        "summary.json",
    ):
        assert (out / name).exists(), name
    record = json.loads((out / "run.json").read_text())
    assert record["kind"] == FIT_KIND and record["state"] == "finished"
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 3 and 0 <= summary["test"]["accuracy"] <= 1
    assert (out / "circuit.cir").read_text().rstrip().endswith(".end")
    history = json.loads((out / "history.json").read_text())
    # the same command again: the results, no training, nothing rewritten
    files = _files(out)
    again = runner.invoke(app, ["ep", "train", "xor", "--epochs", "3", "--out", str(out), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert f"train {summary['train']['accuracy']:.2%}, test {summary['test']['accuracy']:.2%}" in again.output
    assert _files(out) == files
    # more epochs in the same folder continue from epoch 3 (the results are rewritten)
    result = runner.invoke(app, ["ep", "train", "xor", "--epochs", "5", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    resumed = json.loads((out / "history.json").read_text())
    assert len(resumed) == 5 and resumed[:3] == history
    assert json.loads((out / "summary.json").read_text())["epochs"] == 5
    assert json.loads((out / "run.json").read_text())["sessions"] == 2
    # --overwrite starts afresh: a finished run is replaced
    result = runner.invoke(app, ["ep", "train", "xor", "--epochs", "2", "--out", str(out), "--no-progress", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert [r["loss"] for r in json.loads((out / "history.json").read_text())] == [r["loss"] for r in history[:2]]
    assert json.loads((out / "run.json").read_text())["sessions"] == 1


def test_ep_train_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["ep", "train", "mnist-please", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "unknown example 'mnist-please'" in result.output
    with pytest.raises(ConfigError, match="choose one of"):
        get_example("nope")


def test_examples_build_and_load():
    for name, spec in EXAMPLES.items():
        model = spec.build(0)
        data = spec.load(0)
        assert data.x_train.shape[1] == model.input_layers[0].n_features, name
        assert model.n_outputs == 2 * int(data.y_train.max() + 1), name


@pytest.mark.skipif(
    not ngspice_available("shared") and os.environ.get("INMATERIO_REQUIRE_NGSPICE") != "1", reason="libngspice not installed"
)
def test_ep_check_agrees_with_ngspice():
    result = runner.invoke(app, ["ep", "check", "iris", "--samples", "2"])
    assert result.exit_code == 0, result.output
    row = [line for line in result.output.splitlines() if "│" in line and "36" in line][0]
    max_dv = float(row.split("│")[3])
    assert max_dv < 1e-6
