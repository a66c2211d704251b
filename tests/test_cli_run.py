"""``inmaterio run CONFIG.yaml``: a finished run prints its table; a bad config is one message, exit code 2."""

import json

import pytest
from typer.testing import CliRunner

from inmaterio.cli import app

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_run_help():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output and "--overwrite" in result.output and "--out" in result.output


def test_run_gates_prints_table_and_writes_results(tmp_path):
    cfg = tmp_path / "and.yaml"
    cfg.write_text(
        "task: {type: gates, gates: [AND], input_electrodes: [e3, e4], attempts: 2, gd: {epochs: 40}}\n"
        "validation: {device: {type: analytic}, plateau_samples: 2, ramp_samples: 2}\n"
        "seed: 1\n"
    )
    out = tmp_path / "results"
    # six columns: on an 80-column terminal Rich wraps the headers over two lines
    result = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--no-progress"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    text = _flat(result.output)
    assert "Boolean gates" in text and "AND" in text and "surrogate acc." in text and "results:" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"{metrics['gates']['AND']['surrogate_accuracy']:.0%}" in text
    assert metrics["device"]["plateau_samples"] == 2
    # a second run into the same folder prints the stored table and changes nothing
    before = (out / "metrics.json").read_bytes()
    again = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert f"{metrics['gates']['AND']['surrogate_accuracy']:.0%}" in _flat(again.output)
    assert (out / "metrics.json").read_bytes() == before
    # the same folder with another seed is refused, naming the field
    cfg.write_text(cfg.read_text().replace("seed: 1", "seed: 2"))
    other = runner.invoke(app, ["run", str(cfg), "--out", str(out), "--no-progress"])
    assert other.exit_code == 2
    assert "config.seed: 1 in the folder, 2 now" in _flat(other.output) and "--overwrite" in other.output


@pytest.mark.parametrize(
    "yaml_text, named",
    [
        ("task: {type: gates, gatez: [AND]}\n", "unknown key 'task.gates.gatez'"),
        ("task: {type: capacity, n_points: [12]}\n", "n_points must be a non-empty list of values in 4..10"),
        ("task: {type: rings, gap: 2}\n", "field 'task.rings.gap' = 2"),
        ("task: [gates\n", "is not valid YAML"),
    ],
)
def test_run_bad_config_is_one_message(tmp_path, yaml_text, named):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    result = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"])
    assert result.exit_code == 2
    assert result.output.startswith("error:") and "Traceback" not in result.output
    assert named in _flat(result.output)
    assert not (tmp_path / "out").exists()


def test_run_missing_config(tmp_path):
    result = runner.invoke(app, ["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
