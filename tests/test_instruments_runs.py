"""One measurement file per run: `inmaterio run`, an SMG acquisition and `device iv` on a simulated DAQ.

Independent truths: what h5py alone reads back from the run folder (the
points played must be the task's, the plan's or the sweep's; the currents in
the file must be those the run reports), and the rule that nothing measured is
ever lost: an interrupted run resumed appends a new session and leaves the
first one byte for byte as it was.
"""

from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from inmaterio.config import validate_config
from inmaterio.devices.instruments import RUN_MEASUREMENT_FILE, InstrumentDevice, measurements_in, run_measurement_file
from inmaterio.devices.registry import DeviceFile, build_device

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "instruments"
DAQ = {"type": "instrument", "backend": {"kind": "simulated", "device": {"type": "analytic", "n_activation": 3, "noise_na": 0.2,
       "seed": 1}, "settling_tau_s": 0.0005, "adc_noise_v": 0.001, "seed": 2}, "settle_samples": 4, "average_samples": 2,
       "safety": {"max_ramp_v_per_s": 500.0}}  # fmt: skip


def snapshot(path: Path) -> dict[str, dict]:
    """Every dataset (by its path in the file) and the attributes of every group, read with h5py alone."""
    out: dict[str, dict] = {}
    with h5py.File(path, "r") as f:
        out["/"] = dict(f.attrs)

        def visit(name, obj):
            out[name] = {"data": obj[()]} if isinstance(obj, h5py.Dataset) else dict(obj.attrs)

        f.visititems(visit)
    return out


def assert_same(before: dict, after: dict) -> None:
    """Every entry of ``before`` is in ``after`` unchanged."""
    for name, value in before.items():
        assert name in after, name
        if "data" in value:
            np.testing.assert_array_equal(after[name]["data"], value["data"], err_msg=name)
        else:
            assert after[name] == value, name


def acquisitions(path: Path, session: str) -> list[dict[str, np.ndarray]]:
    with h5py.File(path, "r") as f:
        return [{k: g[k][()] for k in g} | {"attrs": dict(g.attrs)} for _, g in sorted(f[session].items())]


def test_the_run_context_is_scoped_and_an_explicit_file_wins(tmp_path):
    device = build_device(validate_config(DeviceFile, {"device": DAQ}).device)
    assert run_measurement_file() is None and device.measurement_path is None
    with measurements_in(tmp_path / "outer.h5"):
        with measurements_in(tmp_path / "inner.h5", keep_outer=True) as kept:
            assert kept == tmp_path / "outer.h5"
        with measurements_in(tmp_path / "inner.h5"):
            assert device.measurement_path == tmp_path / "inner.h5"
        device.measure(np.zeros((2, 3)))
        named = build_device(
            validate_config(DeviceFile, {"device": {**DAQ, "measurement_file": str(tmp_path / "named.h5")}}).device
        )
        assert named.measurement_path == tmp_path / "named.h5"
    assert run_measurement_file() is None and device.measurement_path is None
    device.measure(np.zeros((2, 3)))  # outside a run and without a file: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outer.h5"]
    assert [len(a["points_v"]) for a in acquisitions(tmp_path / "outer.h5", "session_0000")] == [2]


def test_the_gates_ga_example_writes_its_measurements_in_the_run_folder_and_a_resume_appends(tmp_path, monkeypatch):
    """examples/instruments/gates_ga_simulated_daq.yaml (names no measurement_file), shrunk: GA on the device,
    interrupted before the validation, resumed: one file in the run folder, two sessions, the first untouched."""
    import inmaterio.tasks.validation as validation
    from inmaterio.tasks import RunConfig, run_task

    raw = yaml.safe_load((EXAMPLES / "gates_ga_simulated_daq.yaml").read_text())
    assert "measurement_file" not in raw["validation"]["device"]  # the example's file is the run's
    raw["task"]["ga"] = {"population_size": 6, "n_elite": 2, "generations": 2, "target_fitness": None}
    config = validate_config(RunConfig, raw)
    run = tmp_path / "run"

    class Interrupted(Exception):
        pass

    def interrupt(*args, **kwargs):
        raise Interrupted

    monkeypatch.setattr(validation, "validate_layer", interrupt)
    with pytest.raises(Interrupted):
        run_task(config, run, progress=False)
    file = run / RUN_MEASUREMENT_FILE
    first = snapshot(file)
    with h5py.File(file, "r") as f:
        assert f.attrs["format"] == "inmaterio.measurements" and list(f) == ["session_0000"]
    evolved = acquisitions(file, "session_0000")
    assert len(evolved) >= 3  # the GA measured its generations on the instrument
    for a in evolved:
        latency = a["attrs"]["latency_samples"]
        assert a["waveform_v"].shape[1] == 7 and a["readout_v"].shape == (len(a["waveform_v"]) + latency, 1)
        assert a["current_na"].shape == (len(a["waveform_v"]), 1) and a["points_v"].shape[1] == 7
        np.testing.assert_array_equal(a["waveform_v"][[0, -1]], 0.0)  # from and back to 0 V

    monkeypatch.undo()
    outcome = run_task(config, run, progress=False)
    after = snapshot(file)
    assert_same(first, after)  # nothing measured before the interruption is lost or changed
    with h5py.File(file, "r") as f:
        assert list(f) == ["session_0000", "session_0001"]
    # the resumed run re-evaluates the evolved controls on the device, then validates them (the last acquisition):
    # the four XOR inputs on e0, e1 held for plateau_samples = 2, between ramps of 2 samples
    validated = acquisitions(file, "session_0001")[-1]
    assert validated["points_v"].shape == (2 + 4 * 2 + 2, 7)
    held = validated["points_v"][2:-2].reshape(4, 2, 7)
    np.testing.assert_array_equal(held[:, 0], held[:, 1])  # each input held for two samples
    assert len({tuple(p) for p in held[:, 0, :2]}) == 4  # four distinct inputs on e0, e1
    np.testing.assert_array_equal(held[:, 0, 2:], np.repeat(held[:1, 0, 2:], 4, axis=0))  # the same controls
    plateaus = validated["point_current_na"][2:-2].reshape(4, 2).mean(axis=1)
    np.testing.assert_allclose(plateaus, outcome.metrics["gates"]["XOR"]["device_output_na"], rtol=1e-6, atol=1e-9)
    assert outcome.metrics["device"]["device"]["measurement_file"] is None

    run_task(config, run, progress=False)  # finished: read back, nothing measured
    assert sorted(snapshot(file)) == sorted(after)


