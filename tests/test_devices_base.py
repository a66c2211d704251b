"""The Device contract, checked on the analytic device."""

import numpy as np
import pytest
import torch

from inmaterio.devices import AnalyticDevice
from inmaterio.errors import VoltageError


def test_measure_shape_and_truth():
    dev = AnalyticDevice(n_activation=3, noise_na=0.0, seed=1)
    v = np.array([[0.0, 0.0, 0.0], [0.5, -1.0, 0.2]])
    out = dev.measure(v)
    assert out.shape == (2,)
    x = v @ dev.weights + 1.5 * v[:, 0] * v[:, 1]
    np.testing.assert_allclose(out, 100.0 * np.tanh(x))


def test_accepts_torch_and_1d():
    dev = AnalyticDevice(n_activation=3)
    assert dev.measure(torch.zeros(3)).shape == (1,)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.array([[0.0, 0.9, 0.0]]), "electrode 'e1' voltage 0.9 V in sample 0 outside [-1.2, 0.6] V"),
        (np.array([[0.0, -1.3, 0.0]]), "electrode 'e1' voltage -1.3 V"),
        (np.array([[np.nan, 0.0, 0.0]]), "electrode 'e0' voltage nan in sample 0 is not finite"),
        (np.array([[np.inf, 0.0, 0.0]]), "is not finite"),
        (np.zeros((2, 4)), "must have shape (batch, 3)"),
    ],
)
def test_refuses_bad_voltages(bad, message):
    dev = AnalyticDevice(n_activation=3)
    with pytest.raises(VoltageError) as info:
        dev.measure(bad)
    assert message in str(info.value)


def test_range_boundaries_are_allowed():
    dev = AnalyticDevice(n_activation=2, low_v=-1.0, high_v=0.5)
    dev.measure(np.array([[-1.0, 0.5]]))


def test_noise_is_seeded():
    a = AnalyticDevice(n_activation=2, noise_na=2.0, seed=3).measure(np.zeros((50, 2)))
    b = AnalyticDevice(n_activation=2, noise_na=2.0, seed=3).measure(np.zeros((50, 2)))
    np.testing.assert_array_equal(a, b)
    assert 1.0 < a.std() < 3.0
