"""The safety layer alone: waveform limits, ramps, clipping, outputs to 0 V on errors and signals.

Independent truths: limits and ramp rates written in the test (V, V/s at a
given rate), ramps whose samples are computed by hand, and the record of which
cleanup ran.
"""

import signal

import numpy as np
import pytest

from inmaterio.devices.instruments.config import ActivationChannel, ReadoutChannel, SafetyConfig
from inmaterio.devices.instruments.safety import (
    InstrumentError,
    ReadoutClippingError,
    check_clipping,
    check_waveform,
    ramp_between,
    safe_outputs,
)
from inmaterio.errors import VoltageError

CHANNELS = [ActivationChannel(electrode="a", low_v=-1.0, high_v=1.0), ActivationChannel(electrode="b", low_v=-0.5, high_v=2.0)]
SAFETY = SafetyConfig(hard_limit_v=1.5, max_ramp_v_per_s=100.0)  # at 1 kHz: 0.1 V per sample


def waveform(*rows) -> np.ndarray:
    return np.array(rows, dtype=float)


def test_a_good_waveform_passes_unchanged():
    w = waveform([0, 0], [0.1, 0.1], [0.2, 0.15], [0.1, 0.1], [0, 0])
    np.testing.assert_array_equal(check_waveform(w, CHANNELS, 1000.0, SAFETY), w)


@pytest.mark.parametrize(
    "rows, pieces",
    [
        ([[0, 0], [0.1, 1.6], [0, 0]], ["'b'", "1.6", "beyond the hard limit [-1.5, 1.5]"]),
        ([[0, 0], [0.1, -0.6], [0, 0]], ["'b'", "-0.6", "[-0.5, 2.0]", "sample 1"]),
        ([[0, 0], [0.1, 0.1]], ["'a'", "ends at 0.1 V"]),
        ([[0.05, 0], [0, 0]], ["'a'", "starts at 0.05 V"]),
        ([[0, 0], [0.1, 0.2], [0, 0]], ["'b'", "0.2 V between waveform samples 0 and 1", "200 V/s at 1000 Hz", "100 V/s"]),
        ([[0, 0], [0, np.inf], [0, 0]], ["'b'", "inf", "not finite"]),
        ([[0, 0, 0]], ["shape (samples >= 1, 2)", "['a', 'b']"]),
    ],
)
def test_bad_waveforms_are_refused_naming_electrode_value_and_limit(rows, pieces):
    with pytest.raises(VoltageError) as err:
        check_waveform(waveform(*rows), CHANNELS, 1000.0, SAFETY)
    assert all(p in str(err.value) for p in pieces), str(err.value)


def test_the_ramp_limit_scales_with_the_sampling_rate():
    w = waveform([0, 0], [0.1, 0.0], [0, 0])  # 0.1 V per sample: 100 V/s at 1 kHz, 1000 V/s at 10 kHz
    check_waveform(w, CHANNELS, 1000.0, SAFETY)
    with pytest.raises(VoltageError, match="1000 V/s at 10000 Hz"):
        check_waveform(w, CHANNELS, 10_000.0, SAFETY)


def test_ramp_between_is_linear_and_just_short_enough():
    ramp = ramp_between(np.array([0.0, 0.0]), np.array([0.25, -0.1]), 0.1)
    np.testing.assert_allclose(ramp, [[0.25 / 3, -0.1 / 3], [0.5 / 3, -0.2 / 3], [0.25, -0.1]])
    assert ramp_between(np.array([0.3]), np.array([0.3]), 0.1).shape == (0, 1)
    assert len(ramp_between(np.array([0.0]), np.array([0.3]), 0.1)) == 3  # exactly 3 steps of 0.1 V, not 4
    # -1.19 + (0.6 - -1.19) is 0.6000000000000001 in float64: a ramp lands on its end exactly, never beyond it
    assert -1.19 + (0.6 - -1.19) > 0.6
    ramp = ramp_between(np.array([-1.19, 0.6]), np.array([0.6, -1.19]), 0.07)
    assert ramp[-1].tolist() == [0.6, -1.19] and ramp[:, 0].max() <= 0.6 and ramp[:, 1].min() >= -1.19


def test_clipping_names_the_readout_and_the_range():
    readout = [ReadoutChannel(name="out", gain_na_per_v=10.0, low_v=-2.0, high_v=2.0)]
    check_clipping(np.array([[0.0], [1.99], [-1.99]]), readout, 1000.0)
    with pytest.raises(
        ReadoutClippingError, match=r"readout 'out' clipped: 2 of 4 sample\(s\).*\[-2.0, 2.0\] V, first at sample 1"
    ):
        check_clipping(np.array([[0.0], [2.0], [1.0], [-2.0]]), readout, 1000.0)


def test_safe_outputs_zeroes_on_any_error_and_restores_the_handler():
    zeroed = []
    before = signal.getsignal(signal.SIGTERM)
    for error in (RuntimeError("driver"), KeyboardInterrupt()):
        with pytest.raises(type(error)), safe_outputs(lambda: zeroed.append(1)):
            raise error
    assert zeroed == [1, 1] and signal.getsignal(signal.SIGTERM) is before
    with safe_outputs(lambda: zeroed.append(1)):
        pass
    assert zeroed == [1, 1]  # nothing to clean up after a normal exit: waveforms end at 0 V
    with pytest.raises(RuntimeError), safe_outputs(lambda: zeroed.append("outer")), safe_outputs(lambda: zeroed.append("inner")):
        raise RuntimeError("nested")
    assert zeroed == [1, 1, "inner"]  # once, by the innermost block

    def broken():
        raise OSError("USB gone")

    with pytest.raises(InstrumentError, match="setting the outputs to 0 V failed .*USB gone.* after: driver"):
        with safe_outputs(broken):
            raise RuntimeError("driver")
