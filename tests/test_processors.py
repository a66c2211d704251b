"""Processors: surrogate gain/noise/clipping, voltage checks, waveforms and the device path.

Independent truths: a surrogate whose MLP is wired by hand to be an affine map
(so its current is a formula of the voltages), the closed form of the
analytic device, hand-written waveforms, and the 1/sqrt(n) law of averaging.
"""

import json

import numpy as np
import pytest
import torch

from inmaterio.devices import AnalyticDevice
from inmaterio.errors import ConfigError, VoltageError
from inmaterio.processors import DeviceProcessor, SurrogateProcessor, from_waveform, to_waveform
from inmaterio.surrogate import DeviceInfo, SurrogateModel

NAMES = ["a", "b", "c", "d"]
RANGES = [(-1.2, 0.6), (-0.7, 0.3), (0.0, 1.0), (-0.5, 0.5)]
LOW = np.array([r[0] for r in RANGES])
HIGH = np.array([r[1] for r in RANGES])
MID = (LOW + HIGH) / 2
# the hand-wired surrogate: I = SCALE_NA * (W . x + B), x = (v - mid) * 2 / (high - low)
W = np.array([1.0, 0.5, -1.0, 2.0])
B = 0.25
SCALE_NA = 10.0


def make_info(**changes):
    fields = {"electrode_names": NAMES, "readout_name": "out", "voltage_ranges_v": RANGES}
    return DeviceInfo(**{**fields, **changes})


def linear_model(info=None):
    """A SurrogateModel whose MLP computes relu(z) - relu(-z) = z = W . x + B exactly."""
    model = SurrogateModel(info or make_info(), hidden_sizes=(2,), activation="relu")
    with torch.no_grad():
        model.mlp[0].weight.copy_(torch.tensor(np.stack([W, -W])))
        model.mlp[0].bias.copy_(torch.tensor([B, -B]))
        model.mlp[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
        model.mlp[2].bias.zero_()
    model.set_output_normalization(0.0, SCALE_NA)
    return model


def hand_current(v):
    """The formula of :func:`linear_model`, in numpy float64: ``(..., 4)`` V -> ``(...)`` nA."""
    x = (np.asarray(v, dtype=np.float64) - MID) * 2 / (HIGH - LOW)
    return SCALE_NA * (x @ W + B)


def random_voltages(shape, seed=0):
    rng = np.random.default_rng(seed)
    return torch.tensor(LOW + (HIGH - LOW) * rng.random((*shape, 4)), dtype=torch.float32)


# --- SurrogateProcessor ---------------------------------------------------------------------------


def test_hand_wired_model_is_the_formula():
    v = torch.tensor(np.stack([MID, HIGH, LOW]), dtype=torch.float32)
    # mid: x = 0 -> 10 * 0.25; high: x = 1 -> 10 * 2.75; low: x = -1 -> 10 * (-2.25)
    np.testing.assert_allclose(linear_model()(v).detach().numpy(), [2.5, 27.5, -22.5], rtol=1e-6)


def test_defaults_equal_the_model_exactly():
    model = linear_model()
    proc = SurrogateProcessor(model)
    v = random_voltages((64,))
    assert torch.equal(proc(v), model(v))
    np.testing.assert_allclose(proc(v).detach().numpy(), hand_current(v.numpy()), rtol=1e-5, atol=1e-5)
    assert proc.amplification == 1.0 and proc.noise_std_na == 0.0 and proc.clipping_na is None
    assert proc.differentiable


def test_amplification_scales_the_current():
    model = linear_model()
    v = random_voltages((32,))
    out = SurrogateProcessor(model, amplification=3)(v)
    torch.testing.assert_close(out, 3 * model(v))
    np.testing.assert_allclose(out.detach().numpy(), 3 * hand_current(v.numpy()), rtol=1e-5, atol=1e-4)
    for bad in (0.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="amplification"):
            SurrogateProcessor(model, amplification=bad)


def test_clipping_hand_values():
    v = torch.tensor(np.stack([MID, HIGH, LOW]), dtype=torch.float32)  # 2.5, 27.5, -22.5 nA
    out = SurrogateProcessor(linear_model(), clipping_na=(-20.0, 25.0))(v)
    np.testing.assert_allclose(out.detach().numpy(), [2.5, 25.0, -20.0], rtol=1e-6)
    # clipping after the gain: 3 * (2.5, 27.5, -22.5) = (7.5, 82.5, -67.5)
    out = SurrogateProcessor(linear_model(), amplification=3, clipping_na=(-20.0, 25.0))(v)
    np.testing.assert_allclose(out.detach().numpy(), [7.5, 25.0, -20.0], rtol=1e-6)
    # 'info' (the default) takes the info's clipping range
    model = linear_model(make_info(output_clipping_na=(-10.0, 10.0)))
    proc = SurrogateProcessor(model)
    assert proc.clipping_na == (-10.0, 10.0)
    np.testing.assert_allclose(proc(v).detach().numpy(), [2.5, 10.0, -10.0], rtol=1e-6)
    # None switches it off even when the info has a range
    np.testing.assert_allclose(SurrogateProcessor(model, clipping_na=None)(v).detach().numpy(), [2.5, 27.5, -22.5], rtol=1e-6)


@pytest.mark.parametrize("bad", [(5.0, -5.0), (1.0, 1.0), (0.0, float("inf")), "auto", (0.0, 1.0, 2.0)])
def test_bad_clipping_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="clipping_na"):
        SurrogateProcessor(linear_model(), clipping_na=bad)


