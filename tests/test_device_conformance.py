"""Every registered device passes check_device, and its description rebuilds it.

Independent truths: the rules of the Device interface (each check states
one), the physical law of zero current at zero bias (detailed balance) for
the virtual DNPU, the closed form of the analytic device, and the stored
provenance of the bundled surrogate (a description written before the
registry's names were used). Deliberately broken devices show that each
check can fail.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from inmaterio.config import validate_config
from inmaterio.devices import AnalyticDevice, Device, DeviceConformanceError, Measurement, check_device
from inmaterio.devices.conformance import (
    DEVICE_CHECKS,
    check_batch_independence,
    check_description,
    check_measurement_shapes,
    check_random_streams,
    check_refuses_bad_voltages,
    check_zero_bias,
)
from inmaterio.devices.hopping import HoppingDevice
from inmaterio.devices.registry import (
    DEVICE_TYPES,
    DeviceFile,
    build_device,
    device_config_from_description,
    device_from_description,
    device_spec_from_description,
)
from inmaterio.errors import ConfigError
from inmaterio.surrogate import default_model_dir

# Fast examples of every registered device type (a new type must add one here).
FAST_SPECS = {
    "analytic-exact": {"type": "analytic"},
    "analytic-noisy": {"type": "analytic", "n_activation": 3, "low_v": -0.5, "high_v": 0.5, "noise_na": 2.0, "seed": 4},
    "analytic-no-zero-bias": {"type": "analytic", "n_activation": 2, "low_v": 0.1, "high_v": 0.9, "amplitude_na": 3.0},
    "instrument-simulated": {
        "type": "instrument", "backend": {"kind": "simulated", "device": {"type": "analytic", "n_activation": 3, "low_v": -1.0,
        "high_v": 1.0}, "adc_noise_v": 0.002, "seed": 1}, "average_samples": 4, "safety": {"max_ramp_v_per_s": 200.0},
    },
    "hopping-small": {
        "type": "hopping", "n_acceptors": 40, "n_donors": 1, "radius_nm": 60.0, "n_electrodes": 4, "readout_electrode": 3,
        "electrode_width_nm": 25.0, "grid_spacing_nm": 2.0, "voltage_ranges_v": [[-0.5, 0.5]] * 3, "seed": 1,
        "equilibration_hops": 2000, "block_hops": 2000, "min_blocks": 8, "max_blocks": 8,
    },
}  # fmt: skip
SPECS = list(FAST_SPECS.values())
SPEC_IDS = list(FAST_SPECS)
_built: dict[str, Device] = {}


def device_of(spec: dict) -> Device:
    """The device of ``spec``, built once per test session (the virtual DNPU solves Laplace's equation)."""
    key = json.dumps(spec, sort_keys=True)
    if key not in _built:
        _built[key] = build_device(validate_config(DeviceFile, {"device": spec}).device)
    return _built[key]


def test_every_registered_device_type_has_a_fast_example():
    assert {spec["type"] for spec in SPECS} == set(DEVICE_TYPES)


@pytest.mark.parametrize("check", DEVICE_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_device_passes_check(spec, check):
    check(device_of(spec))


def test_check_device_runs_every_check():
    check_device(device_of(FAST_SPECS["analytic-noisy"]))


# ------------------------------------------------------------------------------------------------ rebuilding


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_description_rebuilds_the_same_device_and_numbers(spec):
    device = device_of(spec)
    description = json.loads(json.dumps(device.describe()))
    assert description["type"] == spec["type"]
    rebuilt = device_from_description(description)
    assert type(rebuilt) is type(device) and rebuilt.describe() == description
    v = np.random.default_rng(0).uniform(device.voltage_ranges[:, 0], device.voltage_ranges[:, 1], (5, device.n_activation))
    with device.random_streams("plan", 3):
        a = device.measure_with_error(v)
    with rebuilt.random_streams("plan", 3):
        b = rebuilt.measure_with_error(v)
    np.testing.assert_array_equal(a.current_na, b.current_na)
    np.testing.assert_array_equal(a.stderr_na, b.stderr_na)
    # the description is what makes the device: another seed is another device with other numbers
    seeded = description if "seed" in description else description["backend"]  # an instrument: its DAQ's noise
    reseeded = {"seed": seeded["seed"] + 1} if seeded is description else {"backend": {**seeded, "seed": seeded["seed"] + 1}}
    other = device_from_description({**description, **reseeded})
    with other.random_streams("plan", 3):
        assert not np.array_equal(other.measure(v), a.current_na)


def test_the_previous_bundled_surrogates_old_description_rebuilds_its_virtual_dnpu():
    previous = Path(__file__).resolve().parents[1] / "results" / "previous_default_surrogate"
    recorded = json.loads((previous / "model.json").read_text())["info"]["provenance"]["device"]
    assert recorded["type"] == "HoppingDevice"  # written before the registry's names
    device = device_from_description(recorded)
    assert isinstance(device, HoppingDevice)
    fields = {k: v for k, v in recorded.items() if k not in ("type", "package_version")}
    dump = device.config.model_dump(mode="json")
    assert {k: dump[k] for k in fields} == fields
    # a field added since takes its default, the behaviour the description was written with
    assert {k: v for k, v in dump.items() if k not in fields} == {"current_estimator": "counting"}
    assert device.describe()["type"] == "hopping"
    assert device_from_description(device.describe()).config == device.config
    assert device_config_from_description(recorded) == device.config == device_config_from_description(device.describe())


def test_the_bundled_surrogate_and_its_predecessor_model_the_same_virtual_dnpu():
    current = json.loads((default_model_dir() / "model.json").read_text())["info"]["provenance"]["device"]
    previous = Path(__file__).resolve().parents[1] / "results" / "previous_default_surrogate" / "model.json"
    old = json.loads(previous.read_text())["info"]["provenance"]["device"]
    assert current["type"] == "hopping"
    assert device_config_from_description(current) == device_config_from_description(old)


def test_an_old_analytic_description_rebuilds():
    old = {"type": "AnalyticDevice", "n_activation": 3, "range_v": [-1.0, 0.5], "amplitude_na": 7.0, "noise_na": 0.0, "seed": 2}
    device = device_from_description(old)
    assert isinstance(device, AnalyticDevice)
    assert device.voltage_ranges.tolist() == [[-1.0, 0.5]] * 3 and device.amplitude_na == 7.0
    v = np.array([[0.3, -0.2, 0.1]])
    x = v @ AnalyticDevice(n_activation=3, seed=2).weights + 1.5 * v[:, 0] * v[:, 1]
    np.testing.assert_allclose(device.measure(v), 7.0 * np.tanh(x), rtol=1e-14)


def test_device_config_from_description_refuses_other_devices():
    with pytest.raises(ConfigError, match="type 'analytic', not a virtual DNPU"):
        device_config_from_description(AnalyticDevice().describe())


@pytest.mark.parametrize(
    "description, message",
    [
        ("hopping", r"must be a mapping with a 'type' key, got str"),
        ({"type": "daq"}, r"type 'daq'; registered device types: \['analytic', 'hopping', 'instrument'\]"),
        ({"seed": 1}, r"type None; registered"),
        ({"type": "analytic", "n_activaton": 3}, r"unknown key 'device.analytic.n_activaton'"),
        ({"type": "hopping", "temperature_k": -4}, r"field 'device.hopping.temperature_k' = -4: Input should be greater than 0"),
        ({"type": "AnalyticDevice", "range_v": [1.0]}, r"field 'range_v' = \[1.0\] must be \[low, high\] V"),
    ],
)
def test_bad_descriptions_are_config_errors(description, message):
    with pytest.raises(ConfigError, match=message):
        device_spec_from_description(description)


# ------------------------------------------------------------------------------------------------ broken devices


class _Clipping(AnalyticDevice):
    """Clips instead of refusing: breaks the refusal rule."""

    def check_voltages(self, voltages):
        v = np.nan_to_num(np.asarray(voltages, dtype=np.float64).reshape(-1, self.n_activation))
        return np.clip(v, self.voltage_ranges[:, 0], self.voltage_ranges[:, 1])


class _Float32(AnalyticDevice):
    def _measure(self, voltages):
        m = super()._measure(voltages)
        return Measurement(m.current_na.astype(np.float32), m.stderr_na)


class _ForeignType(AnalyticDevice):
    def describe(self):
        return {**super().describe(), "type": "MyDevice"}


class _GlobalNoise(AnalyticDevice):
    """Noise from a stream that ignores the keys (as a per-process counter would)."""

    _rng = np.random.default_rng(0)

    def _measure(self, voltages):
        current = self.true_current(voltages) + self._rng.normal(0, 1.0, len(voltages))
        return Measurement(current, np.ones(len(voltages)))


class _Offset(AnalyticDevice):
    """1 nA at zero bias while declaring 0 (an amplifier offset)."""

    def _measure(self, voltages):
        m = super()._measure(voltages)
        return Measurement(m.current_na + 1.0, m.stderr_na)


class _BatchMean(AnalyticDevice):
    """Subtracts the batch mean: a point's current depends on its neighbours."""

    def _measure(self, voltages):
        current = self.true_current(voltages)
        return Measurement(current - current.mean() + 1.0, np.zeros(len(current)))


@pytest.mark.parametrize(
    "device, check",
    [
        (_Clipping(), check_refuses_bad_voltages),
        (_Float32(), check_measurement_shapes),
        (_ForeignType(), check_description),
        (_GlobalNoise(), check_random_streams),
        (_Offset(), check_zero_bias),
        (_BatchMean(), check_batch_independence),
    ],
    ids=lambda x: getattr(x, "__name__", type(x).__name__),
)
def test_a_broken_device_fails_the_check_of_its_rule(device, check):
    with pytest.raises(DeviceConformanceError, match=rf"{type(device).__name__} fails {check.__name__} \("):
        check_device(device, checks=[check])
    check_device(AnalyticDevice(), checks=[check])  # the same check passes on the honest device
