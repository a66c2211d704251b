"""The DNPU layer: input mapping, control placement, shapes, populations, multiplexing, back-end swaps.

Independent truths: the affine map ``v = v_lo + (x - d_lo) (v_hi - v_lo) / (d_hi - d_lo)``
written out per electrode, voltages assembled by explicit loops over
electrodes, the closed form of the analytic device, and hand-computed distances.
"""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from inmaterio.devices import AnalyticDevice
from inmaterio.errors import ConfigError
from inmaterio.nn import DNPU, dnpu_layers, processor_swapped, set_processor
from inmaterio.processors import DeviceProcessor, SurrogateProcessor
from inmaterio.surrogate import DeviceInfo, SurrogateModel

NAMES = ["a", "b", "c", "d", "f"]
RANGES = [(-1.2, 0.6), (-0.7, 0.3), (0.0, 1.0), (-0.5, 0.5), (-2.0, -0.4)]  # all different
LOW = np.array([r[0] for r in RANGES])
HIGH = np.array([r[1] for r in RANGES])


def make_info(ranges=RANGES, names=NAMES):
    return DeviceInfo(electrode_names=list(names), readout_name="out", voltage_ranges_v=list(ranges))


def surrogate(info=None, seed=0):
    torch.manual_seed(seed)
    return SurrogateProcessor(SurrogateModel(info or make_info(), hidden_sizes=(16, 16), activation="tanh"))


def device_pair(n=5, seed=4):
    """An analytic device, its DeviceProcessor and a surrogate processor with the same info."""
    device = AnalyticDevice(n_activation=n, low_v=-1.2, high_v=0.6, seed=seed)
    return device, DeviceProcessor(device), surrogate(DeviceInfo.from_device(device))


def analytic_truth(device, v):
    v = np.asarray(v, dtype=np.float64)
    return device.amplitude_na * np.tanh(v @ device.weights + 1.5 * v[..., 0] * v[..., 1])


def hand_voltages(x_nodes, controls, inputs, n=5, d_lo=-1.0, d_hi=1.0, low=LOW, high=HIGH):
    """Voltages assembled electrode by electrode: ``x_nodes (batch, nodes, m)``, ``controls (nodes, n_c)``."""
    x_nodes, controls = np.asarray(x_nodes, dtype=np.float64), np.asarray(controls, dtype=np.float64)
    batch, nodes, _ = x_nodes.shape
    v = np.full((batch, nodes, n), np.nan)
    for k in range(nodes):
        row = inputs[k] if isinstance(inputs[0], (list, tuple)) else inputs
        for j, e in enumerate(row):
            v[:, k, e] = low[e] + (x_nodes[:, k, j] - d_lo) * (high[e] - low[e]) / (d_hi - d_lo)
        for i, e in enumerate(e for e in range(n) if e not in row):
            v[:, k, e] = controls[k, i]
    return np.clip(v, low, high)


# --- input transform and control placement ---------------------------------------------------------


@pytest.mark.parametrize("inputs", list(itertools.permutations(range(5), 2)) + list(itertools.permutations(range(5), 3)))
def test_inputs_fill_their_own_ranges_and_controls_land_on_the_rest(inputs):
    m = len(inputs)
    layer = DNPU(surrogate(), n_nodes=2, input_electrodes=inputs, seed=0)
    controls_expected = [e for e in range(5) if e not in inputs]  # ascending
    assert layer.input_index.tolist() == [list(inputs)] * 2
    assert layer.control_index.tolist() == [controls_expected] * 2
    # row r puts (low, high, mid)[(j + r) % 3] of the data range on input j
    levels = np.array([-1.0, 1.0, 0.0])
    x = torch.tensor([[levels[(j + r) % 3] for j in range(m)] for r in range(3)], dtype=torch.float32)
    v = layer.voltages(x).detach().numpy()  # (3, 2, 5)
    assert v.shape == (3, 2, 5)
    for r in range(3):
        for j, e in enumerate(inputs):
            want = [LOW[e], HIGH[e], (LOW[e] + HIGH[e]) / 2][(j + r) % 3]
            np.testing.assert_allclose(v[r, :, e], want, atol=1e-6)
    c = layer.controls.detach().numpy()
    for i, e in enumerate(controls_expected):
        np.testing.assert_array_equal(v[:, :, e], np.broadcast_to(c[:, i], (3, 2)))
    # names instead of indices: the same layer
    by_name = DNPU(surrogate(), n_nodes=2, input_electrodes=[NAMES[e] for e in inputs], seed=0)
    torch.testing.assert_close(by_name.voltages(x), layer.voltages(x), rtol=0, atol=0)
    table = layer.control_table()
    assert [list(t) for t in table] == [[NAMES[e] for e in controls_expected]] * 2
    assert table[1][NAMES[controls_expected[0]]] == pytest.approx(float(c[1, 0]))


