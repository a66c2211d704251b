"""Analog torch layers: tile splitting, im2col convolution, the converters (incl. a DNPU network), training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inmaterio.crossbars.layers import (
    AnalogConv2d,
    AnalogLinear,
    analog_tiles,
    convert_to_analog,
    convert_to_digital,
    split_sizes,
)
from inmaterio.crossbars.tile import AnalogTile, IOConfig, TileConfig, ideal_tile, realistic_tile
from inmaterio.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


def test_split_sizes_are_near_equal_and_within_the_limit():
    assert split_sizes(784, 512) == (392, 392)
    assert split_sizes(1100, 512) == (367, 367, 366)
    assert split_sizes(512, 512) == (512,)
    assert split_sizes(3, 1) == (1, 1, 1)


def test_split_layer_equals_the_unsplit_product_when_ideal():
    layer = AnalogLinear(1100, 700, tile_config=ideal_tile(), seed=0, dtype=F64)
    assert (len(layer.out_splits), len(layer.in_splits)) == (2, 3) and len(list(analog_tiles(layer))) == 6
    assert all(t.in_features <= 512 and t.out_features <= 512 for t in layer.tiles)
    w = layer.get_weight()
    x = torch.randn(5, 1100, generator=torch.Generator().manual_seed(1), dtype=F64)
    torch.testing.assert_close(layer(x), x @ w.T + layer.bias, rtol=1e-12, atol=1e-12)
    # the tiles hold the blocks of W
    torch.testing.assert_close(layer.tile(1, 2).weight.detach(), w[350:, 734:], rtol=0, atol=0)


def test_each_tile_quantises_separately_and_the_sums_are_digital():
    bits, bound = 4, 3.0
    config = TileConfig(io=IOConfig(adc_bits=bits, output_bound=bound), max_rows=8, max_cols=5)
    layer = AnalogLinear(20, 9, tile_config=config, seed=2, dtype=F64)
    assert layer.in_splits == (7, 7, 6) and layer.out_splits == (5, 4)
    w = layer.get_weight()
    x = torch.randn(6, 20, generator=torch.Generator().manual_seed(3), dtype=F64)
    step = 2 * bound / (2**bits - 2)
    rows = []
    r0 = 0
    for n_out in layer.out_splits:  # hand-built: each block read through its own ADC, then summed
        acc = torch.zeros(6, n_out, dtype=F64)
        c0 = 0
        for n_in in layer.in_splits:
            block = w[r0 : r0 + n_out, c0 : c0 + n_in]
            scale = block.abs().max()
            y = (x[:, c0 : c0 + n_in] @ block.T) / scale
            acc += scale * (torch.round(y / step) * step).clamp(-bound, bound)
            c0 += n_in
        rows.append(acc)
        r0 += n_out
    expected = torch.cat(rows, dim=1) + layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    assert (layer(x) - (x @ w.T + layer.bias)).abs().max() > 1e-3  # the ADC is visible


def test_oversize_layer_is_refused_without_splitting():
    with pytest.raises(ConfigError, match=r"in_features = 784 exceeds tile_config\.max_rows = 512 .*allow_split is false"):
        AnalogLinear(784, 30, tile_config={"allow_split": False})
    with pytest.raises(ConfigError, match=r"out_features = 600 exceeds tile_config\.max_cols = 512"):
        AnalogLinear(10, 600, tile_config=TileConfig(allow_split=False))
    AnalogLinear(512, 512, tile_config={"allow_split": False})  # exactly one array: fine
    with pytest.raises(ConfigError, match=r"io\.adc_bits' = 0"):
        AnalogLinear(4, 4, tile_config={"io": {"adc_bits": 0, "output_bound": 1.0}})
    with pytest.raises(ConfigError, match="out_features = 0"):
        AnalogLinear(4, 0)


def test_layer_gradients_are_x_delta_per_tile_and_delta_w_for_the_input():
    layer = AnalogLinear(30, 12, tile_config=TileConfig(max_rows=16, max_cols=8), seed=4, dtype=F64)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 30, generator=g, dtype=F64, requires_grad=True)
    delta = torch.randn(7, 12, generator=g, dtype=F64)
    layer(x).backward(delta)
    torch.testing.assert_close(x.grad, delta @ layer.get_weight(), rtol=1e-12, atol=1e-12)
    full = delta.T @ x.detach()
    torch.testing.assert_close(layer.tile(1, 0).weight.grad, full[6:, :15], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.bias.grad, delta.sum(0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"stride": 2, "padding": 1},
        {"stride": (2, 1), "padding": (1, 2), "dilation": (2, 1)},
        {"padding": "same", "dilation": 2},
        {"padding": "valid", "bias": False},
        {"groups": 2, "padding": 1},
        {"padding": 1, "padding_mode": "reflect"},
        {"padding": (2, 1), "padding_mode": "circular"},
    ],
)
def test_analog_conv2d_with_ideal_periphery_equals_conv2d(kwargs):
    conv = AnalogConv2d(4, 6, (3, 2), **kwargs, seed=6, dtype=F64)
    x = torch.randn(2, 4, 9, 8, generator=torch.Generator().manual_seed(7), dtype=F64)
    w = conv.get_weight()
    digital = nn.Conv2d(4, 6, (3, 2), **kwargs, dtype=F64)
    with torch.no_grad():
        digital.weight.copy_(w)
        if digital.bias is not None:
            digital.bias.copy_(conv.bias)
    torch.testing.assert_close(conv(x), digital(x), rtol=1e-12, atol=1e-12)
    if kwargs == {}:  # against the functional form too, and unbatched
        torch.testing.assert_close(conv(x), F.conv2d(x, w, conv.bias), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(conv(x[0]), F.conv2d(x[:1], w, conv.bias)[0], rtol=1e-12, atol=1e-12)


def test_analog_conv2d_splits_large_kernels_over_tiles_and_learns():
    config = TileConfig(max_rows=20, max_cols=4)
    conv = AnalogConv2d(3, 5, 3, padding=1, tile_config=config, seed=8, dtype=F64)
    assert conv.linears[0].in_splits == (14, 13) and conv.linears[0].out_splits == (3, 2)
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(9), dtype=F64, requires_grad=True)
    y = conv(x)
    torch.testing.assert_close(y, F.conv2d(x, conv.get_weight(), conv.bias, padding=1), rtol=1e-12, atol=1e-12)
    y.square().sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    w2 = conv.get_weight().requires_grad_(True)
    F.conv2d(x2, w2, conv.bias.detach(), padding=1).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-10)
    grads = torch.cat([torch.cat([conv.linears[0].tile(0, c).weight.grad for c in range(2)], 1),
                       torch.cat([conv.linears[0].tile(1, c).weight.grad for c in range(2)], 1)])  # fmt: skip
    torch.testing.assert_close(grads, w2.grad.reshape(5, -1), rtol=1e-10, atol=1e-10)


def test_bad_conv_arguments_are_refused():
    with pytest.raises(ConfigError, match="groups = 4 must divide in_channels = 6"):
        AnalogConv2d(6, 8, 3, groups=4)
    with pytest.raises(ConfigError, match="padding = 'same' needs stride 1"):
        AnalogConv2d(2, 2, 3, stride=2, padding="same")
    with pytest.raises(ConfigError, match="kernel_size = 0"):
        AnalogConv2d(2, 2, 0)
    with pytest.raises(ConfigError, match="padding_mode = 'mirror'"):
        AnalogConv2d(2, 2, 3, padding_mode="mirror")


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, stride=2))
        self.head = nn.ModuleDict({"fc": nn.Linear(2 * 3 * 3, 5), "out": nn.Sequential(nn.Tanh(), nn.Linear(5, 3, bias=False))})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).flatten(1)
        return self.head["out"](self.head["fc"](h))


def test_convert_round_trip_keeps_the_outputs():
    torch.manual_seed(0)
    net = _Net().double().eval()
    x = torch.randn(3, 1, 8, 8, dtype=F64)
    analog = convert_to_analog(net, ideal_tile(), seed=0)
    assert isinstance(analog.features[0], AnalogConv2d) and isinstance(analog.head["out"][1], AnalogLinear)
    assert isinstance(net.features[0], nn.Conv2d)  # the original is untouched
    assert not analog.training and len(list(analog_tiles(analog))) == 4
    torch.testing.assert_close(analog(x), net(x), rtol=1e-12, atol=1e-12)
    back = convert_to_digital(analog)
    assert type(back.features[0]) is nn.Conv2d and type(back.head["fc"]) is nn.Linear
    assert not any(isinstance(m, AnalogTile) for m in back.modules())
    assert torch.equal(back(x), net(x))
    assert isinstance(convert_to_analog(nn.Linear(3, 2)), AnalogLinear)
    assert type(convert_to_digital(AnalogConv2d(2, 2, 1))) is nn.Conv2d


def test_convert_with_a_realistic_periphery_stays_close_and_trains():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.rand(16, 64)
    analog = convert_to_analog(net, realistic_tile(), seed=3)
    y, ref = analog(x), net(x)
    assert (y - ref).abs().max() < 0.1 * ref.abs().max()
    y.square().sum().backward()
    assert all(t.weight.grad is not None and t.weight.grad.abs().sum() > 0 for t in analog_tiles(analog))


def _mnist_model(model: str):
    from inmaterio.config import validate_config
    from inmaterio.processors import SurrogateProcessor
    from inmaterio.studies.mnist import MnistTask, build_model
    from inmaterio.surrogate import load_default_surrogate

    task = validate_config(MnistTask, {"type": "mnist_10dnpu", "model": model, "inputs_per_node": 3})
    processor = SurrogateProcessor(load_default_surrogate()) if model == "dnpu" else None
    return build_model(task, processor, 784, seed=0).eval(), processor


def test_convert_the_dnpu_mnist_network_keeps_its_dnpu_layer_and_back_end():
    from inmaterio.nn import dnpu_layers

    net, processor = _mnist_model("dnpu")
    x = torch.rand(4, 784, generator=torch.Generator().manual_seed(2)) - 0.5
    analog = convert_to_analog(net, ideal_tile(), seed=0)
    linear = analog[1]
    assert isinstance(linear, AnalogLinear) and linear.bias is None and linear.in_splits == (392, 392)
    assert dnpu_layers(analog)[0].processor is processor  # the surrogate is shared, not copied or converted
    torch.testing.assert_close(analog(x), net(x), rtol=1e-4, atol=1e-4)
    assert torch.equal(convert_to_digital(analog)(x), net(x))
    noisy = convert_to_analog(net, realistic_tile(), seed=0).train()
    out = noisy(x)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(t.weight.grad is not None for t in analog_tiles(noisy))


def test_convert_the_relu_baseline_and_a_dnpu_builder_network():
    from inmaterio.nn.layers import dnpu_network
    from inmaterio.processors import SurrogateProcessor
    from inmaterio.surrogate import load_default_surrogate

    net, _ = _mnist_model("relu")
    analog = convert_to_analog(net, ideal_tile(), seed=1)
    assert sum(isinstance(m, AnalogLinear) for m in analog.modules()) == 2
    x = torch.rand(3, 784) - 0.5
    torch.testing.assert_close(analog(x), net(x), rtol=1e-4, atol=1e-5)
    # a network of DNPU layers only: nothing to put on crossbars, the surrogate's own MLP is left alone
    processor = SurrogateProcessor(load_default_surrogate())
    dnpu_net = nn.Sequential(nn.Linear(5, 4), dnpu_network(processor, [2, 1], input_electrodes=(0, 1), seed=0))
    converted = convert_to_analog(dnpu_net, seed=2)
    assert isinstance(converted[0], AnalogLinear)
    assert sum(isinstance(m, AnalogLinear) for m in converted.modules()) == 1
    converted_processor = convert_to_analog(processor)
    assert not any(isinstance(m, AnalogLinear) for m in converted_processor.modules())


def test_seeded_layers_reproduce_and_tiles_draw_distinct_noise():
    config = TileConfig(io=IOConfig(output_noise=0.1), max_rows=10)
    a, b = (AnalogLinear(20, 6, tile_config=config, seed=7) for _ in range(2))
    x = torch.zeros(3, 20)
    assert torch.equal(a.get_weight(), b.get_weight()) and torch.equal(a.bias, b.bias)
    assert torch.equal(a(x), b(x))
    n0, n1 = a.tiles[0](torch.zeros(1, 10)), a.tiles[1](torch.zeros(1, 10))
    assert not torch.equal(n0, n1)  # each tile its own stream
    assert not torch.equal(AnalogLinear(20, 6, tile_config=config, seed=8).get_weight(), a.get_weight())


def test_training_a_small_analog_linear_with_sgd_reduces_the_loss():
    g = torch.Generator().manual_seed(10)
    teacher = torch.randn(3, 12, generator=g) * 0.5
    x = torch.rand(256, 12, generator=g) * 2 - 1
    target = x @ teacher.T
    layer = AnalogLinear(12, 3, tile_config=realistic_tile(), seed=11)
    optimiser = torch.optim.SGD(layer.parameters(), lr=0.1)
    losses = []
    for step in range(150):
        batch = slice((step * 32) % 256, (step * 32) % 256 + 32)
        loss = F.mse_loss(layer(x[batch]), target[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.1 * sum(losses[:10]) / 10


def test_layers_on_cuda_when_there_is_one():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    layer = AnalogLinear(600, 20, tile_config=realistic_tile(), seed=0).cuda()
    x = torch.randn(4, 600, device="cuda", requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.device.type == "cuda" and all(t.generator.device.type == "cuda" for t in layer.tiles)
    conv = convert_to_analog(nn.Conv2d(2, 3, 3).cuda(), realistic_tile(), seed=0)
    assert conv(torch.randn(1, 2, 5, 5, device="cuda")).device.type == "cuda"


def test_state_dict_round_trip_through_a_weights_only_file(tmp_path):
    config = TileConfig(io=IOConfig(adc_bits=8, output_bound=10.0), max_rows=16)
    layer = AnalogLinear(20, 5, tile_config=config, seed=12)
    with torch.no_grad():
        layer.tiles[1].output_scale.fill_(1.5)
        layer.tiles[0].compensation.fill_(1.1)
    torch.save(layer.state_dict(), tmp_path / "layer.pt")
    fresh = AnalogLinear(20, 5, tile_config=config, seed=13)
    fresh.load_state_dict(torch.load(tmp_path / "layer.pt", weights_only=True))
    x = torch.randn(3, 20)
    assert torch.equal(fresh(x), layer(x))
