"""Equilibrium Propagation and the functional API, checked against implicit differentiation and finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from inmaterio.circuits import (
    Amplifier,
    Bias,
    Concatenate,
    Dense,
    Diodes,
    EPTrainConfig,
    Input,
    LocallyConnected2D,
    Model,
    PiecewiseLinearDiode,
    ShockleyDiode,
    SolverOptions,
    ep_gradients,
    implicit_gradients,
    output_loss,
)
from inmaterio.circuits.mixed import MixedSignalModel, fit_mixed
from inmaterio.errors import ConfigError, VoltageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIGHT = SolverOptions(reltol=1e-13, vntol_v=1e-15)


def _net(seed: int = 1, amplifier: bool = True, current_gain: float | None = None) -> Model:
    x = Input(3, inverted=True, name="x")
    b = Bias([0.5, -0.5], learnable=True, name="b")
    h = Dense(5, name="h", init_s=(1e-6, 1e-5))(Concatenate()([x, b]))
    h = Diodes(ShockleyDiode(), orientation="both", bias_v=(0.1, 0.1), name="d")(h)
    if amplifier:
        h = Amplifier(4.0, current_gain=current_gain, name="amp")(h)
    y = Dense(4, name="y", init_s=(1e-6, 1e-5))(Concatenate()([h, b]))
    return Model(x, y, seed=seed)


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, generator=g, dtype=torch.float64) - 0.5, torch.tensor([0, 1, 1, 0])


LOSS = output_loss("mse", readout_kind="differential", target_v=0.2)


def _rel(a: dict, b: dict) -> float:
    return max(((a[k] - b[k]).norm() / b[k].norm()).item() for k in b)


def test_implicit_gradient_matches_central_finite_differences():
    model = _net()
    x, t = _data()
    ref = implicit_gradients(model, x, t, LOSS, options=TIGHT)
    for key, index in [("h.conductance_s", (0, 2)), ("y.conductance_s", (3, 1)), ("b.voltage_v", (1,))]:
        p = model.parameter_values()[key]
        eps = 1e-4 * (abs(p[index].item()) or 1.0)
        losses, steps = [], []
        for sign in (1, -1):
            q = p.clone()
            q[index] += sign * eps
            model.set_parameter_values({key: q})
            steps.append(model.parameter_values()[key][index].item())  # the value set (to float64 rounding of the bounds)
            losses.append(LOSS(model.output_voltages(model.solve(x, options=TIGHT)), t).mean().item())
        model.set_parameter_values({key: p})
        fd = (losses[0] - losses[1]) / (steps[0] - steps[1])
        assert fd == pytest.approx(ref[key][index].item(), rel=1e-5)


@pytest.mark.parametrize("amplifier", [False, True])
def test_symmetric_ep_matches_the_exact_gradient(amplifier):
    model = _net(amplifier=amplifier)
    x, t = _data()
    ref = implicit_gradients(model, x, t, LOSS, options=TIGHT)
    est = ep_gradients(model, x, t, LOSS, beta=1e-7, variant="symmetric", options=TIGHT)
    assert _rel(est.gradients, ref) < 1e-8


def test_error_slopes_one_sided_linear_symmetric_quadratic():
    """The one-sided bias shrinks like beta, the symmetric one like beta**2 (log-log slopes)."""
    model = _net()
    x, t = _data()
    ref = implicit_gradients(model, x, t, LOSS, options=TIGHT)
    betas = [1e-5, 1e-6]
    for variant, slope in [("one-sided", 1.0), ("symmetric", 2.0)]:
        errors = [_rel(ep_gradients(model, x, t, LOSS, beta=b, variant=variant, options=TIGHT).gradients, ref) for b in betas]
        measured = math.log10(errors[0] / errors[1])
        assert measured == pytest.approx(slope, abs=0.15), (variant, errors)


def test_random_sign_is_one_sided_with_either_sign_and_averages_to_symmetric():
    model = _net()
    x, t = _data()
    signs = {}
    for seed in range(12):
        est = ep_gradients(model, x, t, LOSS, beta=1e-6, variant="random-sign", generator=torch.Generator().manual_seed(seed))
        signs.setdefault(round(est.gradients["y.conductance_s"].sum().item(), 12), est.gradients)
    assert len(signs) == 2  # both signs were drawn
    plus, minus = signs.values()
    sym = ep_gradients(model, x, t, LOSS, beta=1e-6, variant="symmetric").gradients
    avg = {k: (plus[k] + minus[k]) / 2 for k in sym}
    assert _rel(avg, sym) < 1e-6


def test_amplifier_energy_weights():
    assert _net(current_gain=4.0).output_weight.tolist() == [1.0] * 4  # a transformer keeps the energy weight
    w = _net().output_weight  # current gain 1/4: the region after it weighs 1/16
    assert torch.allclose(w, torch.full((4,), 1 / 16, dtype=w.dtype))


def test_ep_input_gradient_matches_finite_differences():
    model = _net()
    x, t = _data()
    est = ep_gradients(model, x, t, LOSS, beta=1e-7, options=TIGHT, input_gradients=True)
    eps = 1e-6
    for s, f in [(0, 0), (2, 1), (3, 2)]:
        losses = []
        for sign in (1, -1):
            xp = x.clone()
            xp[s, f] += sign * eps
            losses.append(LOSS(model.output_voltages(model.solve(xp, options=TIGHT)), t)[s].item())
        fd = (losses[0] - losses[1]) / (2 * eps)
        assert est.input_gradients[0][s, f].item() == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_shared_layer_gradient_is_the_sum_over_its_uses():
    x1 = Input(2, name="x1")
    x2 = Input(2, name="x2")
    shared = Dense(3, name="shared", init_s=(1e-6, 1e-5))
    h = Concatenate()([shared(x1), shared(x2)])
    h = Diodes(PiecewiseLinearDiode(on_conductance_s=1e-4, knee_v=0.2), orientation="forward", name="d")(h)
    y = Dense(2, name="y", init_s=(1e-6, 1e-5))(h)
    model = Model([x1, x2], y, seed=3)
    assert model.parameter_values()["shared.conductance_s"].shape == (2, 3)
    g = torch.Generator().manual_seed(1)
    xa, xb = torch.rand(5, 2, generator=g, dtype=torch.float64), torch.rand(5, 2, generator=g, dtype=torch.float64)
    target = torch.rand(5, 2, generator=g, dtype=torch.float64) * 0.3
    loss = output_loss("mse")
    ref = implicit_gradients(model, [xa, xb], target, loss, options=TIGHT)
    est = ep_gradients(model, [xa, xb], target, loss, beta=1e-7, options=TIGHT)
    assert _rel(est.gradients, ref) < 1e-6


def test_locally_connected_joins_each_output_to_its_window():
    x = Input((4, 5), inverted=True, name="img")
    y = LocallyConnected2D(2, 3, stride=1, name="lc")(x)
    assert y.shape == (2, 2, 3)
    model = Model(x, y)
    c = model._template
    names = model.node_names
    out = names.index("lc[0]")  # filter 0, row 0, column 0
    joined = sorted(names[int(a)] for a, b in c.resistor_nodes.tolist() if b == out)
    # channel 0 (x) and channel 1 (-x) of the 3x3 window at the corner: flat indices r*5+c (+20 for channel 1)
    expected = sorted(f"img[{ch * 20 + r * 5 + col}]" for ch in range(2) for r in range(3) for col in range(3))
    assert joined == expected
    assert model.parameter_values()["lc.conductance_s"].shape == (2, 2, 3, 2, 3, 3)


def test_torch_optimisers_clip_to_bounds_and_adam_moves_by_lr_times_width():
    model = _net()
    key = "y.conductance_s"
    lo, hi = model.bounds[key]
    before = model.parameter_values()[key]
    grads = {k: torch.zeros_like(p) for k, p in model.parameter_values().items()}
    grads[key] = torch.ones_like(before)
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.add_gradients(grads)
    adam.step()
    model.constrain()
    step = before - model.parameter_values()[key]
    assert torch.allclose(step, torch.full_like(step, 1e-3 * (hi - lo)), rtol=1e-6)
    sgd = torch.optim.SGD(model.parameters(), lr=1e6)
    sgd.zero_grad()
    model.add_gradients({key: -torch.ones_like(before)})  # a huge step up: clipped at the upper bound
    sgd.step()
    model.constrain()
    assert torch.all(model.parameter_values()[key] == hi)


def test_mixed_signal_front_end_learns_through_the_ep_input_gradient():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x_data = torch.randn(64, 5, generator=g)
    y = (x_data[:, 0] + x_data[:, 1] > 0).long()
    x = Input(2, inverted=True, voltage_range_v=(-1, 1), name="v")
    b = Bias([1.0, -1.0], name="b")
    out = Dense(4, name="out", init_s=(1e-6, 1e-5))(Concatenate()([x, b]))
    analog = Model(x, out, seed=0)
    front = torch.nn.Linear(5, 2)
    mixed = MixedSignalModel(front, analog, voltage_v=0.5)
    weights_before = front.weight.detach().clone()
    cfg = EPTrainConfig(epochs=15, batch_size=16, beta=1e-7, lr=0.05, readout="differential", target_v=0.05)
    history = fit_mixed(mixed, x_data, y, cfg, front_optimizer=torch.optim.Adam(front.parameters(), lr=0.05), progress=False)
    assert not torch.equal(front.weight, weights_before)
    assert history[-1]["accuracy"] >= 0.9


def test_model_errors_name_the_problem():
    x = Input(2, name="xin")
    other = Input(2, name="other")
    y = Dense(2, name="dd")(Concatenate()([x, other]))
    with pytest.raises(ConfigError, match="Input 'other'.*not among the model's inputs"):
        Model(x, y)
    with pytest.raises(ConfigError, match="is a voltage source"):
        Model(x, x)
    m = Model([x, other], y)
    with pytest.raises(VoltageError, match=r"feature 1 of sample 0: 20 V outside \[-10.0, 10.0\] V"):
        m.solve([torch.tensor([[0.0, 20.0]]), torch.zeros(1, 2)])
    with pytest.raises(VoltageError, match="feature 0 of sample 1 is nan"):
        m.solve([torch.tensor([[0.0, 0.0], [float("nan"), 0.0]]), torch.zeros(2, 2)])
    with pytest.raises(ConfigError, match="outside its bounds"):
        m.set_parameter_values({"dd.conductance_s": torch.full((4, 2), 1.0)})
    with pytest.raises(ConfigError, match="unknown parameter"):
        m.set_parameter_values({"nope": torch.zeros(1)})
    with pytest.raises(ConfigError, match="units must be a positive int"):
        Dense(0)
    with pytest.raises(ConfigError, match="orientation must be one of"):
        Diodes(orientation="sideways")
    with pytest.raises(ConfigError, match="bounds_s must be"):
        Dense(3, bounds_s=(1e-5, 1e-7))
    with pytest.raises(ConfigError, match="EP variant must be one of"):
        ep_gradients(
            m,
            [torch.zeros(1, 2), torch.zeros(1, 2)],
            torch.zeros(1, 2, dtype=torch.float64),
            output_loss("mse"),
            beta=1e-7,
            variant="sideways",
        )
    with pytest.raises(ConfigError, match="beta must be"):
        ep_gradients(
            m, [torch.zeros(1, 2), torch.zeros(1, 2)], torch.zeros(1, 2, dtype=torch.float64), output_loss("mse"), beta=-1.0
        )


def test_parameters_round_trip_and_bad_files(tmp_path):
    from inmaterio.circuits.io import load_parameters, save_parameters
    from inmaterio.errors import ModelFileError

    model = _net(seed=1)
    path = save_parameters(model, tmp_path / "p.safetensors", metadata={"note": "test"})
    other = _net(seed=2)
    doc = load_parameters(other, path)
    assert doc["metadata"] == {"note": "test"} and doc["format"] == "inmaterio-circuit"
    saved, loaded = model.parameter_values(), other.parameter_values()
    for k, (
        lo,
        hi,
    ) in model.bounds.items():  # physical values in the file, normalised in the model: float64 rounding of the width
        assert ((loaded[k] - saved[k]).abs() <= 4 * torch.finfo(torch.float64).eps * (hi - lo)).all(), k
    before = {k: v.clone() for k, v in other.parameter_values().items()}
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        load_parameters(other, tmp_path / "bad.safetensors")
    small_in = Input(1, name="i")
    small = Model(small_in, Dense(1, name="o")(small_in))
    with pytest.raises(ModelFileError, match="holds parameters"):
        load_parameters(other, save_parameters(small, tmp_path / "small.safetensors"))
    assert all(torch.equal(other.parameter_values()[k], before[k]) for k in before)


def test_power_balance_tellegen():
    """Power dissipated in resistors and diodes equals the power the sources deliver (no amplifiers)."""
    model = _net(amplifier=False)
    x, _ = _data()
    sol = model.solve(x, currents_a=torch.full((4, 4), 1e-8, dtype=torch.float64))
    delivered = (sol.source_current_a * model.source_voltages(x)).sum(1)
    delivered = delivered + (1e-8 * model.output_voltages(sol)).sum(1)  # the output current sources
    assert torch.allclose(model.power_w(sol), delivered, rtol=1e-9, atol=1e-18)
    currents = model.resistor_currents(sol)
    assert currents.shape == (4, len(model.conductances()))


def test_locally_connected_gradients_match_the_exact_ones():
    img = Input((3, 3), inverted=True, name="img")
    lc = LocallyConnected2D(1, 2, name="lc", init_s=(1e-6, 1e-5))(img)
    lc = Diodes(ShockleyDiode(), orientation="both", bias_v=(-0.3, -0.3), name="d")(lc)
    out = Dense(2, name="out", init_s=(1e-6, 1e-5))(lc)
    model = Model(img, out, seed=0)
    x = torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0, 1, 1])
    loss = output_loss("cross_entropy", scale_per_v=20.0)
    ref = implicit_gradients(model, x, t, loss, options=TIGHT)
    est = ep_gradients(model, x, t, loss, beta=1e-9, options=TIGHT)  # nudge 20 A per unit beta: keep beta small
    assert _rel(est.gradients, ref) < 1e-6


def test_unknown_layer_parameter_is_named():
    with pytest.raises(TypeError, match="unitz"):
        Dense(unitz=3)
