"""Energy-based networks and their EP estimators against independent truths; the ep_ebm study end to end.

Truths: autograd of the primitive function (the explicit fields), implicit differentiation at the fixed point
(the gradient EP and BPTT estimate), the orders O(beta) / O(beta^2) of the one-sided / symmetric estimators
(slopes fitted over several betas), truncated BPTT per step (the GDU property), the closed-form decay of the
forward-feedback difference under Kolen-Pollack, and a resumed study equal to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import inmaterio.ebm as ebm
from inmaterio.ebm import (
    EnergyConvNet,
    EnergyMLP,
    bptt_step,
    ep_step,
    fixed_point_residual,
    free_phase,
    gdu_curves,
    gradient_step,
    layerwise_sgd,
    relax,
    weight_angles_deg,
)
from inmaterio.errors import ConfigError, ModelFileError, RunInterrupted
from inmaterio.progress import ProgressBar
from inmaterio.studies.ep_ebm import load_trained_network, prepare_ep_ebm, weights_file_name
from inmaterio.tasks.registry import load_run_config, parse_run_config
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task
from killresume import without_timings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "ep_ebm"


def _mlp(**kw) -> EnergyMLP:
    return EnergyMLP((6, 5, 4, 3), seed=3, **kw).double()


def _convnet(**kw) -> EnergyConvNet:
    return EnergyConvNet((2, 3), kernel_size=3, pool=2, image=(1, 10, 10), n_classes=3, seed=3, **kw).double()


def _data(model, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (batch, 6) if isinstance(model, EnergyMLP) else (batch, 1, 10, 10)
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return x, torch.randint(0, 3, (batch,), generator=torch.Generator().manual_seed(2))


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _grads(model) -> torch.Tensor:
    return _flat(p.grad for p in model.parameters())


def implicit_gradient(model, x, y, states) -> torch.Tensor:
    """dL/dtheta at the fixed point s = F(s, theta): dL/dtheta|direct + F_theta^T (I - F_s^T)^-1 dL/ds (dense)."""
    shapes, sizes = [s.shape for s in states], [s.numel() for s in states]

    def unflat(v):
        return [part.reshape(shape) for part, shape in zip(torch.split(v, sizes), shapes)]

    step = lambda v: _flat(model(x, unflat(v)))  # noqa: E731
    s = _flat(states).detach()
    jac = torch.autograd.functional.jacobian(step, s)
    params = list(model.parameters())
    v = s.clone().requires_grad_(True)
    dl_ds, *direct = torch.autograd.grad(model.cost(unflat(v), y).mean(), [v, *params], allow_unused=True)
    adjoint = torch.linalg.solve(torch.eye(len(s), dtype=s.dtype) - jac.T, dl_ds)
    through = torch.autograd.grad(step(s), params, grad_outputs=adjoint, allow_unused=True)
    zero = torch.zeros_like
    return _flat((zero(p) if d is None else d) + (zero(p) if t is None else t) for d, t, p in zip(direct, through, params))


@pytest.mark.parametrize("make", [_mlp, _convnet], ids=["mlp", "convnet"])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_the_explicit_field_is_the_gradient_of_phi_and_feedback_equal_to_forward_changes_nothing(make, loss):
    model = make(activation="sigmoid", loss=loss)
    x, _ = _data(model)
    states = [torch.rand((4, *shape), dtype=torch.float64, requires_grad=True) for shape in model.state_shapes]
    fields = model.field(model.input_drive(x), states)
    truth = torch.autograd.grad(model.phi(x, states).sum(), states)
    for f, t in zip(fields, truth):
        torch.testing.assert_close(f, t, rtol=1e-12, atol=1e-12)
    vf = make(activation="sigmoid", loss=loss, vector_field=True)
    vf.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        for i in range(1, vf.n_connections):
            vf.feedback[i - 1].copy_(vf.weights[i])
    for a, b in zip(vf.field(vf.input_drive(x), states), fields):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _reference_conv_step(model: EnergyConvNet, x: torch.Tensor, states: list[torch.Tensor]) -> list[torch.Tensor]:
    """One free step of a two-layer softmax ConvNet written from the module's formula with plain (NCHW) tensors."""
    w0, w1 = model.weights[0], model.weights[1]
    b0, b1 = model.biases[0], model.biases[1]
    p = model.pool
    drive = F.max_pool2d(F.conv2d(x.contiguous(), w0, b0), p)
    conv = F.conv2d(states[0].contiguous(), w1, b1)
    pooled, winners = F.max_pool2d(conv, p, return_indices=True)
    back = F.conv_transpose2d(F.max_unpool2d(states[1].contiguous(), winners, p, output_size=conv.shape[-2:]), w1)
    return [model.sigma(drive + back), model.sigma(pooled)]


