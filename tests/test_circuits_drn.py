"""Deep resistive networks: exact gradients against finite differences, EP's bias orders, physics, training and resume."""

from __future__ import annotations

import math

import pytest
import torch

from inmaterio.circuits.drn import (
    DeepResistiveNetwork,
    SolveSettings,
    drn_ep_gradients,
    drn_implicit_gradients,
    drn_loss,
)
from inmaterio.circuits.drn_training import DRNTrainConfig, drn_error, fit_drn
from inmaterio.circuits.solve.layered import kkt_residuals
from inmaterio.errors import ConfigError, RunInterrupted, VoltageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXACT = SolveSettings(tol_v=1e-13)


def _model(sizes=(6, 8, 3), seed=1, gain=2.0) -> DeepResistiveNetwork:
    model = DeepResistiveNetwork(sizes, input_gain=gain, seed=seed)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 100)
        for b in model.biases:
            b.copy_(0.1 * torch.randn(b.shape, generator=g, dtype=b.dtype))
    return model


def _data(n=5, features=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, features, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def _implicit(model, x, labels) -> list[torch.Tensor]:
    model.zero_grad()
    drn_implicit_gradients(model, x, labels, settings=EXACT)
    return _grads(model)


def _ep(model, x, labels, beta, variant) -> list[torch.Tensor]:
    model.zero_grad()
    drn_ep_gradients(model, x, labels, beta=beta, variant=variant, settings=EXACT)
    return _grads(model)


def _max_diff(a, b) -> float:
    return max(float((u - v).abs().max()) for u, v in zip(a, b))


def test_implicit_gradients_match_central_finite_differences():
    model = _model()
    x, labels = _data()
    exact = _implicit(model, x, labels)

    def loss() -> float:
        return float(drn_loss(model(x, EXACT), labels).mean())

    checked = 0
    for p, g in zip(model.parameters(), exact):
        flat = p.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 12)):
            if p.dim() == 2 and flat[i] < 1e-3:  # a conductance at its bound 0: one-sided
                continue
            old = flat[i].item()
            flat[i] = old + 1e-6
            up = loss()
            flat[i] = old - 1e-6
            down = loss()
            flat[i] = old
            fd = (up - down) / 2e-6
            assert g.view(-1)[i].item() == pytest.approx(fd, abs=1e-8, rel=1e-6)
            checked += 1
    assert checked > 20


def test_symmetric_ep_bias_is_second_order_and_one_sided_first_order():
    model = _model()
    x, labels = _data()
    exact = _implicit(model, x, labels)
    sym = [_max_diff(_ep(model, x, labels, b, "symmetric"), exact) for b in (1e-2, 1e-3)]
    pos = [_max_diff(_ep(model, x, labels, b, "positive"), exact) for b in (1e-2, 1e-3)]
    neg = [_max_diff(_ep(model, x, labels, b, "negative"), exact) for b in (1e-2, 1e-3)]
    assert sym[0] / sym[1] == pytest.approx(100, rel=0.1)  # O(beta^2)
    assert pos[0] / pos[1] == pytest.approx(10, rel=0.1)  # O(beta)
    assert neg[0] / neg[1] == pytest.approx(10, rel=0.1)
    assert sym[1] < 1e-4 * max(float(g.abs().max()) for g in exact)


def test_random_sign_is_one_of_the_one_sided_estimates():
    model = _model()
    x, labels = _data()
    pos, neg = _ep(model, x, labels, 0.05, "positive"), _ep(model, x, labels, 0.05, "negative")
    seen = set()
    g = torch.Generator().manual_seed(3)
    for _ in range(12):
        model.zero_grad()
        drn_ep_gradients(model, x, labels, beta=0.05, variant="random_sign", settings=EXACT, generator=g)
        got = _grads(model)
        seen.add("+" if _max_diff(got, pos) < 1e-12 else "-" if _max_diff(got, neg) < 1e-12 else "?")
    assert seen == {"+", "-"}


def test_free_state_obeys_kirchhoff_and_the_diodes():
    model = _model((5, 10, 6, 3), seed=4)
    x, _ = _data(7, 5, 3)
    state = model.solve(x, EXACT)
    res = kkt_residuals(model.inputs_v(x), model.network(), voltages_v=state.voltages_v)
    assert res.max_residual_a < 1e-10
    assert res.max_bound_violation_v == 0.0
    hidden = state.voltages_v[0]
    half = (hidden.shape[1] + 1) // 2
    assert (hidden[:, :half] >= 0).all() and (hidden[:, half:] <= 0).all()


def test_no_sources_give_zero_volts_and_zero_gradient_of_the_biases_at_zero_error():
    model = DeepResistiveNetwork((4, 6, 2), input_gain=3.0, seed=0)  # bias currents start at 0
    out = model(torch.zeros(3, 4, dtype=torch.float64), EXACT)
    assert torch.equal(out, torch.zeros_like(out))


