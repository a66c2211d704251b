"""Pulsed-device training of EP circuits: PulsedDeviceOptimizer alone and through fit.

Truths: plain SGD on the normalised parameters (a symmetric, noiseless, fine-grained device must follow it to
within half a device step per update), the closed-form symmetry point of a soft-bounds device
(w* = (dw+ w_max + dw- w_min) / (dw+ + dw-)), and an uninterrupted run (a resumed one must equal it bit for bit).
"""

import pytest
import torch

from inmaterio.circuits import EPTrainConfig, evaluate, fit
from inmaterio.circuits.ep import ep_gradients
from inmaterio.circuits.examples import diode_network
from inmaterio.circuits.pulsed import PulsedDeviceOptimizer, PulsedOptimizerConfig
from inmaterio.config import validate_config
from inmaterio.crossbars.pulsed import ConstantStepDevice, SoftBoundsDevice
from inmaterio.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

XOR_X = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float64)
XOR_Y = torch.tensor([0, 1, 1, 0])
RECIPE = {"batch_size": 4, "beta": 1e-7, "lr": 0.02, "readout": "differential", "loss": "mse", "target_v": 0.1}


def pulsed_config(epochs: int, seed: int = 0, **pulsed) -> EPTrainConfig:
    return validate_config(EPTrainConfig, {"epochs": epochs, "seed": seed, **RECIPE, "optimizer": "pulsed", "pulsed": pulsed})


def test_fine_symmetric_noiseless_device_follows_plain_sgd_within_a_step_per_update():
    """Each update from the same parameters: pulsed u and SGD's u differ by at most half a device step (dw / R)."""
    dw = 2e-7  # 1e7 states over R = 2
    device = ConstantStepDevice(w_min=-1.0, w_max=1.0, dw_min=dw)
    cfg = pulsed_config(1, device=device.model_dump(), rounding="nearest", max_pulses=1_000_000)
    sgd_cfg = cfg.model_copy(update={"optimizer": "sgd", "pulsed": None})
    pulsed_model, sgd_model = diode_network(2, 6, 2, seed=1), diode_network(2, 6, 2, seed=1)
    pulsed_opt, sgd_opt = cfg.make_optimizer(pulsed_model.parameters()), sgd_cfg.make_optimizer(sgd_model.parameters())
    assert isinstance(pulsed_opt, PulsedDeviceOptimizer) and isinstance(sgd_opt, torch.optim.SGD)
    loss_fn = cfg.loss_fn()
    moved = 0.0
    for _ in range(6):
        with torch.no_grad():  # the SGD model starts every update where the pulsed one is
            for key, p in sgd_model.normalised_parameters().items():
                p.copy_(pulsed_model.normalised_parameters()[key])
        before = {k: p.detach().clone() for k, p in pulsed_model.normalised_parameters().items()}
        for model, opt in ((pulsed_model, pulsed_opt), (sgd_model, sgd_opt)):
            opt.zero_grad()
            ep_gradients(model, [XOR_X], XOR_Y, loss_fn, beta=cfg.beta)
            opt.step()
            model.constrain()
        for key, p in pulsed_model.normalised_parameters().items():
            q = sgd_model.normalised_parameters()[key]
            assert (p - q).abs().max().item() <= 0.5 * dw / 2.0 * (1 + 1e-6), key
            moved = max(moved, (p - before[key]).abs().max().item())
    assert moved > 1e3 * dw  # the updates are many device steps: the agreement is not trivial
    # and whole epochs through fit stay on SGD's trajectory
    pulsed_model, sgd_model = diode_network(2, 6, 2, seed=1), diode_network(2, 6, 2, seed=1)
    fit(pulsed_model, XOR_X, XOR_Y, cfg.model_copy(update={"epochs": 10}), progress=False)
    fit(sgd_model, XOR_X, XOR_Y, sgd_cfg.model_copy(update={"epochs": 10}), progress=False)
    for key, p in pulsed_model.normalised_parameters().items():
        torch.testing.assert_close(p, sgd_model.normalised_parameters()[key], atol=1e-4, rtol=0)


