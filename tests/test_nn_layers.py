"""DNPU convolution and network builders: against naive loops, shape formulas and the device path."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inmaterio.devices.analytic import AnalyticDevice
from inmaterio.errors import ConfigError
from inmaterio.nn import DNPU, dnpu_layers, set_processor
from inmaterio.nn.layers import DNPUConv2d, NodeOutput, dnpu_network, single_dnpu, two_two_one
from inmaterio.processors import DeviceProcessor, SurrogateProcessor
from inmaterio.surrogate import SurrogateModel
from inmaterio.surrogate.info import DeviceInfo
from inmaterio.training.losses import mse

N_ELECTRODES = 7
RANGE_V = (-1.2, 0.6)  # the AnalyticDevice's default range, so a network can switch to it


def tiny_surrogate(seed: int = 0) -> SurrogateProcessor:
    """A random 7-electrode surrogate (16, 16) whose output spans tens of nA."""
    info = DeviceInfo(
        electrode_names=[f"e{k}" for k in range(N_ELECTRODES)],
        readout_name=f"e{N_ELECTRODES}",
        voltage_ranges_v=[RANGE_V] * N_ELECTRODES,
    )
    torch.manual_seed(seed)
    model = SurrogateModel(info, hidden_sizes=(16, 16), activation="tanh")
    model.set_output_normalization(0.0, 50.0)
    return SurrogateProcessor(model)


@pytest.fixture
def surrogate():
    return tiny_surrogate()


# -- DNPUConv2d -------------------------------------------------------------------------------------


def naive_conv(conv: DNPUConv2d, x: torch.Tensor) -> torch.Tensor:
    """Loop over output positions and nodes; each node is a one-node DNPU with that node's controls."""
    k, (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    layer = conv.dnpu
    nodes = []
    for n in range(layer.n_nodes):
        node = DNPU(layer.processor, 1, layer.input_index[n].tolist(), layer.data_range)
        with torch.no_grad():
            node.controls.copy_(layer.controls[n : n + 1])
        nodes.append(node)
    xp = F.pad(x, (pw, pw, ph, ph))
    h_out = (x.shape[2] + 2 * ph - k) // sh + 1
    w_out = (x.shape[3] + 2 * pw - k) // sw + 1
    out = torch.zeros(x.shape[0], conv.out_channels, h_out, w_out)
    for i in range(h_out):
        for j in range(w_out):
            for o in range(conv.out_channels):
                for c in range(conv.in_channels):
                    patch = xp[:, c, i * sh : i * sh + k, j * sw : j * sw + k].reshape(x.shape[0], k * k)
                    out[:, o, i, j] += nodes[o * conv.in_channels + c](patch)[:, 0]
    return out


def test_conv_matches_naive_loop_over_positions_and_nodes(surrogate):
    conv = DNPUConv2d(surrogate, in_channels=2, out_channels=3, kernel_size=2, stride=2, padding=1, seed=1)
    x = torch.rand(4, 2, 5, 6, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        out = conv(x)
        ref = naive_conv(conv, x)
    assert out.shape == (4, 3, 3, 4)
    assert out.abs().max() > 1.0  # not trivially zero
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_conv_is_one_processor_call(surrogate):
    calls = []
    conv = DNPUConv2d(surrogate, 3, 2, kernel_size=2, seed=0)
    surrogate.register_forward_hook(lambda module, args, out: calls.append(tuple(args[0].shape)))
    conv(torch.zeros(5, 3, 4, 4))
    assert calls == [(5 * 9, 2 * 3, N_ELECTRODES)]


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "size"),
    [(1, 1, 0, (4, 5)), (2, 1, 0, (5, 5)), (2, 2, 1, (7, 4)), (2, (1, 3), (2, 0), (6, 9)), (1, 2, 3, (3, 3))],
)
def test_conv_output_shape_formula(surrogate, kernel, stride, padding, size):
    conv = DNPUConv2d(surrogate, 1, 2, kernel, stride=stride, padding=padding, seed=0)
    s = (stride, stride) if isinstance(stride, int) else stride
    p = (padding, padding) if isinstance(padding, int) else padding
    expected = tuple((n + 2 * pp - kernel) // ss + 1 for n, pp, ss in zip(size, p, s))
    out = conv(torch.zeros(3, 1, *size))
    assert out.shape == (3, 2, *expected)
    assert conv.output_size(*size) == expected


def test_conv_multiplex_gives_the_same_result(surrogate):
    x = torch.rand(2, 2, 4, 4) * 2 - 1
    vectorised = DNPUConv2d(surrogate, 2, 2, 2, padding=1, seed=5)
    multiplexed = DNPUConv2d(surrogate, 2, 2, 2, padding=1, seed=5, multiplex=True)
    torch.testing.assert_close(multiplexed(x), vectorised(x), rtol=0, atol=1e-5)


def test_conv_gradient_reaches_the_controls(surrogate):
    conv = DNPUConv2d(surrogate, 2, 3, 2, seed=0)
    conv(torch.rand(2, 2, 3, 3) * 2 - 1).square().sum().backward()
    grad = conv.dnpu.controls.grad
    assert grad is not None and grad.shape == (6, N_ELECTRODES - 4)
    assert bool((grad.abs().sum(dim=1) > 0).all())  # every node's controls
    assert [p is conv.dnpu.controls for p in conv.parameters()] == [True]


def test_conv_electrodes_and_errors(surrogate):
    conv = DNPUConv2d(surrogate, 1, 1, 2, input_electrodes=("e3", "e4", "e5", "e6"))
    assert conv.dnpu.input_index.tolist() == [[3, 4, 5, 6]]
    assert DNPUConv2d(surrogate, 1, 1, 2).dnpu.input_index.tolist() == [[0, 1, 2, 3]]
    with pytest.raises(ConfigError, match="kernel_size 3 needs 9 input electrodes"):
        DNPUConv2d(surrogate, 1, 1, 3)
    with pytest.raises(ConfigError, match="needs 4 input electrodes per node"):
        DNPUConv2d(surrogate, 1, 1, 2, input_electrodes=(0, 1, 2))
    with pytest.raises(ConfigError, match="stride"):
        DNPUConv2d(surrogate, 1, 1, 2, stride=0)
    with pytest.raises(ConfigError, match=r"\(batch, 1, H, W\)"):
        conv(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ConfigError, match="smaller than the kernel"):
        conv(torch.zeros(2, 1, 1, 4))


# -- builders ---------------------------------------------------------------------------------------


def test_two_two_one_structure(surrogate):
    net = two_two_one(surrogate, seed=0)
    kinds = [type(m) for m in net]
    assert kinds == [DNPU, nn.BatchNorm1d, DNPU, nn.BatchNorm1d, DNPU, NodeOutput]
    layers = dnpu_layers(net)
    assert [layer.n_nodes for layer in layers] == [2, 2, 1]
    assert [layer.data_range for layer in layers] == [[(-1.0, 1.0)] * 2] + [[(-2.0, 2.0)] * 2] * 2
    assert all(bn.affine and bn.num_features == 2 for bn in (net[1], net[3]))
    assert not torch.equal(layers[0].controls, layers[1].controls)  # distinct seeds per layer
    again = two_two_one(surrogate, seed=0)
    assert all(torch.equal(a.controls, b.controls) for a, b in zip(layers, dnpu_layers(again)))
    assert net(torch.rand(8, 2) * 2 - 1).shape == (8,)


def test_two_two_one_hidden_layers_see_the_batch_normalised_values(surrogate):
    """Layer 2's input voltages: BatchNorm output mapped from [-2, 2] onto [-1.2, 0.6] V, saturated."""
    net = two_two_one(surrogate, hidden_input_electrodes=(5, 6), seed=3)
    x = torch.rand(16, 2) * 2 - 1
    hidden = net[1](net[0](x))  # (16, 2), batch-normalised
    v = net[2].voltages(hidden)  # (16, 2 nodes, 7)
    expected = (-1.2 + (hidden + 2.0) * 1.8 / 4.0).clamp(-1.2, 0.6)
    torch.testing.assert_close(v[:, 0, 5:], expected)
    torch.testing.assert_close(v[:, 1, 5:], expected)


def test_single_dnpu_and_network_widths(surrogate):
    net = single_dnpu(surrogate, input_electrodes=(2, 4), seed=0)
    assert [type(m) for m in net] == [DNPU, NodeOutput]
    assert net(torch.zeros(5, 2)).shape == (5,)
    split = dnpu_network(surrogate, [4, 2, 3], seed=0)  # 4 -> 2 nodes x 2 inputs (split) -> 3 x 2 (broadcast)
    assert split(torch.rand(6, 2)).shape == (6, 3)
    no_bn = dnpu_network(surrogate, [2, 1], batch_norm=False, hidden_data_range=(-100.0, 100.0))
    assert [type(m) for m in no_bn] == [DNPU, DNPU, NodeOutput]
    with pytest.raises(ConfigError, match=r"previous width must equal n_inputs = 2 .* nodes \* n_inputs = 4"):
        dnpu_network(surrogate, [3, 2])
    with pytest.raises(ConfigError, match="layer_sizes"):
        dnpu_network(surrogate, [2, 0])
    with pytest.raises(ConfigError, match="one-node layer"):
        NodeOutput()(torch.zeros(3, 2))


# -- time multiplexing and the device path -----------------------------------------------------------


class CountingDeviceProcessor(DeviceProcessor):
    """Records the shape of every batch of voltages it evaluates."""

    def __init__(self, device):
        super().__init__(device)
        self.calls = []

    def forward(self, voltages):
        self.calls.append(tuple(voltages.shape))
        return super().forward(voltages)


def test_two_two_one_multiplexed_equals_vectorised_on_device_and_surrogate():
    x = torch.rand(32, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    device = CountingDeviceProcessor(AnalyticDevice())
    vectorised = two_two_one(device, seed=7).eval()
    multiplexed = two_two_one(device, seed=7, multiplex=True).eval()
    with torch.no_grad():
        y_vec = vectorised(x)
        assert device.calls == [(32, 2, 7), (32, 2, 7), (32, 1, 7)]
        device.calls.clear()
        y_mux = multiplexed(x)
        assert device.calls == [(32, 7)] * 5  # node after node: 2 + 2 + 1 device runs
    assert y_vec.shape == (32,) and y_vec.std() > 1.0
    torch.testing.assert_close(y_mux, y_vec, rtol=0, atol=1e-9)

    surrogate = tiny_surrogate()
    vectorised = two_two_one(surrogate, seed=7)
    multiplexed = two_two_one(surrogate, seed=7, multiplex=True)
    torch.testing.assert_close(multiplexed(x), vectorised(x), rtol=0, atol=1e-4)  # batch statistics in training mode


def test_network_trained_on_surrogate_runs_on_device(surrogate):
    net = two_two_one(surrogate, seed=1)
    net(torch.rand(16, 2) * 2 - 1)  # update the batch-norm running statistics
    assert len(dnpu_layers(net)) == 3
    device = DeviceProcessor(AnalyticDevice())
    old = set_processor(net, device)
    assert old == [surrogate] * 3 and all(layer.processor is device for layer in dnpu_layers(net))
    net.eval()
    with torch.no_grad():
        y = net(torch.rand(10, 2) * 2 - 1)
    assert y.shape == (10,) and bool(torch.isfinite(y).all())


# -- learning ----------------------------------------------------------------------------------------


def test_two_two_one_parameters_and_learning(surrogate):
    net = two_two_one(surrogate, seed=0)
    layers = dnpu_layers(net)
    expected = [
        layers[0].controls,
        net[1].weight,
        net[1].bias,
        layers[1].controls,
        net[3].weight,
        net[3].bias,
        layers[2].controls,
    ]
    params = list(net.parameters())
    assert len(params) == 7 and all(p is q for p, q in zip(params, expected))
    assert sum(p.numel() for p in params) == 2 * 5 + 2 * 5 + 1 * 5 + 2 * (2 + 2)

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 2, generator=generator) * 2 - 1
    target = 20.0 * torch.sign(x[:, 0] * x[:, 1])  # XOR-like, nA
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = mse(net(x), target)
        loss.backward()
        optimizer.step()
        for layer in layers:
            layer.constrain()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    assert losses[-1] < 0.75 * float(target.var(unbiased=False))  # better than the best constant output