def test_a_fixed_number_of_sweeps_approaches_the_converged_state():
    model = _model((6, 12, 3))
    x, _ = _data()
    exact = model(x, EXACT)
    errors = [float((model(x, SolveSettings(sweeps=n)) - exact).abs().max()) for n in (1, 4, 16)]
    assert errors[0] > errors[1] > errors[2]


def test_constrain_clips_conductances_at_zero_and_keeps_biases():
    model = _model()
    with torch.no_grad():
        model.weights[0][0, 0] = -0.5
        model.biases[0][0] = -0.5
    model.constrain()
    assert model.weights[0][0, 0].item() == 0.0
    assert model.biases[0][0].item() == -0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sizes": (4, 3)}, "at least one hidden layer"),
        ({"sizes": (4, 0, 3)}, r"sizes\[1\]"),
        ({"sizes": (4, 5, 3), "input_gain": 0.0}, "input_gain"),
        ({"sizes": (4, 5, 3), "init_gain": math.nan}, "init_gain"),
    ],
)
def test_bad_networks_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DeepResistiveNetwork(**kwargs)


def test_bad_inputs_labels_and_settings_are_named():
    model = _model()
    x, labels = _data()
    with pytest.raises(VoltageError, match=r"shape \(batch >= 1, 6\)"):
        model(torch.zeros(2, 5))
    bad = x.clone()
    bad[1, 2] = math.nan
    with pytest.raises(VoltageError, match="feature 2 of sample 1"):
        model(bad)
    with pytest.raises(VoltageError, match=r"labels must lie in \[0, 2\]"):
        drn_ep_gradients(model, x, labels + 5, beta=0.1)
    with pytest.raises(ConfigError, match="beta"):
        drn_ep_gradients(model, x, labels, beta=-1.0)
    with pytest.raises(ConfigError, match="variant"):
        drn_ep_gradients(model, x, labels, beta=0.1, variant="sideways")
    with pytest.raises(ConfigError, match="sweeps"):
        SolveSettings(sweeps=0)
    with pytest.raises(ConfigError, match="leaves output node"):
        drn_ep_gradients(model, x, labels, beta=1e6)


def test_a_nan_conductance_is_named_when_the_state_goes_bad():
    model = _model()
    x, labels = _data()
    with torch.no_grad():
        model.weights[1][2, 3] = math.nan
    with pytest.raises(ConfigError, match=r"W_2\[2, 3\]"):
        drn_ep_gradients(model, x, labels, beta=0.1)


def _xor(n=120, seed=0):
    """Four Gaussian blobs at the corners of [0, 1]^2, class = XOR of the corner's coordinates (not linearly separable)."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.randint(0, 2, (n, 2), generator=g)
    x = (0.25 + 0.5 * corner.double() + 0.07 * torch.randn(n, 2, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, corner[:, 0] ^ corner[:, 1]


@pytest.mark.parametrize("algorithm", ["ep", "implicit"])
def test_training_learns_xor(algorithm):
    x, labels = _xor()
    model = DeepResistiveNetwork((2, 16, 2), input_gain=4.0, seed=0)
    config = DRNTrainConfig(algorithm=algorithm, epochs=15, batch_size=8, lr_weights=0.3, lr_biases=0.3, beta=0.2,
                            sweeps=8, inference_sweeps=8)  # fmt: skip
    before = drn_error(model, x, labels, config.settings(inference=True))
    history = fit_drn(model, x, labels, config, progress=False)
    assert before > 0.4
    assert history[-1]["train_error"] <= 0.2
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]


def test_an_interrupted_training_resumes_to_the_same_parameters(tmp_path, monkeypatch):
    import inmaterio.circuits.drn_training as training

    x, labels = _xor(60)
    config = DRNTrainConfig(epochs=3, batch_size=4, lr_weights=0.05, lr_biases=0.05, beta=0.2, variant="random_sign")
    whole = DeepResistiveNetwork((2, 8, 2), input_gain=4.0, seed=0)
    fit_drn(whole, x, labels, config, directory=tmp_path / "whole", progress=False)

    calls = {"n": 0}
    real = training.drn_ep_gradients

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 20:  # inside epoch 2 (15 steps per epoch)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "drn_ep_gradients", interrupting)
    parts = DeepResistiveNetwork((2, 8, 2), input_gain=4.0, seed=0)
    with pytest.raises(RunInterrupted):
        fit_drn(parts, x, labels, config, directory=tmp_path / "parts", progress=False)
    monkeypatch.setattr(training, "drn_ep_gradients", real)
    resumed = DeepResistiveNetwork((2, 8, 2), input_gain=4.0, seed=0)
    history = fit_drn(resumed, x, labels, config, directory=tmp_path / "parts", progress=False)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_the_training_config_rejects_bad_rates():
    with pytest.raises(ValueError, match="learning rates"):
        DRNTrainConfig(lr_weights=[0.1, -1.0])
    with pytest.raises(ConfigError, match="lr_weights lists 3 rates"):
        DRNTrainConfig(lr_weights=[0.1, 0.1, 0.1]).rates(2)
    with pytest.raises(ValueError, match="extra"):
        DRNTrainConfig(learning_rate=0.1)
