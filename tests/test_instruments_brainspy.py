"""brains-py hardware YAML files imported as instrument configs; anything unsupported is refused by name.

Independent truth: the mapping documented in brains-py's configuration keys
(channels ``<instrument>/ao<n>`` and ``/ai<n>``, ``amplification`` in nA per V,
``output_clipping_range`` in V at the ADC, ``sampling_frequency`` in Hz), worked
out by hand for a file written here.
"""

import pytest
import yaml

from inmaterio.devices.instruments import InstrumentDevice, config_from_brainspy
from inmaterio.errors import ConfigError

SINGLE = """
processor_type: cdaq_to_cdaq
max_ramping_time_seconds: 0.03
driver:
  tasks_driver_type: local
  sampling_frequency: 50
  amplification: 28.5
  output_clipping_range: [-4, 4]
  instruments_setup:
    device_no: single
    activation_instrument: cDAQ1Mod3
    activation_channels: [8, 10, 13, 11, 7, 12, 14]
    min_activation_voltages: [-1.2, -1.2, -1.2, -1.2, -1.2, -0.7, -0.7]
    max_activation_voltages: [0.6, 0.6, 0.6, 0.6, 0.6, 0.3, 0.3]
    readout_instrument: cDAQ1Mod4
    readout_channels: [2]
    trigger_source: cDAQ1/segment1
data:
  waveform:
    slope_length: 0.15
    plateau_length: 3
"""


def test_single_device_file(tmp_path):
    path = tmp_path / "hw.yaml"
    path.write_text(SINGLE)
    config = config_from_brainspy(path)
    b = config.backend
    assert b.kind == "nidaq" and b.setup == "cdaq_to_cdaq" and b.sample_rate_hz == 50.0
    assert [c.channel for c in b.activation] == [f"cDAQ1Mod3/ao{n}" for n in (8, 10, 13, 11, 7, 12, 14)]
    assert [c.electrode for c in b.activation] == [f"e{k}" for k in range(7)]
    assert [(c.low_v, c.high_v) for c in b.activation][-1] == (-0.7, 0.3)
    (r,) = b.readout
    assert (r.name, r.channel, r.gain_na_per_v, r.low_v, r.high_v) == ("e7", "cDAQ1Mod4/ai2", 28.5, -4.0, 4.0)
    assert b.start_trigger == "/cDAQ1/segment1/ai/StartTrigger"
    assert config.safety.max_ramp_v_per_s == pytest.approx(1.2 / 0.03)  # the largest range end in 0.03 s
    assert config.safety.hard_limit_v == 1.5 and config.average_samples == 3
    device = InstrumentDevice(config)  # builds without nidaqmx: nothing is imported before the first play
    assert device.activation_names == [f"e{k}" for k in range(7)] and device.readout_name == "e7"


def test_multiple_devices_pick_one():
    data = yaml.safe_load(SINGLE)
    setup = data["driver"]["instruments_setup"]
    data["driver"]["instruments_setup"] = {
        "device_no": "multiple", "trigger_source": "cDAQ1/segment1",
        "A": {k: v for k, v in setup.items() if k not in ("device_no", "trigger_source")},
        "B": {**{k: v for k, v in setup.items() if k not in ("device_no", "trigger_source")}, "readout_channels": [3]},
    }  # fmt: skip
    assert config_from_brainspy(data, device="B").backend.readout[0].channel == "cDAQ1Mod4/ai3"
    with pytest.raises(ConfigError, match=r"device_no: multiple: give device= one of \['A', 'B'\]"):
        config_from_brainspy(data)


def changed(path: str, value) -> dict:
    data = yaml.safe_load(SINGLE)
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    return data


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("processor_type", "simulation", "processor_type 'simulation' is not supported"),
        ("max_ramping_time_seconds", 0, "max_ramping_time_seconds 0 is not supported: 0 disables"),
        ("driver.tasks_driver_type", "remote", "remote (real-time rack) drivers are not supported"),
        ("driver.instruments_setup.activation_channel_mask", [1, 0, 0, 0, 0, 0, 0], "activation_channel_mask [1, 0"),
        ("driver.instruments_setup.readout_sync_channel", 7, "driver.instruments_setup.readout_sync_channel"),
        ("driver.inverted", True, "['driver.inverted'] not supported by the importer (value True)"),
        ("data.waveform.plateau_length", 0.5, "plateau_length 0.5 must be a whole number of samples"),
        ("driver.instruments_setup.max_activation_voltages", [0.6] * 6, "must have the same length"),
        ("driver.amplification", [28.5, 10.0], "amplification has 2 values for 1 readout channels"),
        ("processor_type", "cdaq_to_nidaq", "cdaq_to_nidaq' aligns its reads with a spike"),
    ],
)
def test_unsupported_entries_are_refused_by_name(path, value, message):
    with pytest.raises(ConfigError) as err:
        config_from_brainspy(changed(path, value))
    assert message in str(err.value), str(err.value)


def test_cdaq_to_nidaq_with_a_wired_trigger():
    data = changed("processor_type", "cdaq_to_nidaq")
    data["driver"]["instruments_setup"]["readout_instrument"] = "Dev1"
    config = config_from_brainspy(data, trigger_source="/cDAQ1/PFI0", trigger_export="/Dev1/PFI0")
    assert config.backend.readout[0].channel == "Dev1/ai2" and config.backend.start_trigger == "/cDAQ1/PFI0"
