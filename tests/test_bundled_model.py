"""The bundled default surrogate against its virtual device, on points it has never seen.

The acceptance criterion of the bundled model, checked afresh (not read from
its stored summary): on operating points drawn independently of every
dataset used to make it, measured now by the kinetic Monte Carlo device, the
surrogate's RMSE is within 1.5x the device's own measurement noise and below
2% of the output range.
"""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from inmaterio.cli import app
from inmaterio.devices.hopping import HoppingDevice
from inmaterio.devices.registry import device_config_from_description
from inmaterio.surrogate import load_default_surrogate


@pytest.fixture(scope="module")
def model():
    return load_default_surrogate()


def test_bundled_model_describes_the_default_device(model):
    info = model.info
    assert info.electrode_names == [f"e{k}" for k in range(7)]
    assert info.readout_name == "e7"
    assert all(tuple(r) == (-1.2, 0.6) for r in info.voltage_ranges_v)
    assert info.noise_na is not None and info.noise_na > 0
    cfg = device_config_from_description(info.provenance["device"])
    assert cfg.seed == 0 and cfg.n_acceptors == 200 and cfg.n_donors == 3
    assert model.architecture()["hidden_sizes"] == [90] * 5


def test_bundled_model_matches_fresh_device_measurements(model):
    device = HoppingDevice(device_config_from_description(model.info.provenance["device"]))
    v = np.random.default_rng(20261122).uniform(-1.2, 0.6, (240, 7))
    measured = device.measure_with_error(v)
    predicted = model.predict(v)
    rmse = np.sqrt(np.mean((predicted - measured.current_na) ** 2))
    noise = np.sqrt(np.mean(measured.stderr_na**2))
    output_range = np.ptp(measured.current_na)  # of these points: a little below the full range, conservative
    assert rmse <= 1.5 * noise, f"RMSE {rmse:.2f} nA vs device noise {noise:.2f} nA"
    assert rmse < 0.02 * output_range, f"RMSE {rmse:.2f} nA vs output range {output_range:.1f} nA"


def test_demo_runs(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--points", "3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "iv_curves.png").stat().st_size > 10_000
    rows = json.loads((tmp_path / "demo.json").read_text())["electrodes"]
    assert len(rows) == 7
    xor = json.loads((tmp_path / "demo.json").read_text())["xor"]
    assert xor["surrogate_accuracy"] == 1.0  # XOR found on the bundled surrogate
    # the device column is a fresh KMC measurement of the learned voltages: four currents, in range
    assert len(xor["device_output_na"]) == 4 and all(-300 < i < 300 for i in xor["device_output_na"])
    assert set(xor["controls_v"]) == {"e0", "e1", "e2", "e3", "e6"}
    assert all(-1.2 <= v <= 0.6 for v in xor["controls_v"].values())
    for name in ("outputs_per_class.png", "solution_iv.png", "learning_curve.png"):
        assert (tmp_path / "xor" / name).is_file()