def test_noise_has_the_requested_std():
    torch.manual_seed(0)
    model = linear_model(make_info(noise_na=1.5))
    v = torch.tensor(np.tile(MID, (100_000, 1)), dtype=torch.float32)
    clean = model(v).detach()
    noisy = SurrogateProcessor(model, noise=True, noise_std_na=3.0)(v).detach()
    diff = (noisy - clean).double()
    assert abs(diff.std().item() / 3.0 - 1) < 0.02
    assert abs(diff.mean().item()) < 0.05  # 5 standard errors of the mean (3 / sqrt(1e5) ~ 0.0095)
    # default standard deviation: the surrogate's test RMSE info.noise_na
    proc = SurrogateProcessor(model, noise=True)
    assert proc.noise_std_na == 1.5
    diff = (proc(v).detach() - clean).double()
    assert abs(diff.std().item() / 1.5 - 1) < 0.02
    # two calls draw different noise; set_noise(0) switches it off
    assert not torch.equal(proc(v[:10]), proc(v[:10]))
    proc.set_noise(0.0)
    assert torch.equal(proc(v), clean)


def test_noise_configuration_errors():
    model = linear_model()  # info.noise_na is None
    with pytest.raises(ConfigError, match="info.noise_na is None"):
        SurrogateProcessor(model, noise=True)
    proc = SurrogateProcessor(model)
    with pytest.raises(ConfigError, match="info.noise_na is None"):
        proc.set_noise(None)
    with pytest.raises(ConfigError, match="noise=False"):
        SurrogateProcessor(model, noise_std_na=2.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="noise_std_na"):
            SurrogateProcessor(model, noise=True, noise_std_na=bad)
    assert proc.noise_std_na == 0.0


