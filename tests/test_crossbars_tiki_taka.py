"""Tiki-Taka v1/v2: reductions to AnalogSGD, the transfer rule against a reference loop, asymmetric devices, resume."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from inmaterio.crossbars import AnalogLinear, convert_to_analog
from inmaterio.crossbars.analog_sgd import AnalogSGD
from inmaterio.crossbars.pulsed import ConstantStepDevice, preset, read_weights
from inmaterio.crossbars.tiki_taka import TikiTaka, TikiTakaConfig
from inmaterio.errors import ConfigError

IDEAL = ConstantStepDevice(w_min=-10.0, w_max=10.0, dw_min=1e-4).model_dump()


def _data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 6, generator=g, dtype=torch.float64) * 2 - 1
    y = x @ torch.randn(6, 3, generator=g, dtype=torch.float64) * 0.3
    return x, y


def _net(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _train(model, optimizer, x, y, batch, steps):
    for k in range(steps):
        i = (k * batch) % len(x)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x[i : i + batch]), y[i : i + batch]).backward()
        optimizer.step()


def _idle_rows(opt, tile_index, n_rows):
    """Record ``n_rows`` rows with a zero output gradient: no pulse on A, but each counts towards a transfer."""
    tile = opt.tiles[tile_index]
    x = torch.ones(n_rows, tile.in_features, dtype=tile.weight.dtype)
    tile.update_rows.append((x, torch.zeros(n_rows, tile.out_features, dtype=tile.weight.dtype)))
    opt.step()


def _set_fast(opt, tile_index, values):
    """Put A's read weights of a tile to ``values`` (A's devices are noiseless and far from their bounds here)."""
    w = opt.tiles[tile_index].weight
    opt.state[w]["a_states"] = opt.state[w]["a_reference"] + values


def test_ttv1_with_gamma_one_and_no_transfer_is_analog_sgd():
    """W = A + C with C fixed: A takes AnalogSGD's pulses (same devices, same generator stream)."""
    x, y = _data()
    first, second = convert_to_analog(_net()), convert_to_analog(_net())
    sgd = AnalogSGD(first, {"device": IDEAL, "pulse_train": {"bl": 7}}, lr=0.1, seed=5)
    config = {"version": 1, "device_a": IDEAL, "device_c": IDEAL, "pulse_train": {"bl": 7}, "gamma": 1.0, "transfer_every": 10**9}
    tt = TikiTaka(second, config, lr=0.1, seed=5)
    _train(first, sgd, x, y, batch=4, steps=12)
    _train(second, tt, x, y, batch=4, steps=12)
    moved = 0.0
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    for i in range(len(tt.tiles)):
        arrays = tt.devices(i)
        moved += float(read_weights(*arrays["a"]).abs().sum())
        c_array, c_states = arrays["c"]
        assert torch.equal(c_states, c_array.reference + convert_to_analog(_net()).state_dict()[f"{2 * i}.tiles.0.weight"])
    assert moved > 0.01  # the gradient did go to A


def test_ttv1_transfer_moves_column_t_mod_n_by_lr_transfer_times_a_in_expectation():
    model = AnalogLinear(3, 4, bias=False, seed=0).double()
    device = ConstantStepDevice(w_min=-10.0, w_max=10.0, dw_min=0.002).model_dump()
    config = {"version": 1, "device_a": device, "device_c": device, "transfer_lr": 0.1, "transfer_pulse_train": {"bl": 40}}
    opt = TikiTaka(model, config, lr=0.1, seed=3)
    a = torch.tensor([[0.3, -0.2, 0.05], [-0.4, 0.1, 0.0], [0.25, 0.35, -0.15], [0.0, -0.3, 0.45]], dtype=torch.float64)
    _set_fast(opt, 0, a)
    w = opt.tiles[0].weight
    changes = {j: [] for j in range(3)}
    for t in range(3 * 150):
        before = opt.state[w]["c_states"].clone()
        _idle_rows(opt, 0, 1)
        change = opt.state[w]["c_states"] - before
        j = t % 3
        others = [k for k in range(3) if k != j]
        assert torch.equal(change[:, others], torch.zeros_like(change[:, others]))  # only column j pulses
        changes[j].append(change[:, j])
    assert torch.equal(opt.state[w]["a_states"] - opt.state[w]["a_reference"], a)  # zero gradient: A untouched
    for j, rows in changes.items():
        rows = torch.stack(rows)
        se = rows.std(0) / math.sqrt(len(rows))
        assert ((rows.mean(0) - 0.1 * a[:, j]).abs() <= 4.5 * se + 1e-12).all(), j
        assert (rows.abs() <= 40 * 0.002 + 1e-12).all()  # at most BL pulses per transfer


