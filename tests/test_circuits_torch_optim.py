"""Circuit parameters as torch parameters: torch.optim reproduces the home-made optimisers it replaced.

Until commit 62c8cb0 circuit parameters lived in a dict and were trained by
home-made optimisers whose learning rates were relative to each parameter's
bound width ``w = high - low``: SGD ``θ -= lr w² g``, momentum
``m = μ m + w² g, θ -= lr m``, and Adam on ``w g`` with a step of
``lr w m̂ / (sqrt(v̂) + ε)``, each followed by clipping to the bounds. The
parameters are now ``nn.Parameter``s ``u = (θ - low) / w`` clamped to
``[0, 1]``, so plain ``torch.optim.SGD`` / ``SGD(momentum)`` / ``Adam`` with
the same ``lr`` take the same steps (``dL/du = w g``).

Two independent truths:

* ``tests/data/circuits_old_optimisers.safetensors``: final parameters (and
  the per-epoch losses) of short XOR and Iris runs recorded with the old code
  at 62c8cb0, before the change (the recipe of ``circuits.examples`` with
  the changes stored in the file);
* a reference implementation of the old rules, written here in ``θ``, run
  side by side with torch.optim from the same start.

"Within float64 rounding": the two paths round differently (``u`` and ``θ``
coordinates, torch's Adam arithmetic), and EP's Newton solves pass those
differences on; after 10 to 28 steps they stay below ``1e-12 w`` (measured:
up to ``1.1e-14 w``), while any slip in the rules (``lr w`` for ``lr w²``,
``ε`` in the wrong units, clipping in the wrong coordinates) moves the
parameters by at least ``1e-7 w``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from inmaterio.circuits import Amplifier, Dense, EPTrainConfig, Input, Model, ep_gradients, fit
from inmaterio.circuits.examples import get_example
from inmaterio.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIXTURE = Path(__file__).parent / "data" / "circuits_old_optimisers.safetensors"
TOLERANCE = 1e-12  # of each parameter's bound width


def _recorded() -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(FIXTURE, "pt") as f:
        doc = json.loads(f.metadata()["inmaterio"])
    return load_file(FIXTURE), doc["runs"]


REFERENCE, RUNS = _recorded()


def _setup(run: str):
    spec = get_example(RUNS[run]["example"])
    config = spec.config.model_copy(update=RUNS[run]["config_changes"])
    return spec.load(0), spec.build(0), config


def _assert_close_to_recorded(model, run: str) -> None:
    for key, value in model.parameter_values().items():
        lo, hi = model.bounds[key]
        worst = ((value - REFERENCE[f"{run}/{key}"]).abs().max() / (hi - lo)).item()
        assert worst <= TOLERANCE, f"{run} {key}: differs from the recorded run by {worst:.3g} of the bound width"


def _torch_optimizer(model, config: EPTrainConfig) -> torch.optim.Optimizer:
    """The torch optimiser a user would write for each old one (not fit's own choice)."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum if config.optimizer == "momentum" else 0.0)


def _train_by_hand(model, data, config: EPTrainConfig, optimizer, lr_per_epoch: list[float] | None = None) -> list[float]:
    """The old fit's loop (one generator seeded by config.seed, a permutation per epoch) with a torch optimiser."""
    generator = torch.Generator().manual_seed(config.seed)
    n = len(data.x_train)
    losses = []
    for epoch in range(config.epochs):
        if lr_per_epoch is not None:
            optimizer.param_groups[0]["lr"] = lr_per_epoch[epoch]
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for s in range(0, n, config.batch_size):
            idx = order[s : s + config.batch_size]
            optimizer.zero_grad()
            result = ep_gradients(model, data.x_train[idx], data.y_train[idx], config.loss_fn(), beta=config.beta,
                                  variant=config.variant, generator=generator)  # fmt: skip
            optimizer.step()
            model.constrain()
            total += result.loss.sum().item()
        losses.append(total / n)
    return losses


@pytest.mark.parametrize("run", ["xor/adam", "iris/adam", "xor/sgd", "xor/momentum"])
def test_torch_optim_gives_the_recorded_parameters(run):
    data, model, config = _setup(run)
    losses = _train_by_hand(model, data, config, _torch_optimizer(model, config))
    _assert_close_to_recorded(model, run)
    assert losses == pytest.approx(RUNS[run]["loss"], rel=1e-12)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_fit_gives_the_recorded_parameters(run):
    data, model, config = _setup(run)
    history = fit(model, data.x_train, data.y_train, config, progress=False)
    _assert_close_to_recorded(model, run)
    assert [h["loss"] for h in history] == pytest.approx(RUNS[run]["loss"], rel=1e-12)


class _OldRules:
    """The home-made optimisers as they were: in θ, learning rates relative to the bound width, clipped to the bounds."""

    def __init__(self, kind: str, bounds: dict[str, tuple[float, float]], lr: float, momentum: float, betas) -> None:
        self.kind, self.bounds, self.lr, self.momentum, self.betas = kind, bounds, lr, momentum, betas
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.steps = 0

    def step(self, theta: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.steps += 1
        out = {}
        for key, g in grads.items():
            lo, hi = self.bounds[key]
            w = hi - lo
            st = self.state.setdefault(key, {"m": torch.zeros_like(g), "v": torch.zeros_like(g)})
            if self.kind == "sgd":
                delta = self.lr * w**2 * g
            elif self.kind == "momentum":
                st["m"] = self.momentum * st["m"] + w**2 * g
                delta = self.lr * st["m"]
            else:
                b1, b2 = self.betas
                st["m"] = b1 * st["m"] + (1 - b1) * w * g
                st["v"] = b2 * st["v"] + (1 - b2) * (w * g) ** 2
                m_hat, v_hat = st["m"] / (1 - b1**self.steps), st["v"] / (1 - b2**self.steps)
                delta = self.lr * w * m_hat / (v_hat.sqrt() + 1e-8)
            out[key] = (theta[key] - delta).clamp(lo, hi)
        return out


@pytest.mark.parametrize("kind, lr", [("adam", 0.02), ("sgd", 1.0), ("momentum", 0.2)])
def test_torch_optim_follows_the_old_rules_step_by_step(kind, lr):
    """XOR, 10 full-batch steps: torch.optim on u against the old rules on θ, each with its own EP gradients."""
    spec = get_example("xor")
    data = spec.load(0)
    config = spec.config.model_copy(update={"optimizer": kind, "lr": lr})
    ours, theirs = spec.build(0), spec.build(0)
    optimizer = _torch_optimizer(ours, config)
    old = _OldRules(kind, theirs.bounds, lr, config.momentum, config.betas)
    theta = theirs.parameter_values()
    clipped = 0
    for _ in range(10):
        optimizer.zero_grad()
        ep_gradients(ours, data.x_train, data.y_train, config.loss_fn(), beta=config.beta)
        optimizer.step()
        ours.constrain()
        theirs.set_parameter_values(theta)
        theta = old.step(theta, ep_gradients(theirs, data.x_train, data.y_train, config.loss_fn(), beta=config.beta).gradients)
        clipped = max(
            clipped, sum(int(((t == lo) | (t == hi)).sum()) for t, (lo, hi) in zip(theta.values(), theirs.bounds.values()))
        )
    assert clipped > 0  # the bounds took part
    for key, value in ours.parameter_values().items():
        lo, hi = ours.bounds[key]
        assert ((value - theta[key]).abs() <= TOLERANCE * (hi - lo)).all(), key


def test_normalised_coordinates_are_exact_at_the_bounds_and_constrain_clamps():
    model = get_example("xor").build(0)
    key = "h.conductance_s"
    lo, hi = model.bounds[key]
    u = model.normalised_parameters()[key]
    with torch.no_grad():
        u.fill_(-0.5)
        u[0, 0] = 1.5
    model.constrain()
    values = model.parameter_values()[key]
    assert values[0, 0].item() == hi and (values.reshape(-1)[1:] == lo).all()
    model.set_parameter_values({key: torch.full_like(values, 3e-6)})
    assert torch.allclose(u, torch.full_like(u, (3e-6 - lo) / (hi - lo)), rtol=1e-15, atol=0)


def test_fit_steps_an_lr_scheduler_and_resumes_it(tmp_path):
    spec = get_example("xor")
    data = spec.load(0)
    config = spec.config.model_copy(update={"epochs": 4})
    halve = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)  # noqa: E731
    straight = spec.build(0)
    history = fit(straight, data.x_train, data.y_train, config, scheduler=halve, progress=False)
    assert [h["lr"] for h in history] == [0.02, 0.01, 0.005, 0.0025]
    by_hand = spec.build(0)  # the same steps with the learning rate set by hand per epoch
    _train_by_hand(by_hand, data, config, _torch_optimizer(by_hand, config), [0.02, 0.01, 0.005, 0.0025])
    for key, value in by_hand.parameter_values().items():
        lo, hi = by_hand.bounds[key]
        assert ((value - straight.parameter_values()[key]).abs() <= TOLERANCE * (hi - lo)).all(), key
    resumed = spec.build(0)  # 2 epochs in a run folder, then 2 more: the scheduler's state is in the checkpoint
    fit(
        resumed,
        data.x_train,
        data.y_train,
        config.model_copy(update={"epochs": 2}),
        scheduler=halve,
        directory=tmp_path,
        progress=False,
    )
    again = spec.build(0)
    history2 = fit(again, data.x_train, data.y_train, config, scheduler=halve, directory=tmp_path, progress=False)
    assert [h["lr"] for h in history2] == [h["lr"] for h in history]
    assert [h["loss"] for h in history2] == [h["loss"] for h in history]
    for key, u in straight.normalised_parameters().items():
        assert torch.equal(u, again.normalised_parameters()[key]), key
    with pytest.raises(ConfigError, match=r"scheduler\.gamma: 0\.5 in the folder, 0\.7 now"):
        fit(
            spec.build(0),
            data.x_train,
            data.y_train,
            config.model_copy(update={"epochs": 6}),
            directory=tmp_path,
            progress=False,
            scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7),
        )