def test_an_smg_acquisition_keeps_its_measurements_and_a_resume_adds_a_session(tmp_path, monkeypatch):
    from inmaterio.smg.acquire import acquire
    from inmaterio.smg.config import AcquisitionConfig

    plan = np.random.default_rng(0).uniform(-1.0, 0.5, (10, 3))
    config = AcquisitionConfig(batch_size=4, progress=False)
    device = build_device(validate_config(DeviceFile, {"device": DAQ}).device)
    play, plays = device.backend.play, []

    def failing_play(waveform, key):
        plays.append(len(waveform))
        if len(plays) == 3:
            raise RuntimeError("the DAQ stopped")
        return play(waveform, key)

    monkeypatch.setattr(device.backend, "play", failing_play)
    with pytest.raises(RuntimeError, match="the DAQ stopped"):
        acquire(device, plan, tmp_path / "acq", config)
    file = tmp_path / "acq" / RUN_MEASUREMENT_FILE
    first = snapshot(file)
    assert [a["points_v"].tolist() for a in acquisitions(file, "session_0000")] == [plan[:4].tolist(), plan[4:8].tolist()]

    again = build_device(validate_config(DeviceFile, {"device": DAQ}).device)  # a new process builds a new device
    dataset = acquire(again, plan, tmp_path / "acq", config)
    assert_same(first, snapshot(file))
    resumed = acquisitions(file, "session_0001")
    assert [a["points_v"].tolist() for a in resumed] == [plan[8:].tolist()]
    measured = np.concatenate([a["point_current_na"] for a in acquisitions(file, "session_0000") + resumed])
    np.testing.assert_array_equal(measured, dataset.current_na)  # the file holds the currents the dataset reports

    with measurements_in(tmp_path / "smg.h5"):  # inside an enclosing run, its file takes the acquisition
        acquire(build_device(validate_config(DeviceFile, {"device": DAQ}).device), plan[:3], tmp_path / "acq2", config)
    assert not (tmp_path / "acq2" / RUN_MEASUREMENT_FILE).exists()
    assert [a["points_v"].tolist() for a in acquisitions(tmp_path / "smg.h5", "session_0000")] == [plan[:3].tolist()]


def test_device_iv_writes_the_sweep_in_its_run_folder(tmp_path):
    import json

    from inmaterio.cli import app

    config = tmp_path / "daq.yaml"
    config.write_text(yaml.safe_dump({"device": DAQ}))
    out = tmp_path / "iv"
    result = CliRunner().invoke(app, ["device", "iv", "--config", str(config), "--out", str(out), "--points", "3"])
    assert result.exit_code == 0, result.output
    iv = json.loads((out / "iv.json").read_text())
    played = acquisitions(out / RUN_MEASUREMENT_FILE, "session_0000")
    points = np.concatenate([a["points_v"] for a in played])
    sweep = np.array(iv["sweep_v"])  # (electrode, point): electrode k swept, the others at base_v
    expected = np.repeat(np.array(iv["base_v"])[None, None, :], 3, axis=1).repeat(3, axis=0)
    for k in range(3):
        expected[k, :, k] = sweep[k]
    np.testing.assert_allclose(points, expected.reshape(9, 3))
    np.testing.assert_allclose(np.concatenate([a["point_current_na"] for a in played]), np.ravel(iv["current_na"]))
    before = snapshot(out / RUN_MEASUREMENT_FILE)
    again = CliRunner().invoke(app, ["device", "iv", "--config", str(config), "--out", str(out), "--points", "3"])
    assert again.exit_code == 0 and "already holds this sweep" in " ".join(again.output.split())
    assert sorted(snapshot(out / RUN_MEASUREMENT_FILE)) == sorted(before)


def test_an_instrument_device_opens_one_session_per_file(tmp_path):
    device = InstrumentDevice(DAQ)
    for name in ("a.h5", "b.h5", "a.h5"):
        with measurements_in(tmp_path / name):
            device.measure(np.zeros((1, 3)))
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert list(f) == ["session_0000"] and len(f["session_0000"]) == 2
    with h5py.File(tmp_path / "b.h5", "r") as f:
        assert list(f) == ["session_0000"] and len(f["session_0000"]) == 1
