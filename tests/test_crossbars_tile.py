"""One analog tile and its periphery against closed forms: exact matmul, quantisers, clipping, noise, IR drop, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from inmaterio.config import validate_config
from inmaterio.crossbars.tile import REALISTIC_IO, AnalogTile, IOConfig, TileConfig, ideal_tile, realistic_tile
from inmaterio.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


def _tile(in_features: int, out_features: int, config=None, seed: int = 0, weight=None) -> AnalogTile:
    tile = AnalogTile(in_features, out_features, config, seed=seed, dtype=F64)
    if weight is not None:
        tile.set_weight(weight)
    return tile


def _levels(bound: float, bits: int) -> torch.Tensor:
    """The 2^bits - 1 converter levels over [-bound, bound], built independently of the tile."""
    return torch.linspace(-bound, bound, 2**bits - 1, dtype=F64)


def _nearest(v: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    return levels[(v[..., None] - levels).abs().argmin(dim=-1)]


# --- exactness and quantisation -------------------------------------------------------------------


def test_ideal_tile_is_exactly_the_matmul():
    tile = _tile(37, 11, ideal_tile())
    g = torch.Generator().manual_seed(1)
    for shape in [(5, 37), (2, 3, 37), (37,)]:
        x = torch.randn(*shape, generator=g, dtype=F64)
        assert torch.equal(tile(x), x @ tile.weight.T)
    assert ideal_tile().io.is_ideal and not REALISTIC_IO.is_ideal


def test_dac_quantisation_lands_on_the_nearest_level_within_half_an_lsb():
    bits, bound, n = 5, 1.0, 64
    tile = _tile(n, n, TileConfig(io=IOConfig(dac_bits=bits, input_bound=bound)), weight=torch.eye(n, dtype=F64))
    x = torch.rand(40, n, generator=torch.Generator().manual_seed(2), dtype=F64) * 2 - 1
    y = tile(x)
    step = 2 * bound / (2**bits - 2)
    assert (y - x).abs().max() <= step / 2 + 1e-12
    torch.testing.assert_close(y, _nearest(x, _levels(bound, bits)), rtol=0, atol=1e-12)


def test_dac_with_max_scaling_quantises_each_vector_relative_to_its_max():
    bits, n = 4, 16
    tile = _tile(
        n, n, TileConfig(io=IOConfig(dac_bits=bits, input_bound=1.0, input_scaling="max")), weight=torch.eye(n, dtype=F64)
    )
    x = torch.randn(30, n, generator=torch.Generator().manual_seed(3), dtype=F64) * torch.logspace(-3, 2, 30, dtype=F64)[:, None]
    s = x.abs().amax(dim=-1, keepdim=True)
    torch.testing.assert_close(tile(x), s * _nearest(x / s, _levels(1.0, bits)), rtol=0, atol=1e-12)
    assert ((tile(x) - x).abs() <= s * (1 / (2**bits - 2)) + 1e-12).all()
    assert torch.equal(tile(torch.zeros(2, n, dtype=F64)), torch.zeros(2, n, dtype=F64))  # an all-zero vector: no NaN


def test_adc_quantisation_and_saturation_exactly_at_the_output_bound():
    bits, bound, n = 6, 2.0, 50
    w = 0.5 * torch.eye(n, dtype=F64)  # w_scale = 0.5: normalised output = x, real output = 0.5 * ADC(x)
    tile = _tile(n, n, TileConfig(io=IOConfig(adc_bits=bits, output_bound=bound)), weight=w)
    x = (
        torch.linspace(-3.1, 3.1, n, dtype=F64).repeat(7, 1)
        + torch.rand(7, n, generator=torch.Generator().manual_seed(4), dtype=F64) * 0.01
    )
    y = tile(x)
    inside = x.abs() <= bound
    step = 2 * bound / (2**bits - 2)
    assert ((y / 0.5 - x)[inside].abs() <= step / 2 + 1e-12).all()
    torch.testing.assert_close(y[inside] / 0.5, _nearest(x[inside], _levels(bound, bits)), rtol=0, atol=1e-12)
    assert torch.equal(y[~inside], 0.5 * bound * torch.sign(x[~inside]))
    assert y.abs().max() == 0.5 * bound


def test_saturation_without_adc_clips_at_the_bound_only():
    tile = _tile(3, 3, TileConfig(io=IOConfig(output_bound=1.5)), weight=torch.eye(3, dtype=F64))
    x = torch.tensor([[0.3, -1.2, 4.0], [-2.0, 1.5, 1.49]], dtype=F64)
    assert torch.equal(tile(x), x.clamp(-1.5, 1.5))


def test_input_clipping_at_the_bound():
    tile = _tile(6, 4, TileConfig(io=IOConfig(input_bound=0.5)))
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(5), dtype=F64)
    assert torch.equal(tile(x), x.clamp(-0.5, 0.5) @ tile.weight.T)


# --- gradients ----------------------------------------------------------------------------------------------------


def test_weight_gradient_is_x_delta_and_input_gradient_delta_w_through_an_ideal_backward():
    config = TileConfig(io=REALISTIC_IO.model_copy(update={"output_bound": 1e6}), backward="ideal")
    tile = _tile(20, 7, config)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 5, 20, generator=g, dtype=F64, requires_grad=True)
    delta = torch.randn(3, 5, 7, generator=g, dtype=F64)
    tile(x).backward(delta)
    assert torch.equal(x.grad, delta @ tile.weight.detach())
    torch.testing.assert_close(tile.weight.grad, torch.einsum("bti,btj->ij", delta, x.detach()), rtol=1e-12, atol=1e-12)


def test_gradients_carry_the_digital_gain_and_stop_at_saturated_outputs():
    n = 8
    tile = _tile(n, n, TileConfig(io=IOConfig(output_bound=1.0)), weight=torch.eye(n, dtype=F64))
    with torch.no_grad():
        tile.output_scale.copy_(torch.arange(1, n + 1, dtype=F64))
        tile.compensation.fill_(0.5)
    x = torch.tensor([[0.5, -0.2, 2.0, -3.0, 0.9, 1.0, -1.0, 0.0]], dtype=F64, requires_grad=True)
    delta = torch.ones(1, n, dtype=F64)
    y = tile(x)
    torch.testing.assert_close(y, 0.5 * tile.output_scale * x.detach().clamp(-1, 1))
    y.backward(delta)
    gain = 0.5 * tile.output_scale * (x.detach().abs() <= 1.0)
    assert torch.equal(x.grad, gain * delta)
    assert torch.equal(tile.weight.grad, (gain * delta).T @ x.detach())


def test_input_gradient_is_zero_where_the_dac_clipped():
    tile = _tile(5, 3, TileConfig(io=IOConfig(input_bound=1.0)))
    x = torch.tensor([[0.2, -1.5, 1.0, 3.0, -0.7]], dtype=F64, requires_grad=True)
    delta = torch.ones(1, 3, dtype=F64)
    tile(x).backward(delta)
    assert torch.equal(x.grad, (delta @ tile.weight.detach()) * (x.detach().abs() <= 1.0))


def test_backward_read_through_its_own_adc_stays_within_half_an_lsb():
    bits, bound = 9, 12.0
    back = IOConfig(input_bound=1.0, input_scaling="max", adc_bits=bits, output_bound=bound)
    tile = _tile(40, 30, TileConfig(backward=back))
    g = torch.Generator().manual_seed(7)
    x = torch.randn(16, 40, generator=g, dtype=F64, requires_grad=True)
    delta = torch.randn(16, 30, generator=g, dtype=F64) * 1e-3  # gradients are small: max scaling keeps them resolved
    tile(x).backward(delta)
    exact = delta @ tile.weight.detach()
    lsb = 2 * bound / (2**bits - 2) * tile.max_abs_weight() * delta.abs().amax(dim=-1, keepdim=True)
    assert ((x.grad - exact).abs() <= lsb / 2 + 1e-15).all()
    assert not torch.equal(x.grad, exact)
    assert torch.equal(tile.weight.grad, delta.T @ x.detach())  # the update stays ideal


# --- noise --------------------------------------------------------------------------------------------------------


def test_output_noise_std_matches_the_configured_value():
    sigma, n, reps = 0.1, 64, 400
    w = torch.zeros(n, n, dtype=F64)
    w[0, 0] = -2.0  # w_scale = 2: the noise is sigma in normalised units, 2 sigma in output units
    tile = _tile(n, n, TileConfig(io=IOConfig(output_noise=sigma)), weight=w)
    y = tile(torch.zeros(reps, n, dtype=F64))
    samples = y.flatten()
    expected = sigma * 2.0
    se = expected / math.sqrt(2 * samples.numel())
    assert abs(samples.std().item() - expected) < 3 * se
    assert abs(samples.mean().item()) < 3 * expected / math.sqrt(samples.numel())


@pytest.mark.parametrize("scaling", ["fixed", "max"])
def test_weight_read_noise_is_sigma_w_times_w_scale_times_the_input_norm(scaling):
    sigma_w, n_in, n_out, reps = 0.05, 30, 40, 3000
    tile = _tile(n_in, n_out, TileConfig(io=IOConfig(weight_noise=sigma_w, input_scaling=scaling)), seed=8)
    x = torch.linspace(-0.9, 0.6, n_in, dtype=F64)
    err = (tile(x.repeat(reps, 1)) - x @ tile.weight.detach().T).detach()  # (reps, out)
    expected = sigma_w * tile.max_abs_weight().item() * x.norm().item()
    se = expected / math.sqrt(2 * err.numel())
    assert abs(err.std().item() - expected) < 3 * se
    assert abs(err.mean().item()) < 3 * expected / math.sqrt(err.numel())
    # independent reads: no correlation between rows of the batch, nor between two columns
    e = err.detach().numpy()
    r_rows = np.corrcoef(e[:-1, 0], e[1:, 0])[0, 1]
    r_cols = np.corrcoef(e[:, 0], e[:, 1])[0, 1]
    assert abs(r_rows) < 3 / math.sqrt(reps) and abs(r_cols) < 3 / math.sqrt(reps)


def test_forward_weight_noise_is_one_array_per_call_in_training_only():
    sigma_f, reps = 0.1, 600
    tile = _tile(12, 5, TileConfig(io=IOConfig(forward_weight_noise=sigma_f)), seed=9)
    x = torch.linspace(-1, 1, 12, dtype=F64)
    exact = x @ tile.weight.detach().T
    y = tile(x.repeat(4, 1))
    assert torch.equal(y[0], y[3]) and not torch.equal(y[0], exact)  # the batch shares the noisy array
    err = torch.stack([tile(x) - exact for _ in range(reps)])
    expected = sigma_f * tile.max_abs_weight().item() * x.norm().item()
    assert abs(err.std().item() - expected) < 3 * expected / math.sqrt(2 * err.numel())
    tile.eval()
    assert torch.equal(tile(x), exact)
    tile.train()
    xg = x.repeat(3, 1).requires_grad_(True)
    delta = torch.ones(3, 5, dtype=F64)
    tile(xg).backward(delta)  # forward-only: backward and update see the clean weights
    assert torch.equal(xg.grad, delta @ tile.weight.detach())
    assert torch.equal(tile.weight.grad, delta.T @ xg.detach())


def test_realistic_output_noise_is_half_an_adc_lsb():
    assert REALISTIC_IO.output_noise == pytest.approx(0.5 * REALISTIC_IO.adc_step)
    assert REALISTIC_IO.adc_step == pytest.approx(2 * 12.0 / (2**9 - 2))  # aihwkit's out_res = 1/(2^9 - 2) of 2 * bound
    assert REALISTIC_IO.dac_step == pytest.approx(2 * 1.0 / (2**7 - 2))
    assert realistic_tile().backward == REALISTIC_IO and realistic_tile(ideal_backward=True).backward == "ideal"


# --- IR drop ------------------------------------------------------------------------------------------------------


def _column_current(g: np.ndarray, v: np.ndarray, r: float) -> float:
    """Exact current into the ADC (virtual ground after the last row) of one sense line: cells of conductance
    ``g`` driven at ``v`` (ideal row drivers), wire resistance ``r`` between neighbouring cells and to the ADC.
    Kirchhoff's current law at every node, solved as a linear system."""
    n = len(g)
    a = np.zeros((n, n))
    for j in range(n):
        a[j, j] = g[j] + (1 / r if j > 0 else 0.0) + 1 / r  # to the previous node (none for row 0) and to the next
        if j > 0:
            a[j, j - 1] = -1 / r
        if j < n - 1:
            a[j, j + 1] = -1 / r
    nodes = np.linalg.solve(a, g * v)
    return nodes[-1] / r