def test_lr_decay_multiplies_the_rate_after_every_epoch_and_resumes(tmp_path):
    """``lr_decay = d``: epoch ``e`` trains at ``lr d^(e-1)`` (closed form), the same steps as setting it by hand."""
    spec = get_example("xor")
    data = spec.load(0)
    config = spec.config.model_copy(update={"epochs": 4, "lr_decay": 0.5})
    straight = spec.build(0)
    history = fit(straight, data.x_train, data.y_train, config, progress=False)
    assert [h["lr"] for h in history] == [0.02 * 0.5**e for e in range(4)]
    by_hand = spec.build(0)
    _train_by_hand(by_hand, data, config, _torch_optimizer(by_hand, config), [0.02, 0.01, 0.005, 0.0025])
    for key, value in by_hand.parameter_values().items():
        lo, hi = by_hand.bounds[key]
        assert ((value - straight.parameter_values()[key]).abs() <= TOLERANCE * (hi - lo)).all(), key
    fit(spec.build(0), data.x_train, data.y_train, config.model_copy(update={"epochs": 2}), directory=tmp_path,
        progress=False)  # fmt: skip
    again = spec.build(0)  # 2 more epochs from the folder: the decayed rate comes back from the checkpoint
    assert [h["lr"] for h in fit(again, data.x_train, data.y_train, config, directory=tmp_path, progress=False)] == [
        h["lr"] for h in history
    ]
    for key, u in straight.normalised_parameters().items():
        assert torch.equal(u, again.normalised_parameters()[key]), key
    assert "lr_decay" not in spec.config.model_dump()  # the default (1) dumps as before the option existed
    assert config.model_dump()["lr_decay"] == 0.5
    with pytest.raises(ConfigError, match=r"lr_decay = 0\.5 and a scheduler"):
        fit(spec.build(0), data.x_train, data.y_train, config, progress=False,
            scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))  # fmt: skip
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="lr_decay"):
            EPTrainConfig(lr_decay=bad)


def test_default_layer_names_depend_only_on_the_model():
    """Unnamed layers are named per model, in the order of the model's walk: not by how many were built before."""

    def build():
        x = Input(2, inverted=True)
        h = Dense(3)(x)
        return Model(x, Dense(2)(Amplifier(2.0)(h)), seed=0)

    first = build()
    for _ in range(5):
        Dense(4)  # layers built in between change nothing
    second = build()
    assert sorted(first.bounds) == sorted(second.bounds) == ["dense_1.conductance_s", "dense_2.conductance_s"]
    assert first.node_names == second.node_names
    assert [first.layer_names[layer] for layer in first.layers] == ["input_1", "dense_1", "amplifier_1", "dense_2"]