def test_per_input_data_ranges_and_general_points():
    layer = DNPU(surrogate(), input_electrodes=["c", "a"], data_range=[(0.0, 1.0), (-5.0, 5.0)], seed=0)
    assert layer.data_range == [(0.0, 1.0), (-5.0, 5.0)]
    x = torch.tensor([[0.25, 2.5], [0.0, -5.0], [1.0, 5.0]])
    v = layer.voltages(x).detach().numpy()[:, 0]
    # c: 0 + 0.25 * (1 - 0) / 1 = 0.25; a: -1.2 + (2.5 + 5) * 1.8 / 10 = 0.15
    np.testing.assert_allclose(v[:, 2], [0.25, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(v[:, 0], [0.15, -1.2, 0.6], atol=1e-6)
    # one pair for every input
    layer = DNPU(surrogate(), input_electrodes=[1, 4], data_range=(0.0, 2.0), seed=0)
    v = layer.voltages(torch.tensor([[0.5, 1.5]])).detach().numpy()[0, 0]
    np.testing.assert_allclose([v[1], v[4]], [-0.7 + 0.25, -2.0 + 0.75 * 1.6], atol=1e-6)


def test_data_outside_its_range_saturates_with_zero_gradient():
    layer = DNPU(surrogate(), input_electrodes=[0, 4], seed=0)
    x = torch.tensor([[-3.0, 7.0], [1.5, -1.5], [0.5, 0.0]], requires_grad=True)
    v = layer.input_voltages(x)
    np.testing.assert_allclose(v.detach().numpy()[:, 0], [[-1.2, -0.4], [0.6, -2.0], [0.15, -1.2]], atol=1e-6)
    v.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0], [0, 0], [0.9, 0.8]], atol=1e-6)  # (high - low) / 2 inside


def test_float64_layer_maps_exactly():
    layer = DNPU(surrogate(), input_electrodes=[0, 1], seed=0).double()
    v = layer.input_voltages(torch.tensor([[1.0, -1.0], [0.2, 0.2]], dtype=torch.float64)).numpy()[:, 0]
    np.testing.assert_allclose(v, [[0.6, -0.7], [-0.3 + 0.9 * 0.2, -0.2 + 0.5 * 0.2]], rtol=0, atol=1e-7)


# --- controls ------------------------------------------------------------------------------------


def test_controls_are_uniform_inside_their_ranges():
    layer = DNPU(surrogate(), n_nodes=4000, input_electrodes=["b", "d"], seed=3)
    c = layer.controls.detach().numpy()  # electrodes a, c, f
    lo, hi = LOW[[0, 2, 4]], HIGH[[0, 2, 4]]
    assert c.shape == (4000, 3)
    assert (c >= lo).all() and (c <= hi).all()
    width = hi - lo
    np.testing.assert_array_less(c.min(axis=0) - lo, 0.005 * width)
    np.testing.assert_array_less(hi - c.max(axis=0), 0.005 * width)
    np.testing.assert_allclose(c.mean(axis=0), (lo + hi) / 2, atol=0.03 * width.max())  # sd of the mean 0.005 w
    np.testing.assert_allclose(layer.control_bounds().numpy(), np.tile(np.stack([lo, hi], 1), (4000, 1)), rtol=1e-6)
    assert layer.regularizer().item() == 0.0


def test_seed_reproducibility():
    proc = surrogate()
    a = DNPU(proc, n_nodes=3, seed=11).controls
    assert torch.equal(a, DNPU(proc, n_nodes=3, seed=11).controls)
    assert not torch.equal(a, DNPU(proc, n_nodes=3, seed=12).controls)
    torch.manual_seed(5)
    b = DNPU(proc, n_nodes=3).controls
    torch.manual_seed(5)
    assert torch.equal(b, DNPU(proc, n_nodes=3).controls)