def test_leading_shapes_gradients_and_frozen_weights():
    model = linear_model()
    proc = SurrogateProcessor(model)
    assert all(not p.requires_grad for p in model.parameters())
    v = random_voltages((3, 5, 2)).requires_grad_(True)  # (pop, batch, nodes, n)
    out = proc(v)
    assert out.shape == (3, 5, 2)
    np.testing.assert_allclose(out.detach().numpy(), hand_current(v.detach().numpy()), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    # dI/dv_j = SCALE_NA * W_j * 2 / (high_j - low_j), the same for every sample
    expected = SCALE_NA * W * 2 / (HIGH - LOW)
    np.testing.assert_allclose(v.grad.numpy(), np.broadcast_to(expected, (3, 5, 2, 4)), rtol=1e-5)
    assert all(p.grad is None for p in model.parameters())
    # one sample without a batch dimension: (n,) -> ()
    assert proc(torch.tensor(MID, dtype=torch.float32)).shape == ()


def test_describe_is_json():
    proc = SurrogateProcessor(linear_model(make_info(noise_na=0.5)), amplification=2.0, noise=True)
    d = json.loads(json.dumps(proc.describe()))
    assert d["type"] == "SurrogateProcessor" and d["electrodes"] == NAMES
    assert d["amplification"] == 2.0 and d["noise_std_na"] == 0.5


# --- voltage checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "index, value, pieces",
    [
        ((1, 2), 1.5, ["'c'", "1.5 V", "[0.0, 1.0] V", "sample 1"]),
        ((0, 0), -1.25, ["'a'", "-1.25 V", "[-1.2, 0.6] V", "sample 0"]),
        ((2, 1), 0.30002, ["'b'", "0.30002 V", "[-0.7, 0.3] V", "sample 2"]),  # beyond the 1e-5 V tolerance
        ((2, 3), float("nan"), ["'d'", "nan", "not finite", "[-0.5, 0.5] V", "sample 2"]),
        ((1, 0), float("inf"), ["'a'", "inf", "not finite", "[-1.2, 0.6] V", "sample 1"]),
        ((0, 1), float("-inf"), ["'b'", "-inf", "not finite", "sample 0"]),
    ],
)
def test_bad_voltages_name_electrode_value_range_and_sample(index, value, pieces):
    calls = []
    model = linear_model()
    model.register_forward_hook(lambda *args: calls.append(1))
    proc = SurrogateProcessor(model)
    v = torch.tensor(np.tile(MID, (3, 1)), dtype=torch.float64)
    v[index] = value
    with pytest.raises(VoltageError) as err:
        proc(v)
    for piece in pieces:
        assert piece in str(err.value)
    assert calls == []  # the model never ran


def test_sample_index_counts_the_flattened_leading_dimensions():
    v = torch.tensor(np.tile(MID, (2, 3, 1)), dtype=torch.float32)  # (2, 3, 4)
    v[1, 2, 3] = 0.9  # flattened sample 1 * 3 + 2 = 5
    with pytest.raises(VoltageError, match=r"electrode 'd' voltage 0\.9 V in sample 5 outside \[-0\.5, 0\.5\] V"):
        SurrogateProcessor(linear_model())(v)


@pytest.mark.parametrize("shape", [(3, 3), (3, 5), (4,) * 0])
def test_wrong_last_dimension(shape):
    v = torch.zeros(shape) if shape else torch.tensor(0.0)
    with pytest.raises(VoltageError, match=r"\(\.\.\., 4\)") as err:
        SurrogateProcessor(linear_model())(v)
    assert str(tuple(v.shape)) in str(err.value)


def test_range_ends_in_float32_are_accepted():
    proc = SurrogateProcessor(linear_model())
    ends = torch.tensor(np.stack([LOW, HIGH]), dtype=torch.float32)  # float32(0.6) = 0.6000000238 > 0.6
    assert float(torch.tensor(0.6, dtype=torch.float32)) > 0.6  # really rounded outwards
    assert float(ends[1, 0]) > 0.6 and float(ends[0, 0]) < -1.2
    np.testing.assert_allclose(proc(ends).detach().numpy(), [-22.5, 27.5], rtol=1e-5)
    # check=False skips the test (the model itself extrapolates)
    far = torch.tensor([[2.0, 0.0, 0.5, 0.0]])
    with pytest.raises(VoltageError):
        SurrogateProcessor(linear_model())(far)
    np.testing.assert_allclose(
        SurrogateProcessor(linear_model(), check=False)(far).detach().numpy(), hand_current(far.numpy()), rtol=1e-5
    )


# --- waveforms ------------------------------------------------------------------------------------