def test_ir_drop_matches_an_explicit_sum_over_cells():
    ir, n_in, n_out = 1e-3, 9, 4
    tile = _tile(n_in, n_out, TileConfig(io=IOConfig(ir_drop=ir)), seed=10)
    x = torch.rand(3, n_in, generator=torch.Generator().manual_seed(11), dtype=F64) * 4 - 2
    w = tile.weight.detach().numpy()
    ws = np.abs(w).max()
    expected = np.zeros((3, n_out))
    for i in range(n_out):
        for part, sign in ((np.maximum(w[i], 0) / ws, 1.0), (np.maximum(-w[i], 0) / ws, -1.0)):
            for j in range(n_in):
                upstream = sum(sum(part[k] for k in range(m + 1)) for m in range(j, n_in))
                expected[:, i] += sign * ws * part[j] * (1 - ir * upstream) * x[:, j].numpy()
    np.testing.assert_allclose(tile(x).detach().numpy(), expected, rtol=1e-12, atol=1e-14)


def test_ir_drop_map_follows_weight_changes():
    tile = _tile(6, 2, TileConfig(io=IOConfig(ir_drop=1e-2)), seed=16)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(17), dtype=F64)
    first = tile(x)
    with torch.no_grad():
        tile.weight.mul_(-0.5)  # in place, as an optimiser step
    torch.testing.assert_close(tile(x), _tile(6, 2, TileConfig(io=IOConfig(ir_drop=1e-2)), weight=tile.weight.detach())(x))
    tile.set_effective_weight(torch.zeros(2, 6))
    assert torch.equal(tile(x), torch.zeros(3, 2, dtype=F64)) and not torch.equal(first, torch.zeros(3, 2, dtype=F64))


