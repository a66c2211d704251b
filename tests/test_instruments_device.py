"""InstrumentDevice: the Device interface on an instrument, its safety, interruption, files, dry run, registry.

Independent truths: the rules of the Device interface (``check_device``), the
analytic device's closed form behind a noise-free simulated DAQ, the limits
written in the config, what h5py alone reads back from a measurement file, and
the state of the outputs after an interruption.
"""

import json
import os
import signal

import h5py
import numpy as np
import pytest

from inmaterio.config import validate_config
from inmaterio.devices import check_device
from inmaterio.devices.instruments import InstrumentDevice, TerminatedError, dry_run
from inmaterio.devices.instruments import device as device_module
from inmaterio.devices.registry import DEVICE_TYPES, DeviceFile, build_device, device_from_description
from inmaterio.errors import ConfigError, ModelFileError, VoltageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ANALYTIC = {"type": "analytic", "n_activation": 3, "low_v": -1.0, "high_v": 1.0, "amplitude_na": 100.0}
EXACT = {"type": "instrument", "backend": {"kind": "simulated", "device": ANALYTIC, "adc_bits": None}, "average_samples": 1,
         "safety": {"max_ramp_v_per_s": 200.0}}  # fmt: skip
NOISY = {"type": "instrument", "backend": {"kind": "simulated", "device": {**ANALYTIC, "noise_na": 0.5, "seed": 3},
         "settling_tau_s": 0.001, "adc_noise_v": 0.002, "adc_bits": 20, "seed": 2}, "settle_samples": 8, "average_samples": 4,
         "safety": {"max_ramp_v_per_s": 200.0}, "chunk_points": 3}  # fmt: skip


def spec(config: dict) -> InstrumentDevice:
    return build_device(validate_config(DeviceFile, {"device": config}).device)


@pytest.mark.parametrize("config", [EXACT, NOISY], ids=["exact", "noisy-settling"])
def test_conformance(config):
    device = spec(config)
    assert isinstance(device, InstrumentDevice) and "instrument" in DEVICE_TYPES
    check_device(device)


def test_exact_instrument_measures_the_closed_form_and_rebuilds():
    device = spec(EXACT)
    points = np.random.default_rng(0).uniform(-1.0, 1.0, (7, 3))
    np.testing.assert_allclose(device.measure(points), device.backend.device.true_current(points), rtol=1e-12, atol=1e-12)
    rebuilt = device_from_description(json.loads(json.dumps(device.describe())))
    assert rebuilt.describe() == device.describe() and rebuilt.describe()["backend"]["device"]["type"] == "analytic"


def test_waveform_from_points_is_safe_and_holds_each_point():
    device = spec({**NOISY, "settle_samples": 5, "average_samples": 3})
    points = np.array([[0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [-1.0, 1.0, 0.2]])
    waveform, starts = device.build_waveform(points)
    device.backend.check(waveform)  # starts and ends at 0 V, within ranges and the ramp limit
    step = 200.0 / 1000.0
    assert np.all(waveform[0] == 0) and np.all(waveform[-1] == 0)
    assert np.max(np.abs(np.diff(waveform, axis=0))) <= step * (1 + 1e-12)
    for point, s in zip(points, starts):
        held = waveform[s - 5 : s + 3]  # the settle samples and the averaged ones all hold the point
        np.testing.assert_array_equal(held, np.repeat(point[None, :], 8, axis=0))
    assert starts[1] - starts[0] == 8  # a repeated point needs no ramp: its hold follows at once


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="readout 'x' is not a readout channel"):
        spec({**EXACT, "readout": "x"})
    with pytest.raises(ConfigError, match="calibration.offset_na has 2 values for 1 readout"):
        spec({**EXACT, "calibration": {"offset_na": [0.0, 1.0]}})
    with pytest.raises(ConfigError, match="not another 'instrument'"):
        spec({**EXACT, "backend": {"kind": "simulated", "device": EXACT}})
    with pytest.raises(ConfigError, match=r"electrode 'e0' range \[-1.0, 1.0\] V goes beyond the hard limit \[-0.8, 0.8\]"):
        spec({**EXACT, "safety": {"hard_limit_v": 0.8}})