def _reference_ttv2(a, h, last, c, j, lr_t, dw, threshold, hysteresis, buffer, max_pulses):
    """One TTv2 transfer of column j, element by element (the rule as written in the module docstring)."""
    for i in range(len(a)):
        value = h[i][j] + lr_t * a[i][j] / dw
        sign = (value > 0) - (value < 0)
        theta = threshold + (hysteresis if last[i][j] != 0 and sign != last[i][j] else 0.0)
        n = sign * math.floor(abs(value)) if abs(value) >= theta else 0
        if max_pulses is not None:
            n = max(-max_pulses, min(max_pulses, n))
        if n != 0:
            value = 0.0 if buffer == "reset" else value - n
            last[i][j] = sign
            c[i][j] += n * dw
        h[i][j] = value


@pytest.mark.parametrize(
    ("buffer", "hysteresis", "threshold", "max_pulses"),
    [("reset", 0.0, 1.0, None), ("subtract", 0.0, 1.0, None), ("reset", 1.5, 1.0, None), ("subtract", 0.7, 2.0, 1)],
)
def test_ttv2_buffer_accumulates_exactly_and_transfers_whole_pulses(buffer, hysteresis, threshold, max_pulses):
    model = AnalogLinear(3, 4, bias=False, seed=0).double()
    dw = 0.01
    device = ConstantStepDevice(w_min=-1.0, w_max=1.0, dw_min=dw).model_dump()
    config = {
        "device_a": device,
        "device_c": device,
        "transfer_every": 2,
        "transfer_lr": 0.05,
        "threshold": threshold,
        "hysteresis": hysteresis,
        "buffer": buffer,
        "max_transfer_pulses": max_pulses,
    }
    opt = TikiTaka(model, config, lr=0.1, seed=0)
    w = opt.tiles[0].weight
    c0 = read_weights(*opt.devices(0)["c"]).clone()
    a = torch.tensor([[0.3, -0.2, 0.05], [-0.45, 0.1, 0.0], [0.25, 0.35, -0.15], [0.07, -0.3, 0.6]], dtype=torch.float64)
    h, last, c = [[0.0] * 3 for _ in range(4)], [[0] * 3 for _ in range(4)], c0.tolist()
    for t in range(10):
        if t == 5:
            a = -0.5 * a  # the sign flips: the hysteresis acts
        _set_fast(opt, 0, a)
        _idle_rows(opt, 0, 1)  # odd row: no transfer
        assert opt.rows_seen(0) == 2 * t + 1
        _idle_rows(opt, 0, 1)  # transfer t, column t mod 3
        _reference_ttv2(a.tolist(), h, last, c, t % 3, 0.05, dw, threshold, hysteresis, buffer, max_pulses)
        assert torch.allclose(opt.buffer(0), torch.tensor(h, dtype=torch.float64), atol=1e-12, rtol=0)
        assert torch.allclose(read_weights(*opt.devices(0)["c"]), torch.tensor(c, dtype=torch.float64), atol=1e-12, rtol=0)
        assert torch.equal(w.detach(), read_weights(*opt.devices(0)["c"]))  # W = C (gamma 0)
    assert not torch.equal(read_weights(*opt.devices(0)["c"]), c0)
    if hysteresis == 1.5:  # the flip of A's sign made the hysteresis hold back some reversals
        h0, last0, plain = [[0.0] * 3 for _ in range(4)], [[0] * 3 for _ in range(4)], c0.tolist()
        a = a / -0.5
        for t in range(10):
            a = -0.5 * a if t == 5 else a
            _reference_ttv2(a.tolist(), h0, last0, plain, t % 3, 0.05, dw, threshold, 0.0, buffer, max_pulses)
        assert plain != c