def test_ir_drop_of_a_uniform_column_matches_the_nodal_solution():
    n, g, v, r = 64, 0.8, 0.5, 2e-6  # g_max = 1, v_read = 1: ir_drop = r * g_max = r
    exact_loss = 1 - _column_current(np.full(n, g), np.full(n, v), r) / (n * g * v)
    tile = _tile(n, 1, TileConfig(io=IOConfig(ir_drop=r), weight_range=1.0), weight=torch.full((1, n), g, dtype=F64))
    model_loss = 1 - tile(torch.full((1, n), v, dtype=F64)).item() / (n * g * v)
    assert 1e-3 < exact_loss < 0.01
    # equal cells: C_j = g (d n - d (d - 1) / 2), d = n - j, whose mean is g (n + 1)(2 n + 1) / 6
    assert model_loss == pytest.approx(r * g * (n + 1) * (2 * n + 1) / 6, rel=1e-9)
    assert abs(model_loss - exact_loss) < 0.01 * exact_loss


def test_ir_drop_error_is_second_order_in_the_wire_resistance():
    """Random differential pairs and mixed-sign inputs: the model's error against the nodal solution of both
    sense lines shrinks like r^2 (ten times smaller r: the error relative to the drop ten times smaller)."""
    n, n_out = 48, 3
    rng = np.random.default_rng(15)
    w = rng.uniform(-1, 1, size=(n_out, n))
    v = rng.uniform(-1, 1, size=n)
    ideal = w @ v
    rel_errors = []
    for r in (1e-4, 1e-5):
        exact = np.array(
            [_column_current(np.maximum(w[i], 0), v, r) - _column_current(np.maximum(-w[i], 0), v, r) for i in range(n_out)]
        )
        tile = _tile(n, n_out, TileConfig(io=IOConfig(ir_drop=r), weight_range=1.0), weight=torch.tensor(w))
        model = tile(torch.tensor(v)).detach().numpy()
        rel_errors.append(np.abs(model - exact).max() / np.abs(exact - ideal).max())
    assert rel_errors[0] < 0.05
    assert rel_errors[1] < rel_errors[0] / 5