def test_regularizer_and_constrain_hand_values():
    layer = DNPU(surrogate(), n_nodes=2, input_electrodes=[0, 1], seed=0)  # controls on c [0, 1], d [-.5, .5], f [-2, -.4]
    with torch.no_grad():
        layer.controls.copy_(torch.tensor([[1.25, -0.8, -1.0], [0.5, 0.0, -0.1]]))
    # outside: 1.25 - 1 = 0.25; -0.5 - (-0.8) = 0.3; -0.1 - (-0.4) = 0.3
    assert layer.regularizer().item() == pytest.approx(0.85, abs=1e-6)
    layer.regularizer().backward()
    np.testing.assert_array_equal(layer.controls.grad.numpy(), [[1, -1, 0], [0, 0, 1]])
    layer.constrain()
    np.testing.assert_allclose(layer.controls.detach().numpy(), [[1.0, -0.5, -1.0], [0.5, 0.0, -0.4]], atol=1e-7)
    assert layer.regularizer().item() == 0.0


# --- shapes and populations ---------------------------------------------------------------------------


def test_input_shapes_and_the_consecutive_split():
    proc = surrogate()
    layer = DNPU(proc, n_nodes=3, input_electrodes=[3, 0], seed=2)
    rng = np.random.default_rng(0)
    x_flat = torch.tensor(rng.uniform(-1, 1, (8, 6)), dtype=torch.float32)
    x_nodes = x_flat.numpy().reshape(8, 3, 2)
    # node k takes inputs 2k, 2k + 1 of the flat x
    for k in range(3):
        np.testing.assert_array_equal(x_nodes[:, k], x_flat.numpy()[:, 2 * k : 2 * k + 2])
    c = layer.controls.detach().numpy()
    want_v = hand_voltages(x_nodes, c, [3, 0])
    np.testing.assert_allclose(layer.voltages(x_flat).detach().numpy(), want_v, atol=1e-6)
    out = layer(x_flat)
    assert out.shape == (8, 3)
    want = proc.model(torch.tensor(want_v, dtype=torch.float32).reshape(-1, 5)).reshape(8, 3)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(torch.tensor(x_nodes)), out, rtol=0, atol=0)
    # (batch, n_inputs): every node gets the same data
    x_same = x_flat[:, :2]
    want_v = hand_voltages(np.repeat(x_same.numpy()[:, None], 3, axis=1), c, [3, 0])
    np.testing.assert_allclose(layer.voltages(x_same).detach().numpy(), want_v, atol=1e-6)
    assert layer(x_same).shape == (8, 3)


def test_per_node_input_electrodes():
    proc = surrogate()
    inputs = [[0, 1], ["f", "c"], [2, 3]]
    layer = DNPU(proc, n_nodes=3, input_electrodes=inputs, seed=1)
    resolved = [[0, 1], [4, 2], [2, 3]]
    assert layer.input_index.tolist() == resolved
    assert layer.control_index.tolist() == [[2, 3, 4], [0, 1, 3], [0, 1, 4]]
    x = torch.tensor(np.random.default_rng(1).uniform(-1, 1, (5, 3, 2)), dtype=torch.float32)
    want = hand_voltages(x.numpy(), layer.controls.detach().numpy(), resolved)
    np.testing.assert_allclose(layer.voltages(x).detach().numpy(), want, atol=1e-6)
    assert "inputs=[['a', 'b'], ['f', 'c'], ['c', 'd']]" in repr(layer)


