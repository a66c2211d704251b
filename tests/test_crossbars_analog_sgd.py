"""AnalogSGD: pulsed training of analog tiles, against plain SGD, closed-form expectations and device physics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from inmaterio.crossbars import AnalogConv2d, AnalogLinear, convert_to_analog
from inmaterio.crossbars.analog_sgd import AnalogSGD
from inmaterio.crossbars.pulsed import ConstantStepDevice, SoftBoundsDevice, preset, pulse, sample_devices, symmetry_point
from inmaterio.errors import ConfigError


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


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_mbgd_on_ideal_fine_grained_devices_is_sgd(rounding):
    """Symmetric, noiseless devices with 2e7 states: the pulsed weights follow SGD within a step per update."""
    x, y = _data()
    digital = _net()
    analog = convert_to_analog(digital)
    device = ConstantStepDevice(w_min=-10.0, w_max=10.0, dw_min=1e-6)
    pulsed = AnalogSGD(analog, {"device": device.model_dump(), "rule": "mbgd", "rounding": rounding}, lr=0.1, seed=0)
    sgd = torch.optim.SGD(digital.parameters(), lr=0.1)
    _train(digital, sgd, x, y, batch=8, steps=40)
    _train(analog, pulsed, x, y, batch=8, steps=40)
    for a, b in zip(convert_to_analog(digital).parameters(), analog.parameters()):
        assert torch.allclose(a, b, atol=40 * 1e-6 * 3)


def test_a_pulse_train_step_has_the_sgd_change_as_its_mean():
    x, y = _data(1)
    model = AnalogLinear(6, 3, bias=False, seed=2).double()
    w0 = model.get_weight()
    target = torch.optim.SGD([nn.Parameter(w0.clone())], lr=0.05)
    nn.functional.mse_loss(x @ target.param_groups[0]["params"][0].T, y).backward()
    expected = -0.05 * target.param_groups[0]["params"][0].grad
    device = ConstantStepDevice(dw_min=0.002)
    changes = []
    for seed in range(400):
        m = copy.deepcopy(model)
        opt = AnalogSGD(m, {"device": device.model_dump(), "pulse_train": {"bl": 20}}, lr=0.05, seed=seed)
        start = m.get_weight()  # the devices hold the weights exactly (no clipping, no reference)
        opt.zero_grad()
        nn.functional.mse_loss(m(x), y).backward()
        opt.step()
        changes.append(m.get_weight() - start)
    changes = torch.stack(changes)
    se = changes.std(0) / len(changes) ** 0.5
    assert ((changes.mean(0) - expected).abs() <= 4.5 * se + 1e-9).all()
    assert (changes.abs() <= 20 * 0.002 + 1e-12).all()  # at most BL pulses


def test_every_row_of_a_convolution_is_one_recorded_update():
    conv = AnalogConv2d(2, 3, 3, seed=0)
    opt = AnalogSGD(conv, {"device": preset("gokmen_vlasov").model_dump()}, lr=0.01)
    conv(torch.rand(4, 2, 6, 6)).sum().backward()
    (x_rows, delta_rows) = conv.linears[0].tiles[0].update_rows[0]
    assert x_rows.shape == (4 * 16, 18) and delta_rows.shape == (4 * 16, 3)
    opt.step()
    assert conv.linears[0].tiles[0].update_rows == []


def test_weights_stay_on_the_devices_and_within_their_bounds():
    x, y = _data()
    model = convert_to_analog(_net())
    opt = AnalogSGD(model, {"device": preset("gokmen_vlasov").model_dump()}, lr=0.5, seed=3)
    _train(model, opt, x, y, batch=4, steps=20)
    for i, tile in enumerate(opt.tiles):
        array, states = opt.devices(i)
        assert ((states >= array.w_min) & (states <= array.w_max)).all()
        assert torch.equal(tile.weight.detach(), states - array.reference)


def test_digital_parameters_take_plain_sgd_steps():
    x, y = _data()
    model = convert_to_analog(_net())
    bias_before = model[2].bias.detach().clone()
    opt = AnalogSGD(model, {"device": preset("idealized").model_dump(), "rule": "mbgd"}, lr=0.1)
    opt.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    grad = model[2].bias.grad.clone()
    opt.step()
    assert torch.allclose(model[2].bias, bias_before - 0.1 * grad)


def test_alternating_updates_drive_asymmetric_devices_to_their_symmetry_point():
    """Plain SGD's failure on asymmetric devices: equal up and down requests settle at w*, not where they started."""
    model = AnalogLinear(4, 2, bias=False, seed=0).double()
    device = SoftBoundsDevice(dw_min=0.01, up_down=0.4, w_min=-1.0, w_max=1.0)
    opt = AnalogSGD(model, {"device": device.model_dump(), "rule": "mbgd", "rounding": "nearest"}, lr=1.0)
    tile = opt.tiles[0]
    for k in range(3000):
        tile.weight.grad = torch.full_like(tile.weight, 0.01 if k % 2 else -0.01)  # one pulse up, one down
        opt.step()
    array, states = opt.devices(0)
    # after a down pulse the state sits within one step of the fixed point of the up-down pair
    assert torch.allclose(states, symmetry_point(array), atol=0.02)
    assert float(symmetry_point(array)[0, 0]) == pytest.approx(0.4, abs=1e-9)  # (dw+ - dw-)/(dw+ + dw-)