# --- digital scales, inference hooks ----------------------------------------------------------------------------


def test_output_scale_offset_and_compensation_are_digital():
    tile = _tile(6, 3)
    with torch.no_grad():
        tile.output_scale.copy_(torch.tensor([1.0, 2.0, -1.0]))
        tile.output_offset.copy_(torch.tensor([0.5, 0.0, -0.25]))
        tile.compensation.fill_(3.0)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(12), dtype=F64)
    torch.testing.assert_close(
        tile(x), 3.0 * torch.tensor([1.0, 2.0, -1.0], dtype=F64) * (x @ tile.weight.T) + tile.output_offset
    )


def test_set_effective_weight_and_compensation_restore_a_drifted_tile():
    tile = _tile(10, 4, TileConfig(io=IOConfig(adc_bits=12, output_bound=20.0)))
    w = tile.weight.detach().clone()
    x = torch.randn(5, 10, generator=torch.Generator().manual_seed(13), dtype=F64, requires_grad=True)
    before = tile(x).detach()
    tile.set_effective_weight(0.5 * w)  # uniform drift to half the conductance
    assert tile.max_abs_weight() == w.abs().max()  # the mapping scale stays the programmed one
    drifted = tile(x)
    lsb = tile.config.io.adc_step * w.abs().max()
    torch.testing.assert_close(drifted.detach(), 0.5 * before, rtol=0, atol=0.75 * lsb)  # Q(y/2) vs Q(y)/2
    delta = torch.ones(5, 4, dtype=F64)
    drifted.backward(delta)
    assert torch.equal(x.grad, delta @ (0.5 * w))  # the backward read sees the array's conductances
    assert torch.equal(tile.weight.grad, delta.T @ x.detach())  # the update goes to the weights
    tile.compensation.fill_(2.0)
    torch.testing.assert_close(tile(x).detach(), before, rtol=0, atol=1.5 * lsb)
    tile.compensation.fill_(1.0)
    tile.set_effective_weight(None)
    assert torch.equal(tile(x).detach(), before)
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        tile.set_effective_weight(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        tile.set_effective_weight(torch.full((4, 10), float("nan")))


def test_seeded_tiles_reproduce_and_differ_by_seed():
    config = realistic_tile()
    x = torch.randn(8, 30, generator=torch.Generator().manual_seed(14))
    a, b, c = (AnalogTile(30, 20, config, seed=s) for s in (5, 5, 6))
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb)
    assert not torch.equal(a(x), ya)  # the stream moves on
    assert a.generator.device == a.weight.device