def test_population_equals_each_genome_alone():
    layer = DNPU(surrogate(), n_nodes=3, input_electrodes=[1, 2], seed=0)
    pop = torch.stack([DNPU(surrogate(), n_nodes=3, input_electrodes=[1, 2], seed=s).controls.detach() for s in range(4)])
    x = torch.tensor(np.random.default_rng(2).uniform(-1, 1, (6, 2)), dtype=torch.float32)
    out = layer(x, pop)
    assert out.shape == (4, 6, 3)
    assert layer.voltages(x, pop).shape == (4, 6, 3, 5)
    for g in range(4):
        with torch.no_grad():
            layer.controls.copy_(pop[g])
        torch.testing.assert_close(out[g], layer(x), rtol=1e-6, atol=1e-6)
    # a 2-D controls argument replaces the layer's own
    torch.testing.assert_close(layer(x, pop[1]), out[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "x_shape, pieces",
    [
        ((8, 5), ["(batch, 2)", "(batch, 3, 2)", "(batch, 6)", "(8, 5)"]),
        ((8,), ["(8,)"]),
        ((8, 2, 2), ["(8, 2, 2)"]),
        ((2, 8, 3, 2), ["(2, 8, 3, 2)"]),
    ],
)
def test_wrong_x_shape(x_shape, pieces):
    layer = DNPU(surrogate(), n_nodes=3, seed=0)
    with pytest.raises(ConfigError) as err:
        layer(torch.zeros(x_shape))
    for piece in pieces:
        assert piece in str(err.value)


@pytest.mark.parametrize("c_shape", [(3, 2), (2, 3), (4, 3, 2), (4, 2, 3), (2, 4, 3, 3)])
def test_wrong_controls_shape(c_shape):
    layer = DNPU(surrogate(), n_nodes=3, seed=0)
    with pytest.raises(
        ConfigError, match=r"\(3, 3\) or \(population, 3, 3\); got " + str(c_shape).replace("(", r"\(").replace(")", r"\)")
    ):
        layer(torch.zeros(4, 2), torch.zeros(c_shape))


# --- time multiplexing ----------------------------------------------------------------------------------


def count_calls(processor):
    calls = []
    processor.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    return calls


def test_multiplex_equals_vectorised_on_the_surrogate():
    proc = surrogate()
    calls = count_calls(proc)
    flat = DNPU(proc, n_nodes=4, input_electrodes=[0, 3], seed=5)
    mux = DNPU(proc, n_nodes=4, input_electrodes=[0, 3], seed=5, multiplex=True)
    x = torch.tensor(np.random.default_rng(3).uniform(-1, 1, (37, 8)), dtype=torch.float32)
    a = flat(x)
    assert calls == [(37, 4, 5)]
    b = mux(x)
    assert calls[1:] == [(37, 5)] * 4
    # float32 matrix products of 37 vs 148 rows may round differently in the last bit (BLAS blocking)
    torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    pop = torch.stack([flat.controls.detach(), DNPU(proc, n_nodes=4, input_electrodes=[0, 3], seed=6).controls.detach()])
    torch.testing.assert_close(mux(x, pop), flat(x, pop), rtol=1e-6, atol=1e-6)
    # gradients reach the controls through the multiplexed path too
    mux(x).sum().backward()
    flat(x).sum().backward()
    torch.testing.assert_close(mux.controls.grad, flat.controls.grad, rtol=1e-5, atol=1e-5)


def test_multiplex_equals_vectorised_on_the_device():
    device, proc, _ = device_pair()
    calls = count_calls(proc)
    flat = DNPU(proc, n_nodes=3, input_electrodes=[1, 0], seed=5)
    mux = DNPU(proc, n_nodes=3, input_electrodes=[1, 0], seed=5, multiplex=True)
    x = torch.tensor(np.random.default_rng(4).uniform(-1, 1, (10, 2)), dtype=torch.float64)
    with torch.no_grad():
        a, b = flat(x), mux(x)
    assert calls == [(10, 3, 5)] + [(10, 5)] * 3
    assert torch.equal(a, b)
    v = flat.voltages(x).detach().numpy()
    np.testing.assert_allclose(a.numpy(), analytic_truth(device, v), rtol=1e-6, atol=1e-6)


# --- switching the back end ----------------------------------------------------------------------------


def test_set_processor_switches_and_restores():
    device, dev_proc, sur_proc = device_pair()
    layer = DNPU(sur_proc, n_nodes=2, input_electrodes=[0, 1], seed=1)
    model = nn.Sequential(layer, nn.Identity())
    assert dnpu_layers(model) == [layer]
    x = torch.tensor(np.random.default_rng(5).uniform(-1, 1, (6, 2)), dtype=torch.float32)
    on_surrogate = model(x).detach()
    old = set_processor(model, dev_proc)
    assert old == [sur_proc] and layer.processor is dev_proc
    with torch.no_grad():
        out = model(x)
    v = layer.voltages(x).detach().double().numpy()
    np.testing.assert_allclose(out.numpy(), analytic_truth(device, v), rtol=1e-5, atol=1e-4)
    assert set_processor(model, sur_proc) == [dev_proc]
    torch.testing.assert_close(model(x).detach(), on_surrogate, rtol=0, atol=0)
    # the context manager restores, also after an error inside it
    with processor_swapped(model, dev_proc) as swapped:
        assert swapped is model and layer.processor is dev_proc
    assert layer.processor is sur_proc
    with pytest.raises(RuntimeError, match="inside"):
        with processor_swapped(model, dev_proc):
            raise RuntimeError("inside")
    assert layer.processor is sur_proc


def test_set_processor_mismatch_changes_nothing():
    _, dev_proc, sur_proc = device_pair()
    layer = DNPU(sur_proc, seed=1)
    for other, message in [
        (DeviceProcessor(AnalyticDevice(n_activation=4)), r"4 activation electrodes .* built for 5"),
        (DeviceProcessor(AnalyticDevice(n_activation=5, low_v=-1.0)), "voltage ranges"),
    ]:
        with pytest.raises(ConfigError, match=message):
            set_processor(layer, other)
        assert layer.processor is sur_proc
        with pytest.raises(ConfigError, match=message):
            with processor_swapped(layer, other):
                pass  # pragma: no cover
        assert layer.processor is sur_proc
    # two layers, the second does not fit: the first is rolled back
    other_layer = DNPU(surrogate(), seed=0)  # 5 electrodes with the RANGES of this file
    model = nn.Sequential(layer, other_layer)
    with pytest.raises(ConfigError, match="voltage ranges"):
        set_processor(model, dev_proc)
    assert layer.processor is sur_proc and other_layer.processor is not dev_proc
    with pytest.raises(ConfigError, match="no DNPU layer"):
        set_processor(nn.Linear(2, 2), dev_proc)


def test_state_dict_holds_only_layer_tensors():
    _, _, sur_proc = device_pair()
    layer = DNPU(sur_proc, n_nodes=2, seed=1)
    assert [p is layer.controls for p in layer.parameters()] == [True]
    keys = set(layer.state_dict())
    assert "controls" in keys
    assert not any(k.startswith(("processor", "_processor")) or "mlp" in k for k in keys)
    surrogate_tensors = {id(t) for t in [*sur_proc.parameters(), *sur_proc.buffers()]}
    assert not any(id(t) in surrogate_tensors for t in layer.state_dict().values())
    fresh = DNPU(sur_proc, n_nodes=2, seed=99)
    fresh.load_state_dict(layer.state_dict())
    x = torch.rand(4, 2) * 2 - 1
    torch.testing.assert_close(fresh(x), layer(x), rtol=0, atol=0)


def test_double_works_end_to_end():
    device, dev_proc, sur_proc = device_pair()
    layer = DNPU(sur_proc, n_nodes=2, seed=1)
    x = torch.tensor([[1.0, -1.0], [0.3, 0.9]])
    out32 = layer(x).detach()
    layer.double()
    assert layer.controls.dtype == torch.float64 and layer.input_scale.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in sur_proc.model.parameters())
    out = layer(x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.detach().float(), out32, rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert layer.controls.grad.dtype == torch.float64 and torch.isfinite(layer.controls.grad).all()
    # on the device path after .double() and .float(): data at the range ends reaches the device
    with processor_swapped(layer, dev_proc), torch.no_grad():
        for convert in (layer.double, layer.float):
            convert()
            dtype = layer.controls.dtype
            out = layer(x.to(dtype))
            v = np.clip(layer.voltages(x.to(dtype)).double().numpy(), -1.2, 0.6)
            np.testing.assert_allclose(out.numpy(), analytic_truth(device, v), rtol=1e-5, atol=1e-4)


# --- configuration errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"input_electrodes": ["a", "zz"]},
            r"unknown input electrode 'zz'; activation electrodes are \['a', 'b', 'c', 'd', 'f'\]",
        ),
        ({"input_electrodes": [0, 5]}, r"input electrode 5 is not an index in 0..4"),
        ({"input_electrodes": [-1, 0]}, r"input electrode -1 is not an index in 0..4"),
        ({"input_electrodes": [0.5, 1]}, r"input electrode 0.5 is not an index"),
        ({"input_electrodes": [True, 2]}, r"input electrode True is not an index"),
        ({"input_electrodes": [1, "b"]}, r"input electrodes \[1, 'b'\] repeat an electrode"),
        ({"input_electrodes": [2, 2]}, r"repeat an electrode"),
        ({"n_nodes": 2, "input_electrodes": [[0, 1], [2]]}, "node 1 has 1 input electrodes, node 0 has 2"),
        ({"n_nodes": 2, "input_electrodes": [[0, 1], [2, 3], [3, 4]]}, "lists 3 nodes, the layer has n_nodes=2"),
        ({"n_nodes": 2, "input_electrodes": [[0, 1], 2]}, "mixes rows and single electrodes"),
        ({"input_electrodes": []}, "input_electrodes is empty"),
        ({"n_nodes": 0}, "n_nodes must be >= 1, got 0"),
        ({"data_range": (1.0, -1.0)}, "low < high"),
        ({"data_range": (0.0, float("inf"))}, "finite"),
        ({"data_range": [(0.0, 1.0)] * 3}, r"data_range must be \(low, high\) or 2 pairs"),
    ],
)
def test_configuration_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DNPU(surrogate(), **kwargs)