def interrupting(device: InstrumentDevice, on_play: int, action) -> list:
    """Make the backend run ``action`` (raise, or send a signal) on play number ``on_play``; the outputs stand at 0.7 V then."""
    original = device.backend._play
    plays = []

    def play(waveform, key):
        plays.append(len(waveform))
        if len(plays) == on_play:
            device.backend.output_v = np.full(len(device.backend.activation), 0.7)  # mid-waveform
            action()
        return original(waveform, key)

    device.backend._play = play
    return plays


def test_ctrl_c_sets_outputs_to_zero_and_keeps_what_was_measured(tmp_path):
    path = tmp_path / "lab" / "measurements.h5"
    device = spec({**NOISY, "measurement_file": str(path)})
    points = np.random.default_rng(1).uniform(-0.9, 0.9, (8, 3))  # 3 chunks of 3, 3, 2 points

    def ctrl_c():
        raise KeyboardInterrupt

    plays = interrupting(device, 3, ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        device.measure(points)
    assert len(plays) == 3 and np.all(device.backend.output_v == 0.0)
    with h5py.File(path, "r") as f:  # h5py alone: two chunks measured and kept
        assert f.attrs["format"] == "inmaterio.measurements"
        session = f["session_0000"]
        assert sorted(session) == ["acquisition_000000", "acquisition_000001"]
        instrument = json.loads(session.attrs["instrument"])
        assert instrument == device.describe() and instrument["backend"]["kind"] == "simulated"
        assert json.loads(session.attrs["calibration"])["latency_samples"] == 0
        first = session["acquisition_000000"]
        np.testing.assert_array_equal(first["points_v"][()], points[:3])
        waveform = first["waveform_v"][()]
        assert waveform.shape[1] == 3 and np.all(waveform[[0, -1]] == 0)
        assert first["readout_v"].shape == (len(waveform), 1) and first["current_na"].shape == (len(waveform), 1)
        assert first.attrs["sample_rate_hz"] == 1000.0 and json.loads(first.attrs["electrodes"]) == ["e0", "e1", "e2"]
        current = first["current_na"][()][:, 0]
        means = [current[s:e].mean() for s, e in zip(first["window_start"][()], first["window_stop"][()])]
        np.testing.assert_allclose(first["point_current_na"][()], means, rtol=1e-12)
    # the same measurement again: a new session, the old one untouched
    again = spec({**NOISY, "measurement_file": str(path)})
    again.measure(points[:2])
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["session_0000", "session_0001"] and len(f["session_0000"]) == 2


def test_sigterm_sets_outputs_to_zero_and_restores_the_handler():
    device = spec(NOISY)
    before = signal.getsignal(signal.SIGTERM)
    interrupting(device, 2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(TerminatedError, match="SIGTERM"):
        device.measure(np.full((5, 3), 0.3))
    assert np.all(device.backend.output_v == 0.0)
    assert signal.getsignal(signal.SIGTERM) is before


def test_refused_files_are_not_touched(tmp_path):
    foreign = tmp_path / "other.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=[1, 2, 3])
    device = spec({**EXACT, "measurement_file": str(foreign)})
    with pytest.raises(ModelFileError, match="not an inmaterio measurement file"):
        device.measure([[0.1, 0.2, 0.3]])
    with h5py.File(foreign, "r") as f:
        assert list(f) == ["x"] and list(f["x"][()]) == [1, 2, 3]


def test_dry_run_checks_and_plots_without_playing(tmp_path):
    device = spec(NOISY)
    points = np.random.default_rng(2).uniform(-1.0, 1.0, (7, 3))
    result = dry_run(device, points, plot=tmp_path / "waveform.png")
    assert device.backend.plays == 0 and (tmp_path / "waveform.png").stat().st_size > 0
    assert len(result.waveforms_v) == 3 and result.duration_s == result.n_samples / 1000.0
    assert result.max_ramp_v_per_s <= 200.0 * (1 + 1e-9)
    with pytest.raises(VoltageError, match=r"electrode 'e2' voltage 1.5 V in sample 1 outside \[-1.0, 1.0\] V"):
        dry_run(device, [[0, 0, 0], [0, 0, 1.5]])
    assert device.backend.plays == 0


def test_progress_bar_counts_the_points(monkeypatch):
    seen = {}

    class Bar:
        def advance(self, amount):
            seen["done"] = seen.get("done", 0) + amount

    from contextlib import contextmanager

    @contextmanager
    def recording(total, description, unit, enabled):
        seen.update(total=total, unit=unit, enabled=enabled, description=description)
        yield Bar()

    monkeypatch.setattr(device_module, "progress_bar", recording)
    spec(NOISY).measure(np.zeros((8, 3)))
    assert seen == {"total": 8, "unit": "pts", "enabled": True, "description": "measuring on SimulatedDAQ", "done": 8}
    spec({**NOISY, "progress": False}).measure(np.zeros((8, 3)))
    assert seen["enabled"] is False


def test_a_gates_task_runs_unchanged_on_the_simulated_daq(tmp_path):
    """The gates task validates on an instrument device named in its config; each run writes its measurement file."""
    from inmaterio.tasks import RunConfig, run_task

    instrument = {"type": "instrument", "backend": {"kind": "simulated", "device": {"type": "analytic"},
                  "settling_tau_s": 0.002, "adc_noise_v": 0.0005}, "settle_samples": 12, "average_samples": 2,
                  "measurement_file": str(tmp_path / "gates.h5")}  # fmt: skip
    config = validate_config(RunConfig, {"task": {"type": "gates", "gates": ["AND"], "attempts": 1, "gd": {"epochs": 20}},
                                         "validation": {"device": instrument, "plateau_samples": 2, "ramp_samples": 2}})  # fmt: skip
    run_task(config, tmp_path / "run", progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["device"]["device"]["type"] == "instrument"
    assert not (tmp_path / "run" / "measurements.h5").exists()  # the file the config names takes every acquisition
    with h5py.File(tmp_path / "gates.h5", "r") as f:
        acquisitions = f["session_0000"]
        assert len(acquisitions) >= 1
        points = np.concatenate([g["points_v"][()] for g in acquisitions.values()])
    assert points.shape[1] == 7 and len(points) >= 4 * 2  # the 4 gate inputs x plateau samples at least


def test_example_configs_validate_and_build():
    """examples/instruments: the device files build (the NI ones without nidaqmx), the run configs validate."""
    from pathlib import Path

    from inmaterio.config import load_config
    from inmaterio.smg import SMGConfig
    from inmaterio.tasks import RunConfig

    folder = Path(__file__).resolve().parents[1] / "examples" / "instruments"
    names = sorted(p.name for p in folder.glob("*.yaml"))
    assert names == ["gates_ga_simulated_daq.yaml", "gates_gd_simulated_daq.yaml", "nidaq_cdaq_to_cdaq.yaml", "nidaq_cdaq_to_nidaq.yaml",
                     "simulated_daq.yaml", "smg_simulated_daq.yaml"]  # fmt: skip
    for name in ("nidaq_cdaq_to_cdaq.yaml", "nidaq_cdaq_to_nidaq.yaml"):
        device = InstrumentDevice(load_config(DeviceFile, folder / name).device)
        assert device.n_activation == 7 and device.readout_name == "e7" and device.backend.plays == 0
    assert load_config(DeviceFile, folder / "simulated_daq.yaml").device.backend.device["type"] == "hopping"
    for name in ("gates_gd_simulated_daq.yaml", "gates_ga_simulated_daq.yaml"):
        assert load_config(RunConfig, folder / name).validation.device.type == "instrument"
    assert load_config(SMGConfig, folder / "smg_simulated_daq.yaml").device.type == "instrument"
