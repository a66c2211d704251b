"""The NI-DAQmx backend against a fake ``nidaqmx`` that records every driver call (tests/fake_nidaqmx.py).

Independent truths: the exact sequence of driver calls written out by hand
(task creation, channels with their limits, sample clock, start trigger, one
write, start order, chunked reads, stop); the fake's output terminals (what
stands on the chip's electrodes) after errors; the fake's readings (0.1 V per
volt summed over the outputs) turned into currents by the gain.

Tests on real hardware run only when ``INMATERIO_NIDAQ_CONFIG`` names an
instrument YAML file (``device: {type: instrument, backend: {kind: nidaq, ...}}``).
"""

import os
import sys

import numpy as np
import pytest

from fake_nidaqmx import AcquisitionType, DaqError, Signal, TerminalConfiguration, install
from inmaterio.config import validate_config
from inmaterio.devices.instruments import InstrumentDevice, InstrumentError, NIDAQBackend, NIDAQConfig, SafetyConfig
from inmaterio.errors import ConfigError, VoltageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CDAQ = {
    "setup": "cdaq_to_cdaq",
    "sample_rate_hz": 1000.0,
    "activation": [
        {"electrode": "e0", "channel": "cDAQ1Mod3/ao8", "low_v": -1.2, "high_v": 0.6},
        {"electrode": "e1", "channel": "cDAQ1Mod3/ao10", "low_v": -0.7, "high_v": 0.3},
    ],
    "readout": [{"name": "out", "channel": "cDAQ1Mod4/ai2", "gain_na_per_v": 28.5, "low_v": -4.0, "high_v": 4.0}],
    "read_chunk_samples": 4,
    "timeout_s": 5.0,
}
SAFETY = SafetyConfig(hard_limit_v=1.5, max_ramp_v_per_s=100.0)  # 0.1 V per sample at 1 kHz


def backend(**changes) -> NIDAQBackend:
    return NIDAQBackend(NIDAQConfig(**{**CDAQ, **changes}), SAFETY)


def good_waveform() -> np.ndarray:
    """(10, 2) V: from 0 V, steps of at most 0.1 V, back to 0 V."""
    e0 = [0.0, -0.1, -0.2, -0.3, -0.3, -0.3, -0.2, -0.1, 0.0, 0.0]
    e1 = [0.0, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.0, 0.0]
    return np.array([e0, e1]).T


def test_exact_call_sequence_cdaq_to_cdaq(monkeypatch):
    driver = install(monkeypatch)
    b = backend()
    w = good_waveform()
    readout = b.play(w)
    timeout = 10 / 1000.0 + 5.0
    expected = [
        ("inmaterio_activation", "Task", (), {}),
        ("inmaterio_activation", "add_ao_voltage_chan", ("cDAQ1Mod3/ao8",), {"name_to_assign_to_channel": "e0", "min_val": -1.2, "max_val": 0.6}),
        ("inmaterio_activation", "add_ao_voltage_chan", ("cDAQ1Mod3/ao10",), {"name_to_assign_to_channel": "e1", "min_val": -0.7, "max_val": 0.3}),
        ("inmaterio_readout", "Task", (), {}),
        ("inmaterio_readout", "add_ai_voltage_chan", ("cDAQ1Mod4/ai2",), {"name_to_assign_to_channel": "out",
            "terminal_config": TerminalConfiguration.DEFAULT, "min_val": -4.0, "max_val": 4.0}),
        ("inmaterio_activation", "cfg_dig_edge_start_trig", ("/cDAQ1/ai/StartTrigger",), {}),
        ("inmaterio_activation", "cfg_samp_clk_timing", (1000.0,), {"sample_mode": AcquisitionType.FINITE, "samps_per_chan": 10}),
        ("inmaterio_readout", "cfg_samp_clk_timing", (1000.0,), {"sample_mode": AcquisitionType.FINITE, "samps_per_chan": 10}),
        ("inmaterio_activation", "write", "WAVEFORM", {"auto_start": False, "timeout": timeout}),
        ("inmaterio_activation", "start", (), {}),
        ("inmaterio_readout", "start", (), {}),
        ("inmaterio_readout", "read", (), {"number_of_samples_per_channel": 4, "timeout": timeout}),
        ("inmaterio_readout", "read", (), {"number_of_samples_per_channel": 4, "timeout": timeout}),
        ("inmaterio_readout", "read", (), {"number_of_samples_per_channel": 2, "timeout": timeout}),
        ("inmaterio_activation", "wait_until_done", (), {"timeout": timeout}),
        ("inmaterio_readout", "stop", (), {}),
        ("inmaterio_activation", "stop", (), {}),
    ]  # fmt: skip
    assert len(driver.calls) == len(expected)
    for got, want in zip(driver.calls, expected):
        if want[2] == "WAVEFORM":  # the data written: (channels, samples), the waveform transposed, exactly
            assert got[:2] == want[:2] and got[3] == want[3]
            np.testing.assert_array_equal(got[2][0], w.T)
        else:
            assert got == want
    # the fake reads 0.1 V per volt of the summed outputs
    np.testing.assert_allclose(readout[:, 0], 0.1 * w.sum(axis=1), rtol=0, atol=1e-15)
    assert driver.outputs == {"cDAQ1Mod3/ao8": 0.0, "cDAQ1Mod3/ao10": 0.0}
    # a second play reuses the tasks: timing, write, start, reads, stop only
    driver.calls.clear()
    b.play(w)
    assert [c[1] for c in driver.calls] == ["cfg_samp_clk_timing", "cfg_samp_clk_timing", "write", "start", "start",
                                             "read", "read", "read", "wait_until_done", "stop", "stop"]  # fmt: skip