def test_the_convnet_step_is_the_plain_layout_step():
    """The channels-last step equals the step written from the module's formula on plain tensors, over many steps
    (float32, the article's kernel and pooling sizes)."""
    model = EnergyConvNet((4, 6), kernel_size=5, pool=2, image=(1, 20, 20), n_classes=3, seed=5)
    x = torch.rand((8, 1, 20, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        drive = model.input_drive(x)
        ours = reference = model.initial_states(8)
        for _ in range(30):
            ours = model.step(drive, ours)
            reference = _reference_conv_step(model, x, reference)
    for a, b in zip(ours, reference):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("make", "shape", "message"),
    [
        (_convnet, (4, 100), r"images of shape \(batch, 1, 10, 10\), got shape \(4, 100\)"),
        (_convnet, (4, 10, 10), r"got shape \(4, 10, 10\)"),
        (_convnet, (4, 1, 10, 11), r"got shape \(4, 1, 10, 11\)"),
        (_convnet, (4, 2, 10, 10), r"got shape \(4, 2, 10, 10\)"),
        (_mlp, (4, 7), r"x must be \(batch, 6\) inputs, or hold 6 values per sample, got shape \(4, 7\)"),
        (_mlp, (6,), r"got shape \(6,\)"),
    ],
)
def test_inputs_of_another_shape_are_refused_naming_both_shapes(make, shape, message):
    model = make()
    with pytest.raises(ValueError, match=message):
        free_phase(model, torch.rand(shape, dtype=torch.float64), 3)


@pytest.mark.parametrize(
    ("make", "loss"), [(_mlp, "squared_error"), (_convnet, "cross_entropy")], ids=["mlp-squared", "convnet-softmax"]
)
def test_ep_bias_is_order_beta_one_sided_and_beta_squared_symmetric(make, loss):
    model = make(activation="sigmoid", loss=loss)
    x, y = _data(model)
    states = free_phase(model, x, 200)
    assert fixed_point_residual(model, x, states) < 1e-13
    truth = implicit_gradient(model, x, y, states)
    bptt_step(model, x, y, T=200)  # BPTT through a converged free phase is the equilibrium gradient
    torch.testing.assert_close(_grads(model), truth, rtol=1e-10, atol=1e-12)
    betas = np.array([0.2, 0.1, 0.05, 0.025])
    for symmetric, order in ((False, 1.0), (True, 2.0)):
        errors = []
        for beta in betas:
            ep_step(model, x, y, T=200, K=200, beta=float(beta), symmetric=symmetric)
            errors.append(float((_grads(model) - truth).norm() / truth.norm()))
        slope = np.polyfit(np.log(betas), np.log(errors), 1)[0]
        assert abs(slope - order) < 0.1, (symmetric, slope, errors)
    assert errors[-1] < 3e-3  # symmetric at beta = 0.025


@pytest.mark.parametrize(
    ("make", "loss", "activation"),
    [(_mlp, "cross_entropy", "hard_sigmoid"), (_mlp, "squared_error", "sigmoid"), (_convnet, "cross_entropy", "hard_sigmoid")],
    ids=["mlp-softmax-hard", "mlp-squared-sigmoid", "convnet-softmax-hard"],
)
def test_per_step_ep_matches_truncated_bptt(make, loss, activation):
    model = make(activation=activation, loss=loss)
    x, y = _data(model)
    symmetric = gdu_curves(model, x, y, T=200, K=8, beta=1e-4, symmetric=True)
    one_sided = gdu_curves(model, x, y, T=200, K=8, beta=1e-6, symmetric=False)
    # the curves change with k (the test is not trivially about the fixed point) ...
    w0 = symmetric.bptt["weights.0"]
    assert float((w0[-1] - w0[0]).norm()) > 0.05 * float(w0[-1].norm())
    # ... and EP follows BPTT step by step: O(beta^2) symmetric, O(beta) one-sided
    assert max(max(e) for e in symmetric.relative_error().values()) < 1e-6
    assert max(max(e) for e in one_sided.relative_error().values()) < 1e-4
    # the per-step pieces add up to plain autograd through the K steps from the fixed point
    with torch.enable_grad():
        states = relax(model, model.input_drive(x), free_phase(model, x, 200), 8)
        loss = model.cost(states, y).mean()
        names, params = zip(*model.named_parameters())
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    for name, p, g in zip(names, params, grads):
        torch.testing.assert_close(symmetric.bptt[name][-1], torch.zeros_like(p) if g is None else g, rtol=1e-10, atol=1e-14)


def test_random_sign_is_one_sided_with_the_drawn_sign():
    model = _mlp(activation="sigmoid", loss="squared_error")
    x, y = _data(model)
    gradient_step(model, x, y, "random_sign", T=50, K=20, beta=0.3, sign=-1.0)
    drawn = _grads(model)
    ep_step(model, x, y, T=50, K=20, beta=-0.3, symmetric=False)
    torch.testing.assert_close(drawn, _grads(model), rtol=0, atol=0)
    signs = [ebm.draw_sign(g) for g in [torch.Generator().manual_seed(0)] for _ in range(400)]
    assert set(signs) == {1.0, -1.0} and abs(np.mean(signs)) < 0.15


def test_kolen_pollack_leak_decays_the_forward_feedback_difference_and_aligns_them():
    torch.manual_seed(0)
    model = EnergyMLP((8, 16, 12, 4), activation="hard_sigmoid", loss="squared_error", vector_field=True, seed=0).double()
    x = torch.rand(64, 8, dtype=torch.float64)
    y = (x @ torch.randn(8, 4, dtype=torch.float64)).argmax(1)
    lr, leak = 0.2, 0.05
    optimizer = layerwise_sgd(model, [lr, lr, lr], momentum=0.0, kp_decay=leak)
    diff0 = [float((model.weights[i] - model.feedback[i - 1]).detach().norm()) for i in (1, 2)]
    angles0 = weight_angles_deg(model)
    assert min(angles0) > 60
    steps = 300
    for _ in range(steps):
        optimizer.zero_grad()
        gradient_step(model, x, y, "symmetric_kpvf", T=15, K=5, beta=0.2)
        torch.testing.assert_close(model.feedback[0].grad, model.weights[1].grad)
        optimizer.step()
    for i, d0 in zip((1, 2), diff0):  # same update, same leak: W - B shrinks by (1 - lr * leak) per step, exactly
        d = float((model.weights[i] - model.feedback[i - 1]).detach().norm())
        assert d == pytest.approx(d0 * (1 - lr * leak) ** steps, rel=1e-9)
    assert max(weight_angles_deg(model)) < 0.2 * min(angles0)
    with pytest.raises(ValueError, match="vector_field=True"):
        gradient_step(_mlp(), x[:, :6], y, "symmetric_kpvf", T=2, K=2, beta=0.1)


def test_layerwise_learning_rates_reach_their_layers():
    model = _mlp(activation="tanh", loss="squared_error")
    x, y = _data(model)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = layerwise_sgd(model, [0.1, 0.01, 0.001])
    gradient_step(model, x, y, "bptt", T=10, K=1, beta=0.1)
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.step()
    rates = {f"weights.{i}": r for i, r in enumerate([0.1, 0.01, 0.001])} | {
        f"biases.{i}": r for i, r in enumerate([0.1, 0.01, 0.001])
    }
    for (name, p), b, g in zip(model.named_parameters(), before, grads):
        torch.testing.assert_close(p.detach(), b - rates[name] * g)
    with pytest.raises(ValueError, match="learning_rates has 2 entries; the network has 3"):
        layerwise_sgd(model, [0.1, 0.1])


# ---------------------------------------------------------------- the study


def _mnist_dir() -> Path | None:
    for candidate in (
        os.environ.get("INMATERIO_MNIST_DIR"),
        ROOT.parent / "shared" / "data" / "mnist",
        "/work/shared/data/mnist",
    ):
        if candidate and (Path(candidate) / "t10k-labels-idx1-ubyte.gz").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def mnist():
    """The real MNIST folder (skip without it), its files read once for the module's runs."""
    import inmaterio.data.mnist as mnist_module

    found = _mnist_dir()
    if found is None:
        pytest.skip("the MNIST files are absent ($INMATERIO_MNIST_DIR, ../shared/data/mnist)")
    raw = mnist_module.load_mnist(found)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mnist_module, "load_mnist", lambda data_dir=None: raw)
        yield found