@pytest.mark.parametrize("scaling", ["fixed", "max"])
def test_a_read_without_gradients_gives_the_same_outputs_as_one_with(scaling):
    io = REALISTIC_IO.model_copy(update={"input_scaling": scaling, "weight_noise": 0.02})
    x = torch.randn(16, 30, generator=torch.Generator().manual_seed(3)) * 0.7
    a, b = (AnalogTile(30, 20, TileConfig(io=io), seed=9) for _ in range(2))
    with torch.no_grad():
        y_inference = a(x)
    y_training = b(x.requires_grad_())
    assert y_training.requires_grad
    assert torch.equal(y_inference, y_training.detach())


def test_tile_follows_its_weights_across_dtypes_and_devices():
    tile = AnalogTile(8, 3, realistic_tile(), seed=0)
    tile.double()
    assert tile.weight.dtype == F64 and tile.output_scale.dtype == F64
    assert tile(torch.randn(2, 8, dtype=F64)).dtype == F64
    if torch.cuda.is_available():
        tile.cuda()
        assert tile.generator.device.type == "cuda"
        x = torch.randn(2, 8, dtype=F64, device="cuda", requires_grad=True)
        tile(x).sum().backward()
        assert x.grad.device.type == "cuda" and tile.weight.grad.device.type == "cuda"