def test_to_waveform_hand_example():
    p0, p1 = [0.5, -1.0], [2.0, 0.25]  # powers of two: every product is exact
    waveform, mask = to_waveform(np.array([p0, p1]), plateau_samples=3, ramp_samples=4)
    expected = np.array(
        [
            [0.0, 0.0], [0.125, -0.25], [0.25, -0.5], [0.375, -0.75],  # ramp up: 0, .25, .5, .75 x p0
            p0, p0, p0, p1, p1, p1,  # plateaus
            [1.5, 0.1875], [1.0, 0.125], [0.5, 0.0625], [0.0, 0.0],  # ramp down: .75, .5, .25, 0 x p1
        ]
    )  # fmt: skip
    np.testing.assert_array_equal(waveform, expected)
    np.testing.assert_array_equal(mask, [False] * 4 + [True] * 6 + [False] * 4)
    assert waveform.dtype == np.float64 and mask.dtype == bool


def test_waveform_lengths_masks_and_round_trip():
    rng = np.random.default_rng(1)
    points = rng.uniform(-1, 1, (7, 3))
    for plateau, ramp in [(1, 0), (1, 5), (4, 0), (5, 3)]:
        waveform, mask = to_waveform(points, plateau, ramp)
        assert waveform.shape == (2 * ramp + 7 * plateau, 3)
        assert mask.sum() == 7 * plateau
        assert not mask[:ramp].any() and not mask[len(mask) - ramp :].any()
        if ramp:
            np.testing.assert_array_equal(waveform[0], 0.0)
            np.testing.assert_array_equal(waveform[-1], 0.0)
        for column in range(3):
            np.testing.assert_allclose(from_waveform(waveform[:, column], mask, plateau), points[:, column], rtol=1e-14)
    # plateaus are averaged: (1 + 2 + 3) / 3 and (10 + 20 + 30) / 3, ramps ignored
    measured = np.array([99.0, 1, 2, 3, 10, 20, 30, -99])
    mask = np.array([False] + [True] * 6 + [False])
    np.testing.assert_allclose(from_waveform(measured, mask, 3), [2.0, 20.0])


def test_waveform_errors():
    points = np.zeros((2, 2))
    with pytest.raises(ConfigError, match="plateau_samples"):
        to_waveform(points, 0, 2)
    with pytest.raises(ConfigError, match="ramp_samples"):
        to_waveform(points, 1, -1)
    with pytest.raises(ConfigError, match=r"\(batch, n\)"):
        to_waveform(np.zeros((0, 2)), 1, 2)
    with pytest.raises(ConfigError, match=r"\(batch, n\)"):
        to_waveform(np.zeros(3), 1, 2)
    with pytest.raises(ConfigError, match="plateaus of 4"):
        from_waveform(np.zeros(6), np.ones(6, dtype=bool), 4)
    with pytest.raises(ConfigError, match="same shape"):
        from_waveform(np.zeros(6), np.ones(5, dtype=bool), 1)


# --- DeviceProcessor ------------------------------------------------------------------------------


def analytic_truth(device, v):
    """The analytic device's closed form: amplitude * tanh(w . v + 1.5 v0 v1), in numpy."""
    v = np.asarray(v, dtype=np.float64)
    return device.amplitude_na * np.tanh(v @ device.weights + 1.5 * v[..., 0] * v[..., 1])


def device_voltages(shape, seed=0, low=-1.2, high=0.6, n=4):
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.uniform(low, high, (*shape, n)), dtype=torch.float64)


def count_measure_calls(monkeypatch, device):
    """Record every waveform the device measures (through ``measure`` and ``_measure``)."""
    calls = {"measure": [], "_measure": []}
    measure, inner = device.measure, device._measure
    monkeypatch.setattr(device, "measure", lambda v: calls["measure"].append(np.array(v)) or measure(v))
    monkeypatch.setattr(device, "_measure", lambda v: calls["_measure"].append(np.array(v)) or inner(v))
    return calls