def tiny(data_dir: Path, **task) -> dict:
    return {
        "task": {
            "type": "ep_ebm",
            "network": {"kind": "mlp", "hidden": [24]},
            "estimators": ["bptt", "symmetric", "symmetric_kpvf"],
            "T": 12,
            "K": 4,
            "epochs": 2,
            "batch_size": 25,
            "train_size": 300,
            "learning_rates": [0.1, 0.05],  # faster than the recipe's: 300 images, 2 epochs must learn
            "momentum": 0.9,
            "gdu": {"images": 8},
            **task,
        },
        "data": {"dir": str(data_dir), "n_validation": 200},
    }


def _two_units(top_down: float) -> EnergyMLP:
    """1-1-1 with the output in the dynamics: s1 <- clip(x + 1 + w s2), s2 <- clip(w s1 + 1), both at once."""
    model = EnergyMLP((1, 1, 1), activation="hard_sigmoid", loss="squared_error").double()
    with torch.no_grad():
        for p, value in zip([*model.weights, *model.biases], [1.0, top_down, 1.0, 1.0]):
            p.fill_(value)
    return model


def test_a_cycle_of_the_synchronous_dynamics_counts_as_unsettled():
    # w = -2, x = 0: (0, 0) -> (1, 1) -> (0, 0) ...: every step moves both units by 1, at any T.
    # x = -1: s1 = clip(-2 s2) = 0 from the first step on, then s2 = clip(1) = 1: the fixed point (0, 1).
    # w = +0.5: s2 = clip(0.5 s1 + 1) = 1 from the first step on, then s1 = clip(x + 1 + 0.5) = 1 (x = 0) or 0.5.
    x, y = torch.tensor([[0.0], [-1.0], [0.0], [-1.0]], dtype=torch.float64), torch.zeros(4, dtype=torch.int64)
    cycling = _two_units(-2.0)
    for T in (199, 200):
        states = ebm.free_phase(cycling, x, T)
        assert ebm.step_residuals(cycling, cycling.input_drive(x), states).tolist() == [1.0, 0.0, 1.0, 0.0]
        assert ebm.evaluate(cycling, x, y, T=T, batch_size=3)["unsettled"] == 0.5
    assert ebm.fixed_point_residual(cycling, x, ebm.free_phase(cycling, x, 200)) == 1.0
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"settle_tol must be a finite step >= 0 .*got {bad}"):
            ebm.evaluate(cycling, x, y, T=2, settle_tol=bad)
    settling = _two_units(0.5)
    assert ebm.evaluate(settling, x, y, T=2)["unsettled"] == 0.0
    assert [s.tolist() for s in ebm.free_phase(settling, x, 2)] == [[[1.0], [0.5], [1.0], [0.5]], [[1.0]] * 4]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate(path):
    config = load_run_config(path)
    assert config.task.type == "ep_ebm"
    assert "inmaterio run examples/ep_ebm/" in path.read_text() and "one thread" in path.read_text()