def test_a_resumed_training_pulses_the_same_devices_the_same_way():
    x, y = _data()
    config = {"device": preset("gokmen_vlasov").model_dump(), "pulse_train": {"bl": 5}}
    first = convert_to_analog(_net())
    opt = AnalogSGD(first, config, lr=0.2, seed=4)
    _train(first, opt, x, y, batch=4, steps=3)
    saved_model, saved_opt = copy.deepcopy(first.state_dict()), copy.deepcopy(opt.state_dict())
    _train(first, opt, x, y, batch=4, steps=3)

    second = convert_to_analog(_net(seed=9))  # other weights: all of them come from the checkpoint
    opt2 = AnalogSGD(second, config, lr=0.2, seed=77)
    second.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    _train(second, opt2, x, y, batch=4, steps=3)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_noiseless_constant_steps_match_pulse_by_pulse_clipping():
    device = ConstantStepDevice(dw_min=0.1, up_down=0.2, w_min=-1.0, w_max=1.0)
    array = sample_devices(device, (5,), torch.Generator().manual_seed(0), dtype=torch.float64)
    w = torch.tensor([1.3, -0.95, 0.0, 0.9, -1.4], dtype=torch.float64)  # two start outside the bounds
    n = torch.tensor([-3, -2, 7, 4, 2])
    expected = w.clone()
    for k in range(7):  # the definition: one step, then the clip, per pulse
        step = torch.where(n > 0, array.dw_up, -array.dw_down)
        expected = torch.where(n.abs() > k, (expected + step).clamp(array.w_min, array.w_max), expected)
    assert torch.allclose(pulse(array, w, n, torch.Generator()), expected, atol=1e-12)


@pytest.mark.parametrize(
    ("model", "config", "lr", "pattern"),
    [
        (nn.Linear(2, 2), {"device": {"kind": "constant_step"}}, 0.1, "no analog tiles|needs a model with analog tiles"),
        (AnalogLinear(2, 2), {"device": {"kind": "constant_step"}}, 0.0, "lr = 0.0"),
        (AnalogLinear(2, 2), {"device": {"kind": "magic"}}, 0.1, "kind"),
        (AnalogLinear(2, 2), {"device": {"kind": "constant_step"}, "rule": "adam"}, 0.1, "rule"),
        (AnalogLinear(2, 2), {"device": {"kind": "constant_step", "dw_min": -1}}, 0.1, "dw_min"),
    ],
)
def test_bad_settings_name_the_field(model, config, lr, pattern):
    with pytest.raises(ConfigError, match=pattern):
        AnalogSGD(model, config, lr=lr)


def test_a_full_rank_decomposition_on_ideal_fine_grained_devices_is_sgd():
    x, y = _data()
    digital = _net()
    analog = convert_to_analog(digital)
    device = ConstantStepDevice(w_min=-10.0, w_max=10.0, dw_min=1e-6)
    low_rank = {"method": "sbpca", "pca_mode": "incremental", "rank": 3, "transfer": "seq"}
    settings = {"device": device.model_dump(), "rule": "low_rank", "rounding": "nearest", "low_rank": low_rank}
    pulsed = AnalogSGD(analog, settings, lr=0.1, seed=0)
    # the batch gradient of 2 samples has rank <= 2 <= 3: the incremental SVD holds it exactly
    _train(digital, torch.optim.SGD(digital.parameters(), lr=0.1), x, y, batch=2, steps=30)
    _train(analog, pulsed, x, y, batch=2, steps=30)
    for a, b in zip(convert_to_analog(digital).parameters(), analog.parameters()):
        assert torch.allclose(a, b, atol=30 * 3 * 1e-6 * 3)


def test_a_rank_one_update_moves_the_weights_by_the_top_singular_component():
    x, y = _data(16)
    model = AnalogLinear(6, 3, bias=False, seed=2).double()
    device = ConstantStepDevice(w_min=-10.0, w_max=10.0, dw_min=1e-7)
    settings = {"device": device.model_dump(), "rule": "low_rank", "rounding": "nearest",
                "low_rank": {"method": "sbpca", "pca_mode": "incremental", "rank": 1}}  # fmt: skip
    opt = AnalogSGD(model, settings, lr=0.5, seed=0)
    before = model.get_weight()
    opt.zero_grad()
    nn.functional.mse_loss(model(x), y).backward()
    grad = model.tiles[0].weight.grad.clone()
    opt.step()
    u, s, vh = torch.linalg.svd(grad)
    expected = before - 0.5 * s[0] * torch.outer(u[:, 0], vh[0])
    assert torch.allclose(model.get_weight(), expected, atol=2e-7)


def test_a_resumed_low_rank_training_keeps_its_power_iteration_bases():
    x, y = _data()
    config = {"device": preset("zhao_neurosim").model_dump(), "rule": "low_rank", "low_rank": {"rank": 2}}
    first = convert_to_analog(_net())
    opt = AnalogSGD(first, config, lr=0.5, seed=4)
    _train(first, opt, x, y, batch=8, steps=3)
    saved_model, saved_opt = copy.deepcopy(first.state_dict()), copy.deepcopy(opt.state_dict())
    _train(first, opt, x, y, batch=8, steps=3)
    second = convert_to_analog(_net(seed=9))
    opt2 = AnalogSGD(second, config, lr=0.5, seed=77)
    second.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    _train(second, opt2, x, y, batch=8, steps=3)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_a_rank_beyond_a_tile_is_refused_naming_the_tile():
    with pytest.raises(ConfigError, match=r"low_rank.*\(3, 5\).*rank = 4"):
        AnalogSGD(
            convert_to_analog(_net()), {"device": {"kind": "constant_step"}, "rule": "low_rank", "low_rank": {"rank": 4}}, lr=0.1
        )