@pytest.mark.parametrize("plateau, ramp", [(1, 0), (4, 5), (3, 2)])
def test_device_processor_equals_the_device(plateau, ramp):
    device = AnalyticDevice(n_activation=4, seed=3)
    proc = DeviceProcessor(device, plateau_samples=plateau, ramp_samples=ramp)
    assert not proc.differentiable and proc.info.electrode_names == ["e0", "e1", "e2", "e3"]
    v = device_voltages((40,))
    out = proc(v)
    assert out.dtype == torch.float64 and out.shape == (40,)
    np.testing.assert_allclose(out.numpy(), device.measure(v.numpy()), rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(out.numpy(), analytic_truth(device, v.numpy()), rtol=1e-13, atol=1e-12)
    # leading shapes and float32 are kept
    v3 = device_voltages((2, 3, 5), seed=1).float()
    out3 = proc(v3)
    assert out3.shape == (2, 3, 5) and out3.dtype == torch.float32
    np.testing.assert_allclose(out3.numpy(), analytic_truth(device, v3.double().numpy()), rtol=1e-6, atol=1e-5)


def test_plateau_averaging_reduces_noise_by_sqrt_n():
    points = device_voltages((8,), seed=2)
    truth = analytic_truth(AnalyticDevice(n_activation=4, seed=3), points.numpy())
    spreads = {}
    for plateau in (1, 16):
        proc = DeviceProcessor(AnalyticDevice(n_activation=4, noise_na=2.0, seed=3), plateau_samples=plateau, ramp_samples=3)
        runs = np.stack([proc(points).numpy() for _ in range(200)])  # (repeats, points)
        spreads[plateau] = runs.std(axis=0, ddof=1).mean()
        assert np.abs(runs.mean(axis=0) - truth).max() < 5 * 2.0 / np.sqrt(200 * plateau)
    assert abs(spreads[1] / 2.0 - 1) < 0.1
    assert 0.2 < spreads[16] / spreads[1] < 0.3  # 1 / sqrt(16) = 0.25


def test_ramps_start_and_end_at_zero():
    device = AnalyticDevice(n_activation=4, seed=3)
    proc = DeviceProcessor(device, plateau_samples=2, ramp_samples=5)
    v = device_voltages((3,), seed=4)
    proc(v)
    w, mask = proc.last_waveform_v, proc.last_mask
    assert w.shape == (2 * 5 + 3 * 2, 4) and mask.sum() == 6
    np.testing.assert_array_equal(w[0], 0.0)
    np.testing.assert_array_equal(w[-1], 0.0)
    np.testing.assert_allclose(w[4], 0.8 * v[0].numpy())  # last ramp-up sample: 4/5 of the first point
    np.testing.assert_allclose(w[-5], 0.8 * v[-1].numpy())  # first ramp-down sample: 4/5 of the last point
    np.testing.assert_array_equal(w[mask], np.repeat(v.numpy(), 2, axis=0))
    assert not mask[:5].any() and not mask[-5:].any()


def test_max_points_splits_into_waveforms(monkeypatch):
    device = AnalyticDevice(n_activation=4, seed=3)
    calls = count_measure_calls(monkeypatch, device)
    proc = DeviceProcessor(device, plateau_samples=2, ramp_samples=1, max_points=3)
    v = device_voltages((10,), seed=5)
    out = proc(v)
    assert [len(w) for w in calls["measure"]] == [2 + 3 * 2] * 3 + [2 + 1 * 2]
    for w in calls["measure"]:
        np.testing.assert_array_equal(w[0], 0.0)
        np.testing.assert_array_equal(w[-1], 0.0)
    np.testing.assert_allclose(out.numpy(), analytic_truth(device, v.numpy()), rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("bad", [0.7, -1.3, float("nan"), float("inf")])
def test_device_never_sees_bad_voltages(monkeypatch, bad):
    device = AnalyticDevice(n_activation=4, seed=3)
    calls = count_measure_calls(monkeypatch, device)
    proc = DeviceProcessor(device, max_points=2)
    v = device_voltages((7,), seed=6)
    v[6, 2] = bad  # in the last waveform: the earlier ones must not be played either
    with pytest.raises(VoltageError, match="electrode 'e2'") as err:
        proc(v)
    assert "sample 6" in str(err.value) and "[-1.2, 0.6] V" in str(err.value)
    assert calls == {"measure": [], "_measure": []}
    with pytest.raises(VoltageError, match=r"\(\.\.\., 4\)"):
        proc(torch.zeros(3, 5, dtype=torch.float64))
    assert calls == {"measure": [], "_measure": []}


def test_device_range_ends_in_float32(monkeypatch):
    device = AnalyticDevice(n_activation=4, low_v=-1.2, high_v=0.6, seed=3)
    calls = count_measure_calls(monkeypatch, device)
    proc = DeviceProcessor(device)
    ends = torch.tensor([[0.6, -1.2, 0.6, -1.2]], dtype=torch.float32)  # 0.6000000238, -1.2000000477
    out = proc(ends)
    np.testing.assert_array_equal(calls["_measure"][0], [[0.6, -1.2, 0.6, -1.2]])  # clipped to the exact ends
    np.testing.assert_allclose(out.numpy(), analytic_truth(device, [[0.6, -1.2, 0.6, -1.2]]), rtol=1e-6)
    # .float() on a network converts the processor's range buffers; the device must still get exact ends
    proc.float()
    np.testing.assert_allclose(proc(ends).numpy(), out.numpy())
    proc.double()
    np.testing.assert_allclose(proc(ends.double()).numpy(), out.numpy(), rtol=1e-6)


def test_device_path_has_no_gradient():
    proc = DeviceProcessor(AnalyticDevice(n_activation=4, seed=3))
    v = device_voltages((3,)).requires_grad_(True)
    with pytest.raises(ConfigError, match="no gradient"):
        proc(v)
    with torch.no_grad():
        assert proc(v).shape == (3,)
    assert proc(v.detach()).shape == (3,)


def test_device_processor_configuration_errors():
    positive = AnalyticDevice(n_activation=4, low_v=0.1, high_v=0.6)
    with pytest.raises(ConfigError, match=r"outside the range of electrode\(s\) \['e0', 'e1', 'e2', 'e3'\]"):
        DeviceProcessor(positive, ramp_samples=3)
    proc = DeviceProcessor(positive, ramp_samples=0)  # no ramp: 0 V is never played
    v = torch.full((2, 4), 0.3, dtype=torch.float64)
    np.testing.assert_allclose(proc(v).numpy(), analytic_truth(positive, v.numpy()))
    device = AnalyticDevice(n_activation=4)
    for kwargs, field in [
        ({"plateau_samples": 0}, "plateau_samples"),
        ({"ramp_samples": -1}, "ramp_samples"),
        ({"max_points": 0}, "max_points"),
    ]:
        with pytest.raises(ConfigError, match=field):
            DeviceProcessor(device, **kwargs)
    info = DeviceInfo.from_device(device)
    with pytest.raises(ConfigError, match="5 activation electrodes, the device has 4"):
        DeviceProcessor(device, info=info.with_updates(electrode_names=list("abcde"), voltage_ranges_v=[(-1, 0.5)] * 5))
    with pytest.raises(ConfigError, match=r"exceed the device's .* \['e1'\]"):
        DeviceProcessor(device, info=info.with_updates(voltage_ranges_v=[(-1.2, 0.6), (-1.2, 0.7), (-1.2, 0.6), (-1.2, 0.6)]))
    # a narrower info is fine: the processor checks against it
    narrow = DeviceProcessor(device, info=info.with_updates(voltage_ranges_v=[(-0.5, 0.5)] * 4))
    with pytest.raises(VoltageError, match=r"outside \[-0.5, 0.5\] V"):
        narrow(torch.full((1, 4), 0.55, dtype=torch.float64))


def test_device_describe_is_json():
    proc = DeviceProcessor(AnalyticDevice(n_activation=4), plateau_samples=3, ramp_samples=2)
    d = json.loads(json.dumps(proc.describe()))
    assert d["type"] == "DeviceProcessor" and d["device"] == proc.device.describe() and d["device"]["type"] == "analytic"
    assert (d["plateau_samples"], d["ramp_samples"]) == (3, 2)


def test_large_inputs_run_in_chunks_with_the_same_result():
    """More than CHUNK_ROWS rows without gradients: chunked calls, values of the formula."""
    from inmaterio.processors import CHUNK_ROWS

    processor = SurrogateProcessor(linear_model())
    v = random_voltages((CHUNK_ROWS * 2 + 17,), seed=3)
    calls = []
    processor.model.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    with torch.no_grad():
        out = processor(v)
    assert calls == [CHUNK_ROWS, CHUNK_ROWS, 17]
    np.testing.assert_allclose(out.numpy(), hand_current(v.numpy()), rtol=1e-5, atol=1e-4)
    calls.clear()
    processor(v.requires_grad_())  # with gradients: one call, so autograd keeps one graph
    assert calls == [len(v)]


def test_forward_repeated_draws_noise_per_sample():
    """Distinct points evaluated once, expanded; noise independent per expanded sample."""
    processor = SurrogateProcessor(linear_model(), noise=True, noise_std_na=2.0)
    distinct = random_voltages((2,), seed=5)  # (2, 4)
    index = torch.tensor([0, 0, 1, 1, 0] * 20000)
    torch.manual_seed(0)
    out = processor.forward_repeated(distinct, index, dim=0)
    clean = torch.tensor(hand_current(distinct.numpy()), dtype=torch.float32)[index]
    residual = out - clean
    assert float(residual.std()) == pytest.approx(2.0, rel=0.02)
    # neighbours that repeat the same point are independent: their difference has std 2 * sqrt(2)
    assert float((out[0::5] - out[1::5]).std()) == pytest.approx(2.0 * 2**0.5, rel=0.03)


def test_device_forward_repeated_measures_every_sample():
    device = AnalyticDevice(n_activation=4, low_v=-0.5, high_v=0.3)
    calls = []
    measure = device.measure
    device.measure = lambda v: calls.append(len(v)) or measure(v)
    processor = DeviceProcessor(device)
    distinct = torch.tensor([[0.1, 0.0, -0.2, 0.25], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    out = processor.forward_repeated(distinct, torch.tensor([1, 0, 0, 1]), dim=0)
    assert calls == [4]
    np.testing.assert_allclose(out.numpy(), device.measure(distinct.numpy())[[1, 0, 0, 1]])


def test_noise_off_context_restores_the_setting():
    processor = SurrogateProcessor(linear_model(), noise=True, noise_std_na=5.0)
    v = random_voltages((1000,), seed=2)
    with processor.noise_off() as quiet:
        assert quiet is processor and processor.noise_std_na == 0.0
        np.testing.assert_allclose(processor(v).detach().numpy(), hand_current(v.numpy()), rtol=1e-5, atol=1e-4)
    assert processor.noise_std_na == 5.0
    assert float((processor(v) - torch.tensor(hand_current(v.numpy()), dtype=torch.float32)).std()) > 4.0
    device_processor = DeviceProcessor(AnalyticDevice(n_activation=4, low_v=-0.5, high_v=0.3))
    with device_processor.noise_off() as same:  # nothing to switch off on a device: a no-op
        assert same is device_processor


def test_bfloat16_matrix_products_stay_close_and_keep_gradients():
    """bfloat16 autocast: outputs within ~1% of the float32 ones, float32 results, gradients flow."""
    processor = SurrogateProcessor(linear_model())
    v = random_voltages((500,), seed=7).requires_grad_()
    exact = processor(v)
    processor.bfloat16 = True
    approx = processor(v)
    assert approx.dtype == torch.float32 and processor.describe()["bfloat16"] is True
    scale = float(exact.detach().abs().max())
    assert float((approx - exact).detach().abs().max()) < 0.02 * scale
    approx.sum().backward()
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())


# --- progress on long device calls ----------------------------------------------------------------


def recording_progress_bar(monkeypatch, module):
    """Replace ``module.progress_bar`` by one that records its arguments and every advance."""
    from contextlib import contextmanager

    seen = []

    class Bar:
        def __init__(self, record):
            self.record = record

        def advance(self, amount):
            self.record["advances"].append(amount)

    @contextmanager
    def recording(total, description, unit, enabled):
        record = {"total": total, "description": description, "unit": unit, "enabled": enabled, "advances": []}
        seen.append(record)
        yield Bar(record)

    monkeypatch.setattr(module, "progress_bar", recording)
    return seen


@pytest.mark.usefixtures("one_torch_thread")
def test_progress_counts_the_points_of_calls_of_several_waveforms(monkeypatch):
    import inmaterio.processors as processors

    seen = recording_progress_bar(monkeypatch, processors)
    device = AnalyticDevice(n_activation=4, seed=3, noise_na=0.5)
    v = device_voltages((10,), seed=5)
    quiet = DeviceProcessor(device, plateau_samples=2, ramp_samples=1, max_points=3)
    loud = DeviceProcessor(device, plateau_samples=2, ramp_samples=1, max_points=3, progress=True)
    with device.random_streams("quiet"):
        expected = quiet(v)
    with device.random_streams("quiet"):  # the same noise: progress changes what is shown, never what is measured
        out = loud(v)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert seen[0]["enabled"] is False  # off by default
    assert seen[1] == {"total": 10, "description": "measuring on AnalyticDevice", "unit": "pts", "enabled": True,
                       "advances": [3, 3, 3, 1]}  # fmt: skip
    loud(v[:3])  # one waveform: nothing to show
    assert seen[2]["enabled"] is False and seen[2]["advances"] == [3]
    with loud.progress_shown(False):
        loud(v)
    assert seen[3]["enabled"] is False and loud.progress is True
    with quiet.progress_shown():
        quiet(v.reshape(2, 5, 4))  # leading dimensions are flattened: 10 points
    assert seen[4]["enabled"] is True and seen[4]["total"] == 10 and quiet.progress is False
    assert DeviceProcessor(device).max_points == 512


@pytest.mark.usefixtures("one_torch_thread")
def test_progress_quiets_the_bar_of_an_instrument_device(monkeypatch):
    """One bar at a time: an instrument's own bar is off while the processor's counts the points, and restored."""
    import inmaterio.processors as processors
    from inmaterio.devices.instruments import InstrumentDevice

    recording_progress_bar(monkeypatch, processors)
    device = InstrumentDevice({"backend": {"kind": "simulated", "device": {"type": "analytic", "n_activation": 4}, "adc_bits": None},
                               "average_samples": 1, "chunk_points": 4, "safety": {"max_ramp_v_per_s": 1e4}})  # fmt: skip
    states = []
    inner = device._measure
    monkeypatch.setattr(device, "_measure", lambda v: states.append(device.progress) or inner(v))
    v = device_voltages((5,), seed=2, low=-1.0, high=0.5)
    DeviceProcessor(device, max_points=2, progress=True)(v)
    DeviceProcessor(device, max_points=2)(v)
    assert states == [False] * 3 + [True] * 3 and device.progress is True


@pytest.mark.usefixtures("one_torch_thread")
def test_validation_switches_the_device_progress_on_when_asked(monkeypatch):
    """validate_model: progress from its argument, else from validation_progress (what `inmaterio run` sets)."""
    import inmaterio.processors as processors
    from inmaterio.nn import DNPU
    from inmaterio.tasks.validation import validate_layer, validation_progress
    from inmaterio.training.metrics import fit_logistic_threshold

    seen = recording_progress_bar(monkeypatch, processors)
    surrogate = SurrogateProcessor(linear_model())
    device = DeviceProcessor(AnalyticDevice(n_activation=4, low_v=-1.2, high_v=1.0, seed=1), info=make_info(), max_points=4)
    layer = DNPU(surrogate, 2, (0, 1), (0.0, 1.0), seed=0)
    x = torch.rand(9, 2, generator=torch.Generator().manual_seed(0))
    targets = (x[:, 0] > 0.5).to(torch.float32).expand(2, 9)
    with torch.no_grad():
        threshold = fit_logistic_threshold(layer(x).T, targets)
    validate_layer(layer, device, x, targets, threshold)
    with validation_progress():
        validate_layer(layer, device, x, targets, threshold, repeats=2)
        validate_layer(layer, device, x, targets, threshold, progress=False)
    validate_layer(layer, device, x, targets, threshold, progress=True)
    # 9 inputs x 2 nodes = 18 points per call, in waveforms of 4
    assert [(r["enabled"], r["total"], sum(r["advances"])) for r in seen] == [
        (False, 18, 18), (True, 18, 18), (True, 18, 18), (False, 18, 18), (True, 18, 18)]  # fmt: skip
    assert device.progress is False  # restored after every validation