def test_a_tiny_study_runs_reports_and_resumes_to_the_same_numbers(tmp_path, mnist, monkeypatch):
    config = parse_run_config(tiny(mnist))
    reference = run_task(config, tmp_path / "reference", progress=False).metrics
    assert [s["estimator"] for s in reference["summary"]] == ["bptt", "symmetric", "symmetric_kpvf"]
    assert reference["images"] == {"train": 300, "validation": 200, "test": 10_000}
    errors = [s["test_error_mean"] for s in reference["summary"]]  # 300 images, 2 epochs: they learn (chance: 90 %)
    assert errors[0] < 60 and errors[1] < 60 and errors[2] < 85
    assert reference["summary"][2]["angles_deg"] and not reference["summary"][0]["angles_deg"]
    assert all(0 <= s["test_unsettled_mean"] <= 100 for s in reference["summary"])
    history = json.loads((tmp_path / "reference" / "history.json").read_text())
    assert all(0 <= h["val_unsettled"] <= 1 for h in history)
    gdu = reference["gdu"]["layers"]
    assert [layer["name"] for layer in gdu] == ["weights.0", "weights.1"] and len(gdu[0]["relative_error_symmetric"]) == 4
    for name in ("learning_curves.png", "ep_vs_bptt_per_step.png", "history.json"):
        assert (tmp_path / "reference" / name).is_file()
    assert "ep_ebm" in build_report([tmp_path / "reference"])
    _the_weights_files_give_the_test_errors(config, tmp_path / "reference", reference)

    real, calls = ebm.train_epoch, []

    def interrupt_third_epoch(*args, **kwargs):  # symmetric's first epoch is saved, its second never ends
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ebm, "train_epoch", interrupt_third_epoch)
    with pytest.raises(RunInterrupted):
        run_task(config, tmp_path / "run", progress=False)
    monkeypatch.setattr(ebm, "train_epoch", real)
    resumed = run_task(config, tmp_path / "run", progress=False).metrics
    assert without_timings(resumed) == without_timings(reference)