def _regression(make, rows=800, batch=8, seed=0):
    """A 2-input linear fit with label noise; returns the mean squared weight error over the second half."""
    target = torch.tensor([[-0.6, 0.7]], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, 2, generator=g, dtype=torch.float64) * 2 - 1
    y = x @ target.T + 0.3 * torch.randn(rows, 1, generator=g, dtype=torch.float64)
    model = AnalogLinear(2, 1, bias=False, seed=1).double()
    opt = make(model)
    errors = []
    for k in range(0, rows, batch):
        opt.zero_grad()
        nn.functional.mse_loss(model(x[k : k + batch]), y[k : k + batch], reduction="sum").backward()
        opt.step()
        errors.append(float((model.get_weight() - target).square().sum()))
    return sum(errors[len(errors) // 2 :]) / (len(errors) - len(errors) // 2)


def test_ttv2_reaches_the_optimum_where_sgd_on_asymmetric_devices_stalls_towards_the_symmetry_point():
    """Soft bounds with up/down asymmetry 0.3: symmetry point +0.3, optimum (-0.6, 0.7). SGD's noisy updates pull
    every weight towards +0.3; TTv2 (A zero-shifted) does not."""
    device = {"kind": "soft_bounds", "dw_min": 0.02, "up_down": 0.3, "w_min": -1.0, "w_max": 1.0}
    sgd = _regression(lambda m: AnalogSGD(m, {"device": device}, lr=0.05, seed=0))
    config = {"device_a": {**device, "reference": "zero_shift"}, "device_c": device, "transfer_every": 2, "transfer_lr": 0.1}
    tt = _regression(lambda m: TikiTaka(m, config, lr=0.05, seed=0))
    assert sgd > 0.05  # the bias is large: sqrt(0.05) ~ 0.22 of weight error
    assert tt < 0.3 * sgd


def test_read_slow_weights_returns_c_not_the_network_weight():
    x, y = _data()
    model = convert_to_analog(_net())
    config = {"version": 1, "device_a": preset("gokmen_vlasov").model_dump(), "device_c": IDEAL, "gamma": 0.5}
    opt = TikiTaka(model, config, lr=0.2, seed=1)
    _train(model, opt, x, y, batch=4, steps=5)
    state = opt.generator.get_state()
    c = read_weights(*opt.devices(0)["c"])
    est = opt.read_slow_weights(0, 200, torch.Generator().manual_seed(0))
    assert torch.allclose(est, c, atol=1e-9)
    assert not torch.allclose(est, opt.tiles[0].weight.detach(), atol=1e-3)  # W = 0.5 A + C
    assert torch.equal(opt.generator.get_state(), state)  # training's stream untouched
    noisy = opt.read_slow_weights(0, 4000, torch.Generator().manual_seed(0), io={"output_noise": 0.05})
    err = (noisy - c).std() / float(opt.config.device_c.w_max)  # output noise is relative to C's weight scale 10
    assert err < 3 * 0.05 * math.sqrt(3 / 4000) and err > 0.3 * 0.05 * math.sqrt(3 / 4000)


def test_a_resumed_training_continues_bit_for_bit():
    x, y = _data()
    config = {
        "device_a": preset("gokmen_vlasov", reference="zero_shift").model_dump(),
        "device_c": preset("gokmen_vlasov").model_dump(),
        "pulse_train": {"bl": 5},
        "transfer_every": 3,
        "transfer_lr": 0.5,
        "transfer_io": {"output_noise": 0.02},
        "hysteresis": 1.0,
        "average_reads": 8,
    }
    first = convert_to_analog(_net())
    opt = TikiTaka(first, config, lr=0.2, seed=4)
    _train(first, opt, x, y, batch=4, steps=4)
    saved_model, saved_opt = copy.deepcopy(first.state_dict()), copy.deepcopy(opt.state_dict())
    _train(first, opt, x, y, batch=4, steps=4)

    second = convert_to_analog(_net(seed=9))  # other weights: all of them come from the checkpoint
    opt2 = TikiTaka(second, config, lr=0.2, seed=77)
    second.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    _train(second, opt2, x, y, batch=4, steps=4)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    for i in range(len(opt.tiles)):
        assert torch.equal(opt.buffer(i), opt2.buffer(i))
        assert torch.equal(opt.averaged_weights(i), opt2.averaged_weights(i))
        assert opt.rows_seen(i) == opt2.rows_seen(i) == 32


def test_averaging_reads_of_a_fixed_c_recover_it():
    model = AnalogLinear(3, 2, bias=False, seed=0, tile_config={"io": {"output_noise": 0.01}}).double()
    opt = TikiTaka(model, {"device_a": IDEAL, "device_c": IDEAL, "average_reads": 50}, lr=0.1, seed=0)
    for _ in range(20):  # no rows: C does not change, each step adds 50 noisy reads
        opt.step()
    c = read_weights(*opt.devices(0)["c"])
    err = (opt.averaged_weights(0) - c).abs().max()
    assert 0 < err < 5 * 0.01 * 10 * math.sqrt(3 / 1000)  # output noise x weight scale 10, 1000 reads
    opt.reset_average()
    with pytest.raises(ValueError, match="reads"):
        opt.averaged_weights(0)


@pytest.mark.parametrize(
    ("model", "config", "lr", "pattern"),
    [
        (nn.Linear(2, 2), {}, 0.1, "needs a model with analog tiles"),
        (AnalogLinear(2, 2), {}, 0.0, "lr = 0.0"),
        (AnalogLinear(2, 2), {"version": 3}, 0.1, "version"),
        (AnalogLinear(2, 2), {"transfer_every": 0}, 0.1, "transfer_every"),
        (AnalogLinear(2, 2), {"threshold": 0.5}, 0.1, "threshold"),
        (AnalogLinear(2, 2), {"version": 1, "hysteresis": 1.0}, 0.1, "hysteresis"),
        (AnalogLinear(2, 2), {"device_c": {"kind": "magic"}}, 0.1, "device_c"),
        (AnalogLinear(2, 2), {"transfer_io": {"adc_bits": 8}}, 0.1, "output_bound"),
        (AnalogLinear(2, 2), {"buffer": "keep"}, 0.1, "buffer"),
    ],
)
def test_bad_settings_name_the_field(model, config, lr, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TikiTaka(model, {"device_a": IDEAL, "device_c": IDEAL, **config}, lr=lr)


def test_the_config_is_frozen_data():
    config = TikiTakaConfig(device_a=IDEAL, device_c=IDEAL)
    with pytest.raises(ValueError, match="frozen"):
        config.gamma = 1.0
