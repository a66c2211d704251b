"""An instrument device is closed when the run, SMG run or ``device iv`` that built it ends, normally or not.

Independent truth: the fake ``nidaqmx`` (tests/fake_nidaqmx.py), which records every driver call and keeps
every task not yet closed (``Task._all``) and the voltage standing at every output terminal
(``driver.outputs``). After the end of each of these, normal or by an exception that is not a driver error
(those zero the outputs on their own), no task may be left open, the last driver calls must be the
on-demand write of 0 V to every output, and every terminal must stand at 0 V.
"""

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from fake_nidaqmx import Task, install
from inmaterio.config import validate_config
from inmaterio.devices.instruments import InstrumentDevice
from inmaterio.devices.registry import DeviceFile, build_device

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ni_device(n: int, **changes) -> dict:
    """An instrument on a cDAQ with ``n`` outputs e0.. in [-1.2, 0.6] V (the bundled surrogate's electrodes) and readout e7."""
    backend = {
        "kind": "nidaq", "setup": "cdaq_to_cdaq", "sample_rate_hz": 1000.0,
        "activation": [{"electrode": f"e{k}", "channel": f"cDAQ1Mod3/ao{k}", "low_v": -1.2, "high_v": 0.6} for k in range(n)],
        "readout": [{"name": "e7", "channel": "cDAQ1Mod4/ai2", "gain_na_per_v": 28.5, "low_v": -4.0, "high_v": 4.0}],
        "read_chunk_samples": 64,
    }  # fmt: skip
    return {"type": "instrument", "backend": backend, "safety": {"hard_limit_v": 1.5, "max_ramp_v_per_s": 200.0},
            "settle_samples": 1, "average_samples": 2, **changes}  # fmt: skip


def assert_released(driver, n: int) -> None:
    """No task left open, the outputs zeroed by the on-demand task last, every terminal at 0 V."""
    assert Task._all == [], [t.name for t in Task._all]
    assert ("inmaterio_activation", "Task") in driver.methods()  # something was played
    closing = driver.methods()[-(n + 8) :]
    assert closing == [("inmaterio_readout", "stop"), ("inmaterio_activation", "stop"), ("inmaterio_activation", "close"),
                       ("inmaterio_readout", "close"), ("inmaterio_zero", "Task"), *[("inmaterio_zero", "add_ao_voltage_chan")] * n,
                       ("inmaterio_zero", "write"), ("inmaterio_zero", "stop"), ("inmaterio_zero", "close")]  # fmt: skip
    np.testing.assert_array_equal(driver.calls[-3][2][0], np.zeros(n))
    assert driver.outputs == {f"cDAQ1Mod3/ao{k}": 0.0 for k in range(n)}


def test_the_base_device_closes_as_a_no_op_and_an_instrument_in_a_with_block_is_released(monkeypatch):
    with build_device(validate_config(DeviceFile, {"device": {"type": "analytic", "n_activation": 2}}).device) as device:
        device.measure(np.zeros((1, 2)))
    device.close()  # twice is fine
    driver = install(monkeypatch)
    with InstrumentDevice(ni_device(2)) as instrument:
        instrument.measure(np.array([[-0.5, 0.2], [0.3, -0.6]]))
        assert {t.name for t in Task._all} == {"inmaterio_activation", "inmaterio_readout"}  # open between plays
    assert_released(driver, 2)
    instrument.close()  # nothing open: no driver call
    assert driver.methods()[-1] == ("inmaterio_zero", "close")


@pytest.mark.parametrize("fail", [False, True])
def test_device_iv_releases_the_instrument(tmp_path, monkeypatch, fail):
    import inmaterio.smg.iv as iv
    from inmaterio.cli import app

    driver = install(monkeypatch)
    config = tmp_path / "ni.yaml"
    config.write_text(yaml.safe_dump({"device": ni_device(2)}))
    if fail:  # the sweep is measured (the tasks are open), then something that is not a driver error stops the run
        sweep = iv.iv_curves

        def failing(measure, ranges, points):
            sweep(measure, ranges, points)
            raise RuntimeError("the plotting library crashed")

        monkeypatch.setattr(iv, "iv_curves", failing)
    result = CliRunner().invoke(app, ["device", "iv", "--config", str(config), "--out", str(tmp_path / "iv"), "--points", "3"])
    if fail:
        assert isinstance(result.exception, RuntimeError), result.output
    else:
        assert result.exit_code == 0, result.output
    assert_released(driver, 2)


@pytest.mark.parametrize("fail", [False, True])
def test_an_smg_run_releases_the_instrument(tmp_path, monkeypatch, fail):
    import inmaterio.smg.pipeline as pipeline
    from inmaterio.smg import SMGConfig, run_smg

    driver = install(monkeypatch)
    config = validate_config(SMGConfig, {
        "device": ni_device(2), "sampling": {"kind": "uniform", "n_samples": 40, "seed": 0},
        "test_sampling": {"kind": "uniform", "n_samples": 10, "seed": 1}, "acquisition": {"batch_size": 20, "progress": False},
        "training": {"hidden_sizes": [8], "max_epochs": 2, "batch_size": 16, "num_threads": 1},
        "consistency_repeats": 0, "iv_points": 3,
    })  # fmt: skip
    if fail:  # the training data were measured (the tasks are open), then the post-processing fails
        monkeypatch.setattr(pipeline, "postprocess", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
        with pytest.raises(RuntimeError, match="disk full"):
            run_smg(config, tmp_path / "smg", progress=False, notify=lambda m: None)
    else:
        run_smg(config, tmp_path / "smg", progress=False, notify=lambda m: None)
    assert_released(driver, 2)


def test_inmaterio_run_releases_the_instrument_when_interrupted_and_when_finished(tmp_path, monkeypatch):
    """Gates evolved on the device (GA) and validated on it, on the fake NI card: interrupted before the
    validation by an error that is not the driver's, then resumed to the end."""
    import inmaterio.tasks.validation as validation
    from inmaterio.tasks import RunConfig, run_task

    driver = install(monkeypatch)
    config = validate_config(RunConfig, {
        "task": {"type": "gates", "gates": ["XOR"], "input_electrodes": ["e3", "e4"], "algorithm": "ga", "train_on": "device",
                 "loss": "corrsig", "attempts": 1,
                 "ga": {"population_size": 6, "n_elite": 2, "generations": 2, "target_fitness": None}},
        "validation": {"enabled": True, "plateau_samples": 2, "ramp_samples": 2, "device": ni_device(7)},
        "seed": 0,
    })  # fmt: skip

    def interrupt(*args, **kwargs):
        raise RuntimeError("interrupted")

    with monkeypatch.context() as patch:
        patch.setattr(validation, "validate_layer", interrupt)
        with pytest.raises(RuntimeError, match="interrupted"):
            run_task(config, tmp_path / "run", progress=False)
    assert_released(driver, 7)
    driver.calls.clear()
    run_task(config, tmp_path / "run", progress=False)
    assert_released(driver, 7)