def _the_weights_files_give_the_test_errors(config, folder: Path, metrics: dict) -> None:
    """Each training's weights file, loaded on its own, gives the test error the study recorded."""
    splits = prepare_ep_ebm(config).extra["splits"]
    for seed in metrics["seeds"]:
        model = load_trained_network(folder / weights_file_name(seed["estimator"], seed["seed"]))
        assert model.vector_field == (seed["estimator"] == "symmetric_kpvf")
        assert ebm.evaluate(model, splits.x_test, splits.y_test, T=config.task.T)["error"] == seed["test_error"]
        assert "weights" not in seed


def test_foreign_or_broken_weights_files_are_refused_by_name(tmp_path):
    garbage, checkpoint_like, wrong = tmp_path / "garbage.pt", tmp_path / "other.pt", tmp_path / "wrong.pt"
    garbage.write_bytes(b"not a torch file")
    torch.save({"format": "inmaterio.run.checkpoint", "state": {}}, checkpoint_like)
    small = EnergyMLP((784, 8, 10), seed=0)
    torch.save({"format": "inmaterio.ep_ebm.weights", "network": {"kind": "mlp", "hidden": [16], "activation": "sigmoid", "loss": "squared_error"},
                "estimator": "symmetric", "seed": 0, "state_dict": small.state_dict()}, wrong)  # fmt: skip
    for path, message in [
        (tmp_path / "absent.pt", "absent.pt: no such file"),
        (garbage, "garbage.pt is not a readable torch file"),
        (checkpoint_like, "other.pt is not an ep_ebm weights file \\(format 'inmaterio.run.checkpoint'"),
        (wrong, "wrong.pt: its network and weights do not fit .*size mismatch for weights.0"),
    ]:
        with pytest.raises(ModelFileError, match=message) as refused:
            load_trained_network(path)
        assert "\n" not in str(refused.value)