def test_cdaq_to_nidaq_exports_and_wires_the_start_trigger(monkeypatch):
    driver = install(monkeypatch)
    config = {**CDAQ, "setup": "cdaq_to_nidaq", "trigger_source": "/cDAQ1/PFI0", "trigger_export": "/Dev1/PFI0"}
    config["readout"] = [{**CDAQ["readout"][0], "channel": "Dev1/ai0", "terminal": "diff"}]
    NIDAQBackend(NIDAQConfig(**config), SAFETY).play(good_waveform())
    calls = [c for c in driver.calls if c[1] in ("export_signal", "cfg_dig_edge_start_trig", "add_ai_voltage_chan")]
    assert calls[0][2] == ("Dev1/ai0",) and calls[0][3]["terminal_config"] == TerminalConfiguration.DIFF
    assert calls[1] == ("inmaterio_readout", "export_signal", (Signal.START_TRIGGER, "/Dev1/PFI0"), {})
    assert calls[2] == ("inmaterio_activation", "cfg_dig_edge_start_trig", ("/cDAQ1/PFI0",), {})


@pytest.mark.parametrize(
    "what, change, message",
    [
        ("above the range", (4, 0, 0.7), ["'e0'", "0.7", "[-1.2, 0.6]", "sample 4"]),
        ("below the range", (5, 1, -0.8), ["'e1'", "-0.8", "[-0.7, 0.3]"]),
        ("not ending at 0 V", (9, 0, -0.05), ["'e0'", "ends", "0 V"]),
        ("not starting at 0 V", (0, 1, 0.05), ["'e1'", "starts", "0 V"]),
        ("too fast a ramp", (3, 0, -0.5), ["'e0'", "100 V/s", "samples 2 and 3"]),
        ("NaN", (3, 1, np.nan), ["'e1'", "nan"]),
    ],
)
def test_no_bad_waveform_reaches_the_driver(monkeypatch, what, change, message):
    driver = install(monkeypatch)
    b = backend()
    w = good_waveform()
    k, j, value = change
    w[k, j] = value
    with pytest.raises(VoltageError) as err:
        b.play(w)
    assert all(m in str(err.value) for m in message), str(err.value)
    assert driver.calls == [], f"{what}: the driver was called"
    b.play(good_waveform())  # a good one plays afterwards
    assert "write" in driver.methods()[8]


def test_hard_limit_and_channel_ranges(monkeypatch):
    install(monkeypatch)
    with pytest.raises(ConfigError, match=r"electrode 'e0' range \[-1.2, 0.6\] V goes beyond the hard limit \[-1.0, 1.0\]"):
        NIDAQBackend(NIDAQConfig(**CDAQ), SafetyConfig(hard_limit_v=1.0))
    with pytest.raises(ConfigError, match="one cDAQ chassis"):
        validate_config(NIDAQConfig, {**CDAQ, "readout": [{**CDAQ["readout"][0], "channel": "Dev1/ai0"}]})
    with pytest.raises(ConfigError, match="trigger_export"):
        validate_config(NIDAQConfig, {**CDAQ, "setup": "cdaq_to_nidaq"})


def zero_sequence() -> list[tuple[str, str]]:
    return [("inmaterio_readout", "stop"), ("inmaterio_activation", "stop"), ("inmaterio_activation", "close"),
            ("inmaterio_readout", "close"), ("inmaterio_zero", "Task"), ("inmaterio_zero", "add_ao_voltage_chan"),
            ("inmaterio_zero", "add_ao_voltage_chan"), ("inmaterio_zero", "write"), ("inmaterio_zero", "stop"),
            ("inmaterio_zero", "close")]  # fmt: skip


