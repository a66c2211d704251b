"""MLPTrainer (hand-written backward pass, flat fused Adam) against autograd with torch.optim.Adam."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from inmaterio.smg.mlp_trainer import MLPTrainer

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": lambda: nn.ELU(alpha=0.7),
    "leaky_relu": lambda: nn.LeakyReLU(0.05),
}


def make_mlp(activation, sizes=(5, 16, 16, 16, 1), seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), activation()]
    return nn.Sequential(*layers[:-1])


def data(n=300, n_in=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g)
    return x, torch.sin(x.sum(1)) + 0.1 * torch.randn(n, generator=g)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_steps_match_autograd_and_torch_adam(name):
    x, y = data()
    reference, ours = make_mlp(ACTIVATIONS[name]), make_mlp(ACTIVATIONS[name])
    adam = torch.optim.Adam(reference.parameters(), lr=3e-3, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-3)
    trainer = MLPTrainer(ours, lr=3e-3, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-3)
    for step, start in enumerate(range(0, len(x), 64)):  # the last batch is short (44)
        if step == 3:  # a learning-rate change between steps
            adam.param_groups[0]["lr"] = trainer.lr = 1e-3
        xb, yb = x[start : start + 64], y[start : start + 64]
        adam.zero_grad()
        loss = nn.functional.mse_loss(reference(xb).squeeze(-1), yb)
        loss.backward()
        adam.step()
        squared_error = trainer.step(xb, yb)
        assert squared_error.item() == pytest.approx(loss.item() * len(xb), rel=1e-5)
    trainer.store_into(ours)
    for a, b in zip(reference.parameters(), ours.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    state = trainer.adam_state()
    assert state["step"] == 5
    torch.testing.assert_close(
        state["exp_avg"], torch.cat([adam.state[p]["exp_avg"].reshape(-1) for p in reference.parameters()])
    )


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_batches_that_grow_and_shrink_match_autograd(name):
    """Buffers are reallocated for a larger batch and sliced for a smaller one; each layer's ones column survives."""
    x, y = data(n=200)
    reference, ours = make_mlp(ACTIVATIONS[name]), make_mlp(ACTIVATIONS[name])
    adam = torch.optim.Adam(reference.parameters(), lr=1e-2)
    trainer = MLPTrainer(ours, lr=1e-2)
    start = 0
    for size in (10, 50, 20, 70, 3):
        xb, yb = x[start : start + size], y[start : start + size]
        start += size
        adam.zero_grad()
        nn.functional.mse_loss(reference(xb).squeeze(-1), yb).backward()
        adam.step()
        trainer.step(xb, yb)
    trainer.store_into(ours)
    for a, b in zip(reference.parameters(), ours.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_squared_error_is_the_networks_summed_squared_error(name):
    x, y = data(n=301)
    mlp = make_mlp(ACTIVATIONS[name])
    trainer = MLPTrainer(mlp, lr=1e-2)
    trainer.train_epoch(x, y, 64, torch.Generator().manual_seed(0))
    trainer.store_into(mlp)
    with torch.no_grad():
        expected = (mlp(x).squeeze(-1).double() - y.double()).square().sum().item()
    for chunk in (64, 100, 1000):  # chunks that do not divide the 301 points, and one larger than all of them
        assert trainer.squared_error(x, y, chunk).item() == pytest.approx(expected, rel=1e-5)


def test_training_lowers_the_loss_and_the_epoch_mean_is_the_data_mse():
    x, y = data(n=1000)
    mlp = make_mlp(nn.ReLU)
    trainer = MLPTrainer(mlp, lr=1e-2)
    first = trainer.train_epoch(x, y, 100, torch.Generator().manual_seed(0))
    for epoch in range(1, 30):
        last = trainer.train_epoch(x, y, 100, torch.Generator().manual_seed(epoch))
    assert last < 0.3 * first
    trainer.store_into(mlp)
    with torch.no_grad():
        mse_after = nn.functional.mse_loss(mlp(x).squeeze(-1), y).item()
    assert mse_after < 0.3 * first  # the model written back is the trained one


def test_state_round_trip_resumes_exactly():
    x, y = data(n=400)
    straight = MLPTrainer(make_mlp(nn.Tanh), lr=5e-3)
    for epoch in range(4):
        straight.train_epoch(x, y, 64, torch.Generator().manual_seed(epoch))

    first = make_mlp(nn.Tanh)
    trainer = MLPTrainer(first, lr=5e-3)
    for epoch in range(2):
        trainer.train_epoch(x, y, 64, torch.Generator().manual_seed(epoch))
    trainer.store_into(first)
    saved_adam = trainer.adam_state()
    second = make_mlp(nn.Tanh, seed=7)  # other weights: everything comes from the saved state
    second.load_state_dict(first.state_dict())
    resumed = MLPTrainer(second, lr=5e-3)
    resumed.load_adam_state(saved_adam)
    for epoch in range(2, 4):
        resumed.train_epoch(x, y, 64, torch.Generator().manual_seed(epoch))
    assert torch.equal(resumed.params, straight.params)


def test_bad_networks_and_states_are_refused():
    with pytest.raises(ValueError, match="alternate Linear layers and activations"):
        MLPTrainer(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1)))
    with pytest.raises(ValueError, match="needs a bias"):
        MLPTrainer(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1, bias=False)))
    with pytest.raises(ValueError, match="one output, got 2"):
        MLPTrainer(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="unsupported activation module Sigmoid"):
        MLPTrainer(nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 1)))
    with pytest.raises(TypeError, match="float32"):
        MLPTrainer(make_mlp(nn.ReLU).double())
    trainer = MLPTrainer(make_mlp(nn.ReLU))
    with pytest.raises(ValueError, match="Adam state exp_avg has 3 values"):
        trainer.load_adam_state({"step": 1, "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)})


def test_data_that_does_not_fit_the_network_is_refused():
    trainer = MLPTrainer(make_mlp(nn.ReLU))  # 5 inputs
    x, y = data(n=20)
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 5\) for this network, got \(20, 3\)"):
        trainer.step(x[:, :3], y)
    with pytest.raises(ValueError, match=r"y must have shape \(20,\), one target per row of x, got \(10,\)"):
        trainer.train_epoch(x, y[:10], 4, generator)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"batch must be a whole number >= 1, got {bad!r}"):
            trainer.squared_error(x, y, bad)
    before = trainer.params.clone()
    with pytest.raises(ValueError, match="batch must be"):
        trainer.train_epoch(x, y, 0, generator)
    assert torch.equal(trainer.params, before)  # nothing trained