def test_numpy_and_torch_integer_electrodes():
    proc = surrogate()
    want = DNPU(proc, n_nodes=2, input_electrodes=[[0, 2], [1, 3]], seed=0)
    for spec in (np.array([[0, 2], [1, 3]]), torch.tensor([[0, 2], [1, 3]]), [[np.int64(0), 2], (1, torch.tensor(3))]):
        layer = DNPU(proc, n_nodes=2, input_electrodes=spec, seed=0)
        assert layer.input_index.tolist() == want.input_index.tolist()
    assert DNPU(proc, n_nodes=2, input_electrodes=np.array([4, 1]), seed=0).input_index.tolist() == [[4, 1]] * 2


# --- gradient descent smoke test --------------------------------------------------------------------------


def test_adam_on_the_controls_lowers_the_error():
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    proc = surrogate(seed=7)
    layer = DNPU(proc, n_nodes=1, input_electrodes=[0, 1], seed=0)
    x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    # a reachable target: the output of the same layer with other controls
    target = DNPU(proc, n_nodes=1, input_electrodes=[0, 1], seed=3)(x).detach()
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.mean((layer(x) - target) ** 2) + layer.regularizer()
        loss.backward()
        optimizer.step()
        layer.constrain()
        losses.append(loss.item())
    assert layer.controls.grad is not None and layer.controls.grad.abs().sum() > 0
    assert losses[-1] < 0.1 * losses[0]
    assert layer.regularizer().item() == 0.0