def test_wrong_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\).*\(2, 7\)"):
        AnalogTile(8, 3)(torch.zeros(2, 7))


# --- bad configurations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"io": {"dac_bits": 0, "input_bound": 1.0}}, r"io\.dac_bits' = 0.*greater than or equal to 2"),
        ({"io": {"adc_bits": -3, "output_bound": 1.0}}, r"io\.adc_bits' = -3"),
        ({"io": {"input_bound": 0.0}}, r"io\.input_bound' = 0\.0.*greater than 0"),
        ({"io": {"output_bound": -1.0}}, r"io\.output_bound' = -1\.0"),
        ({"io": {"output_noise": -0.1}}, r"io\.output_noise' = -0\.1"),
        ({"io": {"weight_noise": -1e-3}}, r"io\.weight_noise'"),
        ({"io": {"ir_drop": -1.0}}, r"io\.ir_drop'"),
        ({"io": {"output_noise": float("nan")}}, r"io\.output_noise' = nan"),
        ({"io": {"adc_bits": 8}}, r"adc_bits = 8 needs an output_bound"),
        ({"io": {"dac_bits": 8}}, r"dac_bits = 8 needs an input_bound"),
        ({"io": {"dac_bit": 7}}, r"unknown key 'io\.dac_bit'"),
        ({"rows": 5}, r"unknown key 'rows'"),
        ({"max_rows": 0}, r"max_rows' = 0"),
        ({"weight_range": 0}, r"weight_range' = 0"),
        ({"backward": "noisy"}, r"backward"),
        ({"backward": {"forward_weight_noise": 0.1}}, r"backward\.forward_weight_noise = 0\.1 must be 0"),
        ({"io": {"dac_bits": "7", "input_bound": 1.0}}, r"io\.dac_bits' = '7': expected a number"),
    ],
)
def test_bad_tile_configs_name_the_field(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_config(TileConfig, data)
    with pytest.raises(ConfigError, match=pattern):
        AnalogTile(4, 4, data)


def test_configs_are_frozen_and_direct_construction_names_the_field():
    with pytest.raises(ValidationError, match="dac_bits"):
        IOConfig(dac_bits=1, input_bound=1.0)
    with pytest.raises(ValidationError, match="frozen"):
        REALISTIC_IO.dac_bits = 3


def test_a_tile_larger_than_the_array_is_refused():
    with pytest.raises(ConfigError, match="in_features = 600 exceeds the array's max_rows = 512"):
        AnalogTile(600, 10)
    with pytest.raises(ConfigError, match="out_features = 9 exceeds the array's max_cols = 8"):
        AnalogTile(4, 9, {"max_cols": 8})
    with pytest.raises(ConfigError, match="in_features = 0"):
        AnalogTile(0, 3)