def test_parameters_stay_in_bounds_and_are_the_device_readings():
    """A coarse device with wide bound spread and a large rate: the parameters are the clipped device readings."""
    device = {"kind": "soft_bounds", "dw_min": 0.2, "up_down": 0.3, "w_min_dtod": 0.3, "w_max_dtod": 0.3, "c2c_std": 0.5}
    cfg = pulsed_config(5, seed=2, device=device).model_copy(update={"lr": 2.0})
    model = diode_network(2, 6, 2, seed=0)
    opt = cfg.make_optimizer(model.parameters())
    loss_fn = cfg.loss_fn()
    for _ in range(10):
        opt.zero_grad()
        ep_gradients(model, [XOR_X], XOR_Y, loss_fn, beta=cfg.beta)
        opt.step()
    hit_edge = False
    for p in model.parameters():
        w = opt.state[p]["w"]
        assert p.min() >= 0 and p.max() <= 1
        assert torch.all(w >= opt.state[p]["c_w_min"]) and torch.all(w <= opt.state[p]["c_w_max"])
        torch.testing.assert_close(p.detach(), ((w + 1.0) / 2.0).clamp(0, 1), atol=0, rtol=0)
        hit_edge |= bool(((p == 0) | (p == 1)).any())
    assert hit_edge  # the bounds were reached (some devices' drawn ranges reach beyond the nominal one)


def _alternating(rule: str, steps: int, u0: float = 0.1, beta: float = 0.4, dw: float = 0.02, lr: float = 0.05):
    """n devices, one pulse up, one pulse down, ... (nearest rounding of lr g R / dw = +-1)."""
    device = SoftBoundsDevice(w_min=-1.0, w_max=1.0, dw_min=dw, up_down=beta)
    p = torch.nn.Parameter(torch.full((20,), u0, dtype=torch.float64))
    opt = PulsedDeviceOptimizer([p], PulsedOptimizerConfig(device=device, rule=rule, rounding="nearest"), lr=lr, seed=0)
    g = dw / (lr * 2.0)  # one pulse's worth of desired change
    trace = []
    for k in range(steps):
        p.grad = torch.full_like(p, g if k % 2 == 0 else -g)
        opt.step()
        trace.append(p.detach().clone())
    return opt, p, trace


def test_plain_pulsed_sgd_drifts_to_the_symmetry_point_and_shd_does_not():
    beta, dw = 0.4, 0.02
    # closed form: dw+ = dw (1 + beta), dw- = dw (1 - beta), w* = (dw+ w_max + dw- w_min) / (dw+ + dw-) = beta
    w_star = (dw * (1 + beta) * 1.0 + dw * (1 - beta) * -1.0) / (2 * dw)
    u_star = (w_star + 1.0) / 2.0
    _, _, trace = _alternating("sgd", 1000, beta=beta, dw=dw)
    cycle_mean = 0.5 * (trace[-1] + trace[-2])
    assert (cycle_mean - u_star).abs().max().item() < 0.5 * dw / 2.0  # within half a step of u* = 0.7 (from 0.1)
    assert (trace[-1] - trace[-2]).abs().max().item() < dw / 2.0  # a 2-cycle of one step around it
    opt, p, trace = _alternating("shd", 1000, beta=beta, dw=dw)
    # C never got a pulse (zero-mean gradient, no drift): u is its starting value up to the u -> w -> u round trip
    torch.testing.assert_close(p.detach(), torch.full_like(p, 0.1), atol=1e-15, rtol=0)
    a_read = opt.state[p]["a"] - opt.state[p]["a_reference"]
    assert a_read.abs().max().item() < dw  # A swings within a step of its own symmetry point


def test_shd_descends_on_a_constant_gradient():
    device = SoftBoundsDevice(w_min=-1.0, w_max=1.0, dw_min=0.01, up_down=0.2)
    p = torch.nn.Parameter(torch.full((10,), 0.5, dtype=torch.float64))
    opt = PulsedDeviceOptimizer([p], PulsedOptimizerConfig(device=device, rule="shd", lr_c=0.5), lr=0.01, seed=3)
    for _ in range(50):
        p.grad = torch.ones_like(p)
        opt.step()
    assert p.max().item() < 0.45