def test_control_table_writes_range_ends_a_device_accepts():
    """float32 controls clamped to -1.2 / 0.6 are reported as exactly -1.2 / 0.6 V (float64)."""
    from inmaterio.surrogate import load_default_surrogate

    layer = DNPU(SurrogateProcessor(load_default_surrogate()), 2, (3, 4), seed=0)
    with torch.no_grad():
        layer.controls.fill_(-5.0)
        layer.controls[1] = 5.0
    layer.constrain()
    table = layer.control_table()
    assert all(v == -1.2 for v in table[0].values()) and all(v == 0.6 for v in table[1].values())
    assert set(table[0]) == {"e0", "e1", "e2", "e5", "e6"}


def test_population_on_repeated_data_evaluates_distinct_points_once():
    """A 320-sample waveform of 4 points x 26 genomes: 104 surrogate rows, the same outputs."""
    processor = surrogate()
    layer = DNPU(processor, 1, (0, 1), seed=0)
    x = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]).repeat_interleave(80, dim=0)
    genomes = layer.control_low + torch.rand(26, 1, layer.n_controls) * (layer.control_high - layer.control_low)
    rows = []
    processor.model.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    with torch.no_grad():
        out = layer(x, genomes)
    assert rows == [26 * 4] and out.shape == (26, 320, 1)
    for g in (0, 13, 25):
        with torch.no_grad():
            layer.controls.copy_(genomes[g])
            np.testing.assert_allclose(out[g].numpy(), layer(x).numpy(), rtol=1e-5, atol=1e-5)


def test_every_electrode_an_input_gives_a_fixed_node_differentiable_in_its_inputs():
    """All activation electrodes take data (the 7-input MNIST nodes): no controls, gradients reach the inputs."""
    processor = surrogate()
    layer = DNPU(processor, 3, list(range(5)), seed=0)
    assert layer.controls.shape == (3, 0) and layer.control_table() == [{}, {}, {}]
    assert float(layer.regularizer().detach()) == 0.0 and layer.control_bounds().shape == (0, 2)
    x = (torch.rand(4, 15) * 2 - 1).requires_grad_()
    out = layer(x)
    v = torch.tensor(LOW + (HIGH - LOW) * (x.detach().reshape(4, 3, 5).numpy() + 1) / 2, dtype=torch.float32)
    np.testing.assert_allclose(out.detach().numpy(), processor(v).detach().numpy(), rtol=1e-5, atol=1e-5)
    out.sum().backward()
    assert bool((x.grad != 0).any())