def test_a_tiny_convnet_study_runs(tmp_path, mnist):
    network = {"kind": "convnet", "channels": [3, 4], "kernel_size": 5, "pool": 2}
    change = {"network": network, "estimators": ["random_sign"], "epochs": 1, "train_size": 200, "T": 6, "K": 3,
              "batch_size": 50, "learning_rates": [0.05, 0.05, 0.02], "gdu": {"images": 0}}  # fmt: skip
    outcome = run_task(parse_run_config(tiny(mnist, **change)), tmp_path / "conv", progress=False)
    assert outcome.metrics["network"] == "1-3-4-10 conv5, pool2" and outcome.metrics["gdu"] is None
    assert not (tmp_path / "conv" / "ep_vs_bptt_per_step.png").exists()


def test_the_progress_label_gives_each_epochs_validation_error(tmp_path, mnist, monkeypatch):
    labels: list[str] = []
    monkeypatch.setattr(ProgressBar, "set_description", lambda bar, text: labels.append(text))
    change = {"estimators": ["symmetric"], "epochs": 2, "train_size": 100, "gdu": {"images": 0}}
    outcome = run_task(parse_run_config(tiny(mnist, **change)), tmp_path / "run", progress=True)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert outcome.metrics["summary"][0]["estimator"] == "symmetric" and len(labels) == 2
    for epoch, label in enumerate(labels, start=1):
        val = next(100 * h["val_error"] for h in history if h["step"] == epoch)
        assert label.startswith(f"symmetric seed 0 (epoch {epoch}/2: validation error {val:.2f} %")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"beta": 0}, r"task\.beta' = 0: Input should be greater than 0"),
        ({"beta": -0.1}, r"task\.beta' = -0\.1"),
        ({"T": 0}, r"task\.T' = 0: Input should be greater than or equal to 1"),
        ({"K": 0}, r"task\.K' = 0"),
        ({"epochs": 0}, r"task\.epochs' = 0"),
        ({"momentum": 1.0}, r"task\.momentum' = 1\.0"),
        ({"learning_rates": [0.1]}, r"learning_rates has 1 entries \[0\.1\]; the network 784-512-10 has 2 weight layers"),
        ({"learning_rates": [0.1, -1]}, r"learning rates must be in \(0, 1000\]"),
        ({"estimators": ["symmetric", "symmetric"]}, r"estimators must not repeat"),
        ({"estimators": ["two_sided"]}, r"task\.estimators\.0' = 'two_sided'"),
        ({"estimators": []}, r"task\.estimators' = \[\]"),
        ({"network": {"kind": "mlp", "hidden": [0]}}, r"hidden widths must be in \[1, 100000\], got \[0\]"),
        ({"network": {"kind": "mlp", "activation": "relu"}}, r"task\.network\.mlp\.activation' = 'relu'"),
        ({"network": {"kind": "rnn"}}, r"task\.network"),
        ({"network": {"kind": "convnet", "kernel_size": 13}}, r"convolutional layer 2: a 8 x 8 input with kernel_size 13"),
        ({"gdu": {"images": -1}}, r"task\.gdu\.images' = -1"),
        ({"train_size": 0}, r"task\.train_size' = 0"),
        ({"stepz": 3}, r"unknown key 'task\.stepz'"),
    ],
)
def test_bad_configs_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_run_config({"task": {"type": "ep_ebm", **change}})


def test_the_recipes_fill_what_is_not_given():
    mlp = parse_run_config({"task": {"type": "ep_ebm"}}).task
    assert (mlp.network.kind, mlp.network.hidden, mlp.T, mlp.K, mlp.batch_size) == ("mlp", (512,), 30, 10, 50)
    conv = parse_run_config({"task": {"type": "ep_ebm", "network": {"kind": "convnet", "channels": [8, 16]}, "T": 50}}).task
    assert conv.network.channels == (8, 16) and conv.network.kernel_size == 5 and conv.T == 50 and conv.K == 10
    assert conv.network.loss == "cross_entropy" and len(conv.learning_rates) == 3


def test_a_train_size_beyond_the_data_is_refused_before_the_folder(tmp_path, mnist):
    with pytest.raises(ConfigError, match="task.train_size 60000 exceeds the 59800 training images"):
        run_task(parse_run_config(tiny(mnist, train_size=60_000)), tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()
