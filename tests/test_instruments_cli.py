"""``inmaterio device dry-run`` and ``device calibrate`` on a simulated DAQ (the analytic device behind it).

Independent truths: the ramp limit and ranges in the config, the closed-form
current of the analytic device, the files the commands must (not) write.
"""

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from inmaterio.cli import app
from inmaterio.config import load_config
from inmaterio.devices.registry import DeviceFile, build_device

pytestmark = pytest.mark.usefixtures("one_torch_thread")

runner = CliRunner()
CONFIG = """
device:
  type: instrument
  backend:
    kind: simulated
    device: {type: analytic, n_activation: 3, low_v: -1.0, high_v: 1.0}
    settling_tau_s: [0.002, 0.004, 0.001]
    adc_bits: null
    latency_samples: 2
    amplifier_offset_v: 0.01
  safety: {max_ramp_v_per_s: 50.0}
  average_samples: 2
"""


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_dry_run_plays_nothing(tmp_path):
    cfg = tmp_path / "daq.yaml"
    cfg.write_text(CONFIG)
    result = runner.invoke(app, ["device", "dry-run", "--config", str(cfg), "--random", "5", "--plot", str(tmp_path / "w.png")])
    assert result.exit_code == 0, result.output
    assert "dry run OK: 5 points, 1 waveform(s)" in one_line(result.output) and "nothing was played" in result.output
    assert (tmp_path / "w.png").is_file()
    points = tmp_path / "points.csv"
    points.write_text("0.1,0.2,0.3\n0.5,1.5,0\n")
    result = runner.invoke(app, ["device", "dry-run", "--config", str(cfg), "--points", str(points)])
    assert result.exit_code == 2 and "electrode 'e1' voltage 1.5 V in sample 1 outside [-1.0, 1.0] V" in one_line(result.output)


def test_calibrate_writes_a_calibrated_config_and_never_overwrites(tmp_path):
    cfg = tmp_path / "daq.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "calibrated.yaml"
    result = runner.invoke(app, ["device", "calibrate", "--config", str(cfg), "--out", str(out), "--hold-samples", "120"])
    assert result.exit_code == 0, result.output
    text = one_line(result.output)
    assert "latency 2 samples; offset [0.5] nA" in text and "recommended settle_samples" in text
    device = build_device(load_config(DeviceFile, out).device)
    assert device.config.calibration.latency_samples == 2 and device.config.settle_samples > 0
    points = np.random.default_rng(0).uniform(-1.0, 1.0, (6, 3))
    error = np.abs(device.measure(points) - device.backend.device.true_current(points)).max()
    assert error < 1.0, error  # the settling left is 1 % (the default tolerance) of steps well below 100 nA
    before = out.read_text()
    again = runner.invoke(app, ["device", "calibrate", "--config", str(cfg), "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output and out.read_text() == before
    wrong = tmp_path / "analytic.yaml"
    wrong.write_text(yaml.safe_dump({"device": {"type": "analytic"}}))
    result = runner.invoke(app, ["device", "calibrate", "--config", str(wrong), "--out", str(tmp_path / "x.yaml")])
    assert result.exit_code == 2 and "needs type 'instrument'" in one_line(result.output)