def test_driver_error_leaves_outputs_at_zero(monkeypatch):
    driver = install(monkeypatch)
    driver.fail_read_at = 1  # the second chunk fails while the waveform is at -0.3 V / 0.1 V
    b = backend()
    with pytest.raises(InstrumentError, match="DaqError.*stopped responding.*outputs set to 0 V"):
        b.play(good_waveform())
    assert driver.methods()[-10:] == zero_sequence()
    zero_write = driver.calls[-3]
    np.testing.assert_array_equal(zero_write[2][0], [0.0, 0.0])
    assert zero_write[3]["auto_start"] is True
    assert driver.outputs == {"cDAQ1Mod3/ao8": 0.0, "cDAQ1Mod3/ao10": 0.0}
    # the next play opens fresh tasks and works
    driver.calls.clear()
    b.play(good_waveform())
    assert driver.methods()[0] == ("inmaterio_activation", "Task")


def test_ctrl_c_leaves_outputs_at_zero(monkeypatch):
    driver = install(monkeypatch)
    driver.interrupt_read_at = 0
    with pytest.raises(KeyboardInterrupt):
        backend().play(good_waveform())
    assert driver.methods()[-10:] == zero_sequence()
    assert driver.outputs == {"cDAQ1Mod3/ao8": 0.0, "cDAQ1Mod3/ao10": 0.0}


def test_error_in_the_first_driver_call_zeroes_what_was_opened(monkeypatch):
    driver = install(monkeypatch)

    def refuse(*args, **kwargs):
        raise DaqError("Device cannot be accessed.", -201003)

    monkeypatch.setattr(sys.modules["nidaqmx"].Task, "start", refuse)
    with pytest.raises(InstrumentError, match="cannot be accessed"):
        backend().play(good_waveform())
    assert driver.methods()[-5:-2] == [("inmaterio_zero", "add_ao_voltage_chan")] * 2 + [("inmaterio_zero", "write")]
    assert driver.outputs == {"cDAQ1Mod3/ao8": 0.0, "cDAQ1Mod3/ao10": 0.0}


def test_instrument_device_on_the_nidaq_backend(monkeypatch):
    """The Device interface on the NI backend: points become a safe waveform; currents are gain x reading."""
    driver = install(monkeypatch)
    config = {"backend": {"kind": "nidaq", **CDAQ}, "safety": SAFETY.model_dump(), "settle_samples": 2, "average_samples": 3}
    device = InstrumentDevice(config)
    assert device.activation_names == ["e0", "e1"] and device.readout_name == "out" and device.zero_bias_current_na is None
    points = np.array([[-0.5, 0.2], [0.3, -0.6], [0.3, -0.6]])
    m = device.measure_with_error(points)
    np.testing.assert_allclose(m.current_na, 28.5 * 0.1 * points.sum(axis=1), rtol=1e-12)
    np.testing.assert_array_equal(m.stderr_na, 0.0)
    written = [c for c in driver.calls if c[1] == "write"][0][2][0]  # (channels, samples)
    assert np.all(np.abs(np.diff(written, axis=1)) <= 0.1 + 1e-12) and np.all(written[:, [0, -1]] == 0)
    with pytest.raises(VoltageError, match="electrode 'e1' voltage 0.5 V in sample 0 outside"):
        device.measure([[0.0, 0.5]])
    driver.calls.clear()
    driver.fail_read_at = driver.reads  # the next read fails: the outputs go to 0 V, once
    with pytest.raises(InstrumentError, match="stopped responding"):
        device.measure(points)
    assert driver.methods().count(("inmaterio_zero", "Task")) == 1 and driver.methods()[-10:] == zero_sequence()
    assert driver.outputs == {"cDAQ1Mod3/ao8": 0.0, "cDAQ1Mod3/ao10": 0.0}


def test_nidaqmx_is_imported_only_when_used(monkeypatch):
    """Without nidaqmx (an import of it fails) the modules load and a backend builds; playing says how to install it."""
    import importlib

    import inmaterio.devices.instruments.nidaq as nidaq_module

    monkeypatch.setitem(sys.modules, "nidaqmx", None)  # not installed: "import nidaqmx" raises ImportError
    importlib.reload(nidaq_module)
    b = nidaq_module.NIDAQBackend(NIDAQConfig(**CDAQ), SAFETY)
    with pytest.raises(ConfigError, match=r'pip install "inmaterio\[nidaq\]"'):
        b.play(good_waveform())


@pytest.mark.skipif(not os.environ.get("INMATERIO_NIDAQ_CONFIG"), reason="real NI hardware: set INMATERIO_NIDAQ_CONFIG")
def test_real_hardware_zero_waveform():  # pragma: no cover - needs a lab
    from inmaterio.config import load_config
    from inmaterio.devices.registry import DeviceFile, build_device

    device = build_device(load_config(DeviceFile, os.environ["INMATERIO_NIDAQ_CONFIG"]).device)
    try:
        acquisition = device.acquire(np.zeros((100, device.n_activation)))
        assert acquisition.current_na.shape == (100, len(device.backend.readout))
    finally:
        device.close()