@pytest.mark.parametrize("rule", ["sgd", "shd"])
def test_a_resumed_fit_equals_an_uninterrupted_one(tmp_path, rule):
    device = {"kind": "soft_bounds", "dw_min": 0.01, "up_down": 0.3, "dw_min_dtod": 0.3, "up_down_dtod": 0.05, "c2c_std": 0.3}
    cfg = pulsed_config(4, seed=5, device=device, rule=rule).model_copy(update={"batch_size": 2})
    straight = diode_network(2, 6, 2, seed=1)
    h_straight = fit(straight, XOR_X, XOR_Y, cfg, progress=False)
    fit(diode_network(2, 6, 2, seed=1), XOR_X, XOR_Y, cfg.model_copy(update={"epochs": 2}), directory=tmp_path, progress=False)
    fresh = diode_network(2, 6, 2, seed=1)  # a new process
    h_resumed = fit(fresh, XOR_X, XOR_Y, cfg, directory=tmp_path, progress=False)
    for key, value in straight.normalised_parameters().items():
        assert torch.equal(value, fresh.normalised_parameters()[key]), key
    assert [h["loss"] for h in h_resumed] == [h["loss"] for h in h_straight]
    assert evaluate(fresh, XOR_X, XOR_Y, cfg)["loss"] == evaluate(straight, XOR_X, XOR_Y, cfg)["loss"]
    with pytest.raises(ConfigError, match=r"pulsed"):  # another device is another run
        other = {**device, "up_down": 0.1}
        fit(diode_network(2, 6, 2, seed=1), XOR_X, XOR_Y, pulsed_config(4, seed=5, device=other, rule=rule).model_copy(
            update={"batch_size": 2}), directory=tmp_path, progress=False)  # fmt: skip


def test_state_dict_round_trip_and_foreign_states():
    device = SoftBoundsDevice(dw_min=0.01, up_down=0.2, c2c_std=0.5)
    p = torch.nn.Parameter(torch.full((8,), 0.3, dtype=torch.float64))
    opt = PulsedDeviceOptimizer([p], PulsedOptimizerConfig(device=device, rule="shd"), lr=0.05, seed=1)
    p.grad = torch.linspace(-1, 1, 8, dtype=torch.float64)
    opt.step()
    saved = opt.state_dict()
    q = torch.nn.Parameter(p.detach().clone())
    twin = PulsedDeviceOptimizer([q], PulsedOptimizerConfig(device=device, rule="shd"), lr=0.05, seed=99)
    twin.load_state_dict(saved)
    q.grad = p.grad.clone()
    opt.step()
    twin.step()
    assert torch.equal(p.detach(), q.detach())
    sgd = PulsedDeviceOptimizer([torch.nn.Parameter(q.detach().clone())], PulsedOptimizerConfig(device=device), lr=0.05)
    with pytest.raises(ValueError, match="lacks"):
        PulsedDeviceOptimizer([q], PulsedOptimizerConfig(device=device, rule="shd"), lr=0.05).load_state_dict(sgd.state_dict())
    with pytest.raises(ValueError, match="generator"):
        twin.load_state_dict({k: v for k, v in saved.items() if k != "generator"})


@pytest.mark.parametrize(
    ("pulsed", "message"),
    [
        ({"device": {"kind": "soft_bounds"}, "rule": "tiki"}, r"pulsed\.rule"),
        ({"device": {"kind": "soft_bounds", "dw_min": -0.1}}, r"pulsed\.device\.soft_bounds\.dw_min|pulsed\.device.*dw_min"),
        ({"device": {"kind": "soft_bounds", "reference": "zero_shift"}}, r"pulsed\.device.*reference"),
        ({"device": {"kind": "soft_bounds"}, "lr_c": 0}, r"pulsed\.lr_c"),
        ({"device": {"kind": "soft_bounds"}, "max_pulses": 0}, r"pulsed\.max_pulses"),
        ({"device": {"kind": "soft_bounds"}, "rounding": "up"}, r"pulsed\.rounding"),
        ({"device": {"kind": "soft_bounds"}, "lr_a": 0.1}, r"unknown key 'pulsed\.lr_a'"),
        ({"rule": "sgd"}, r"pulsed\.device"),
    ],
)
def test_bad_pulsed_configs_name_the_field(pulsed, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(EPTrainConfig, {"optimizer": "pulsed", "pulsed": pulsed})


def test_pulsed_settings_go_with_the_pulsed_optimizer_only():
    with pytest.raises(ConfigError, match="optimizer 'pulsed' needs the 'pulsed' settings"):
        validate_config(EPTrainConfig, {"optimizer": "pulsed"})
    with pytest.raises(ConfigError, match="'pulsed' settings are given but optimizer is 'adam'"):
        validate_config(EPTrainConfig, {"pulsed": {"device": {"kind": "soft_bounds"}}})
    assert "pulsed" not in EPTrainConfig().model_dump()  # configs without it dump (and identify runs) as before
    with pytest.raises(ConfigError, match=r"lr = -1"):
        PulsedDeviceOptimizer([torch.nn.Parameter(torch.zeros(2))], PulsedOptimizerConfig(device={"kind": "soft_bounds"}), lr=-1)
