"""General gradient-descent trainer: convergence, optimisers, splits, early stopping, hooks, vector losses,
model selection, divergence, checkpoints and bit-exact resume."""

import copy
import json

import pytest
import torch
from torch import nn

from inmaterio.errors import ConfigError, TrainingDivergedError
from inmaterio.runs import CHECKPOINT_FILE
from inmaterio.training.gd import GDConfig, train_gd


def checkpoint_state(folder):
    """The training state saved in a run folder's checkpoint (loaded without pickle)."""
    return torch.load(folder / CHECKPOINT_FILE, weights_only=True)["state"]


def mse(out, target):
    return ((out - target) ** 2).mean()


def line_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 4 - 2
    return x, 2 * x + 1


class Scalar(nn.Module):
    """Output = the parameter p for every sample: loss (p - t)^2 has a closed-form optimum."""

    def __init__(self, p0=0.0, size=None):
        super().__init__()
        self.p = nn.Parameter(torch.full(() if size is None else (size,), float(p0)))

    def forward(self, x):
        return self.p * torch.ones(len(x), *self.p.shape)


def test_linear_regression_converges_to_the_generating_line():
    x, y = line_data()
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    result = train_gd(model, mse, x, y, GDConfig(learning_rate=0.05, epochs=400))
    assert result.model is model
    assert model.weight.item() == pytest.approx(2.0, abs=1e-3)
    assert model.bias.item() == pytest.approx(1.0, abs=1e-3)
    assert result.stopped_because == "epochs"
    assert [h["epoch"] for h in result.history] == list(range(1, 401))
    assert all(h["val_loss"] is None for h in result.history)
    assert result.best_loss == min(h["train_loss"] for h in result.history) < 1e-6


def test_minibatch_sgd_with_momentum_also_converges():
    x, y = line_data(200)
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    cfg = GDConfig(optimizer="sgd", momentum=0.9, learning_rate=0.02, batch_size=32, epochs=40)
    train_gd(model, mse, x, y, cfg)
    assert model.weight.item() == pytest.approx(2.0, abs=1e-3)
    assert model.bias.item() == pytest.approx(1.0, abs=1e-3)


def test_optimizer_factory_and_instance_override_config():
    x, y = line_data(16)
    calls = []

    def factory(params):
        params = list(params)
        calls.append(params)
        return torch.optim.SGD(params, lr=0.1)

    model = Scalar(0.0)
    t = 3.0
    train_gd(model, mse, x, torch.full((16,), t), GDConfig(epochs=1, learning_rate=5.0), optimizer=factory)
    assert len(calls) == 1 and calls[0][0] is model.p
    # one plain SGD step: p1 = p0 - lr * d/dp (p - t)^2 = 0 - 0.1 * 2 * (0 - 3)
    assert model.p.item() == pytest.approx(0.6, abs=1e-6)

    model = Scalar(0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_gd(model, mse, x, torch.full((16,), t), GDConfig(epochs=2), optimizer=opt)
    # second step from 0.6: 0.6 - 0.1 * 2 * (0.6 - 3) = 1.08
    assert model.p.item() == pytest.approx(1.08, abs=1e-6)


def test_config_rejects_settings_the_optimizer_ignores():
    with pytest.raises(ValueError, match="momentum"):
        GDConfig(optimizer="adam", momentum=0.9)
    with pytest.raises(ValueError, match="betas"):
        GDConfig(optimizer="sgd", betas=(0.8, 0.99))
    with pytest.raises(ValueError):
        GDConfig(validation_fraction=1.0)
    with pytest.raises(ValueError):
        GDConfig(unknown=1)


def test_validation_split_sizes_partition_and_minibatches():
    n = 50
    x = torch.arange(n, dtype=torch.float32)[:, None]
    y = torch.arange(n, dtype=torch.float32)  # targets double as sample ids
    seen_train, batch_sizes, seen_val = [], [], []

    def loss_fn(out, target):
        if out.requires_grad:
            seen_train.append(target.clone())
            batch_sizes.append(len(target))
        return ((out - target) ** 2).mean()

    def record_val(out, target):
        seen_val.append(target.clone())
        return 0.0

    cfg = GDConfig(validation_fraction=0.2, batch_size=16, epochs=2, seed=3)
    train_gd(Scalar(), loss_fn, x, y, cfg, metrics={"ids": record_val})
    assert batch_sizes == [16, 16, 8, 16, 16, 8]
    train_ids = torch.cat(seen_train[:3]).long()
    val_ids = seen_val[0].long()
    assert len(val_ids) == 10 and len(train_ids) == 40
    assert sorted(torch.cat([train_ids, val_ids]).tolist()) == list(range(n))
    assert torch.equal(seen_val[0], seen_val[1])  # the split is fixed for the run
    assert not torch.equal(torch.cat(seen_train[:3]), torch.cat(seen_train[3:]))  # reshuffled each epoch

    seen_val.clear()
    train_gd(Scalar(), loss_fn, x, y, cfg, metrics={"ids": record_val})
    assert torch.equal(seen_val[0], val_ids.float())  # same seed, same split
    seen_val.clear()
    train_gd(Scalar(), loss_fn, x, y, cfg.model_copy(update={"seed": 4}), metrics={"ids": record_val})
    assert not torch.equal(seen_val[0], val_ids.float())


def test_data_errors_name_the_numbers():
    x, y = line_data(10)
    with pytest.raises(ConfigError, match="10 samples but targets 9"):
        train_gd(nn.Linear(1, 1), mse, x, y[:9], GDConfig(epochs=1))
    with pytest.raises(ConfigError, match="empty"):
        train_gd(nn.Linear(1, 1), mse, x[:0], y[:0], GDConfig(epochs=1))
    with pytest.raises(ConfigError, match="of 1 samples takes 1 for validation and leaves 0"):
        train_gd(nn.Linear(1, 1), mse, x[:1], y[:1], GDConfig(epochs=1, validation_fraction=0.5))
    with pytest.raises(ConfigError, match="use one"):
        train_gd(nn.Linear(1, 1), mse, x, y, GDConfig(epochs=1, validation_fraction=0.5), validation=(x, y))
    with pytest.raises(ConfigError, match="clashes"):
        train_gd(nn.Linear(1, 1), mse, x, y, GDConfig(epochs=1), metrics={"val_loss": lambda o, t: 0.0})


def test_early_stopping_on_rising_validation_loss():
    x, y = line_data(32)
    model = Scalar(0.0)
    # training pulls p towards mean(y) ~ 1, validation wants p = -1: the validation loss rises from epoch 1
    val = (x[:8], torch.full((8,), -1.0))
    result = train_gd(model, mse, x, y, GDConfig(learning_rate=0.05, epochs=100, patience=3), validation=val)
    assert result.stopped_because == "early_stopping"
    assert result.best_epoch == 1
    assert len(result.history) == 4
    vals = [h["val_loss"] for h in result.history]
    assert vals == sorted(vals)
    assert result.best_loss == vals[0]
    # the restored weights are those of epoch 1: their validation loss is best_loss
    assert mse(model(val[0]), val[1]).item() == pytest.approx(result.best_loss, rel=1e-6)


def test_early_stopping_on_training_loss_without_validation():
    x, y = line_data(8)
    model = Scalar(0.0)
    # a flat loss never improves after the first epoch
    result = train_gd(model, lambda o, t: (o * 0).sum() + 1.0, x, y, GDConfig(epochs=50, patience=5))
    assert result.stopped_because == "early_stopping" and len(result.history) == 6 and result.best_epoch == 1


class Clamped(Scalar):
    """p in [0, 1]; counts hook calls."""

    def __init__(self, p0=0.5):
        super().__init__(p0)
        self.constrain_calls = 0

    def constrain(self):
        assert not torch.is_grad_enabled()
        self.constrain_calls += 1
        self.p.clamp_(0.0, 1.0)


def test_constrain_hook_clamps_after_every_step():
    x = torch.zeros(12, 1)
    model = Clamped(0.5)
    # the loss pulls p to 2, beyond the allowed range
    cfg = GDConfig(learning_rate=0.1, epochs=30, batch_size=4)
    train_gd(model, mse, x, torch.full((12,), 2.0), cfg)
    assert model.p.item() == 1.0
    assert model.constrain_calls == 30 * 3


class Regularized(Scalar):
    def regularizer(self):
        return self.p**2


@pytest.mark.parametrize("weight, optimum", [(1.0, 1.0), (3.0, 0.5), (0.0, 2.0)])
def test_regularizer_shifts_the_optimum_by_its_weight(weight, optimum):
    # minimise (p - 2)^2 + w p^2  =>  p* = 2 / (1 + w)
    x = torch.zeros(4, 1)
    model = Regularized(0.0)
    cfg = GDConfig(learning_rate=0.05, epochs=400, regularization_weight=weight)
    result = train_gd(model, mse, x, torch.full((4,), 2.0), cfg)
    assert model.p.item() == pytest.approx(optimum, abs=1e-3)
    last = result.history[result.best_epoch - 1]  # the restored epoch
    assert last["regularizer"] == pytest.approx(model.p.item() ** 2, rel=1e-4)
    assert last["train_loss"] == pytest.approx((model.p.item() - 2) ** 2, rel=1e-4)  # without the regularizer
    # model selection minimises loss + weight * regularizer, the objective, not the bare loss
    objective = [h["train_loss"] + weight * h["regularizer"] for h in result.history]
    assert result.best_loss == min(objective)


def test_vector_loss_trains_each_problem_as_alone():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(20, 1, generator=g)
    y = torch.cat([3 * x, -1 * x + 0.5], dim=1)  # two independent problems, (20, 2)

    class TwoSlopes(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(k))

        def forward(self, inputs):
            return inputs * self.w  # (n, k)

    def per_column(out, target):
        return ((out - target) ** 2).mean(dim=0)  # (k,): one loss per problem

    cfg = GDConfig(optimizer="sgd", learning_rate=0.05, epochs=15)
    both = train_gd(TwoSlopes(2), per_column, x, y, cfg)
    alone = [train_gd(TwoSlopes(1), per_column, x, y[:, i : i + 1], cfg) for i in range(2)]
    for i in range(2):
        assert both.model.w[i].item() == pytest.approx(alone[i].model.w[0].item(), rel=1e-6, abs=1e-7)
    # the history records the mean of the two losses
    mean = (alone[0].history[-1]["train_loss"] + alone[1].history[-1]["train_loss"]) / 2
    assert both.history[-1]["train_loss"] == pytest.approx(mean, rel=1e-5)


def test_best_weights_are_restored():
    # heavy momentum overshoots and oscillates around p = 2: the last epoch is not the best
    x = torch.zeros(4, 1)
    model = Scalar(0.0)
    cfg = GDConfig(optimizer="sgd", momentum=0.95, learning_rate=0.1, epochs=25)
    result = train_gd(model, mse, x, torch.full((4,), 2.0), cfg, metrics={"p": lambda out, t: out[0].item()})
    losses = [h["train_loss"] for h in result.history]
    assert result.best_epoch != 25 and losses[-1] > result.best_loss
    assert result.best_loss == min(losses)
    assert result.best_epoch == losses.index(min(losses)) + 1
    assert model.p.item() == result.history[result.best_epoch - 1]["p"]
    assert (model.p.item() - 2) ** 2 == pytest.approx(result.best_loss, rel=1e-5)


def nan_at_epoch(k):
    count = {"steps": 0}

    def loss_fn(out, target):
        if out.requires_grad:
            count["steps"] += 1
            if count["steps"] == k:
                return mse(out, target) * float("nan")
        return mse(out, target)

    return loss_fn


def test_nan_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path):
    x, y = line_data(16)
    torch.manual_seed(0)
    init = nn.Linear(1, 1)
    cfg = GDConfig(learning_rate=0.05, epochs=10)
    with pytest.raises(TrainingDivergedError, match=r"epoch 5: the objective of batch 1 of 1 is nan.*epoch 4"):
        train_gd(copy.deepcopy(init), nan_at_epoch(5), x, y, cfg, directory=tmp_path / "bad")
    checkpoint = checkpoint_state(tmp_path / "bad")
    assert checkpoint["epoch"] == 4 and not checkpoint["finished"]
    assert json.loads((tmp_path / "bad" / "run.json").read_text())["state"] == "failed"
    assert len(json.loads((tmp_path / "bad" / "history.json").read_text())) == 4
    # epoch 4's state, from an independent 4-epoch run
    train_gd(copy.deepcopy(init), mse, x, y, cfg.model_copy(update={"epochs": 4}), directory=tmp_path / "ref")
    reference = checkpoint_state(tmp_path / "ref")
    for key in ("model", "best_model"):
        for name, value in reference[key].items():
            assert torch.equal(checkpoint[key][name], value)
    assert checkpoint["history"] == [
        {**h, "time_s": c["time_s"]} for h, c in zip(reference["history"], checkpoint["history"])
    ]
    # without a directory the message says nothing was saved
    with pytest.raises(TrainingDivergedError, match="no checkpoint was written"):
        train_gd(copy.deepcopy(init), nan_at_epoch(2), x, y, cfg)


class Noisy(nn.Module):
    """An MLP with dropout and output noise from the global RNG: resume must reproduce both."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, x):
        out = self.net(x).squeeze(-1)
        return out + 0.01 * torch.randn_like(out)


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_bit_identically(tmp_path):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(120, 1, generator=g) * 2 - 1
    y = torch.sin(3 * x).squeeze(-1)
    torch.manual_seed(0)
    init = Noisy()
    cfg = GDConfig(learning_rate=0.02, epochs=12, batch_size=32, validation_fraction=0.25, seed=7)
    metric = {"mae": lambda out, t: (out - t).abs().mean().item()}

    full = train_gd(copy.deepcopy(init), mse, x, y, cfg, directory=tmp_path / "full", metrics=metric)

    calls = {"n": 0}

    def interrupting(out, t):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return (out - t).abs().mean().item()

    with pytest.raises(KeyboardInterrupt):
        train_gd(copy.deepcopy(init), mse, x, y, cfg, directory=tmp_path / "cut", metrics={"mae": interrupting})
    assert checkpoint_state(tmp_path / "cut")["epoch"] == 5
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["state"] == "interrupted"
    resumed = train_gd(copy.deepcopy(init), mse, x, y, cfg, directory=tmp_path / "cut", metrics=metric)

    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    strip = [{k: v for k, v in h.items() if k != "time_s"} for h in full.history]
    assert [{k: v for k, v in h.items() if k != "time_s"} for h in resumed.history] == strip
    assert (resumed.best_epoch, resumed.best_loss) == (full.best_epoch, full.best_loss)
    end_full = checkpoint_state(tmp_path / "full")
    end_cut = checkpoint_state(tmp_path / "cut")
    for name, value in end_full["model"].items():
        assert torch.equal(end_cut["model"][name], value)
    csv_lines = (tmp_path / "cut" / "history.csv").read_text().splitlines()
    assert csv_lines[0] == "epoch,train_loss,val_loss,mae,time_s" and len(csv_lines) == 13

    # the caller's global RNG is not consumed by training
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_gd(copy.deepcopy(init), mse, x, y, cfg.model_copy(update={"epochs": 2}))
    assert torch.equal(torch.rand(3), expected)


def test_finished_run_is_returned_without_training(tmp_path):
    x, y = line_data(16)
    torch.manual_seed(0)
    init = nn.Linear(1, 1)
    cfg = GDConfig(learning_rate=0.05, epochs=5)
    first = train_gd(copy.deepcopy(init), mse, x, y, cfg, directory=tmp_path)

    def must_not_train(out, target):
        raise AssertionError("trained again")

    again = train_gd(copy.deepcopy(init), must_not_train, x, y, cfg, directory=tmp_path)
    assert again.history == first.history and again.best_epoch == first.best_epoch
    assert again.stopped_because == first.stopped_because == "epochs"
    assert torch.equal(again.model.weight, first.model.weight) and torch.equal(again.model.bias, first.model.bias)


def test_checkpoint_of_another_config_or_model_is_refused(tmp_path):
    x, y = line_data(16)
    cfg = GDConfig(learning_rate=0.01, epochs=3)
    train_gd(nn.Linear(1, 1), mse, x, y, cfg, directory=tmp_path)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(ConfigError, match=r"config\.learning_rate: 0\.01 in the folder, 0\.02 now"):
        train_gd(nn.Linear(1, 1), mse, x, y, cfg.model_copy(update={"learning_rate": 0.02}), directory=tmp_path)
    with pytest.raises(ConfigError, match=r"model\.weight: \[\[1, 1\], 'torch.float32'\] in the folder, \[\[1, 2\], 'torch.float32'\] now"):
        train_gd(nn.Linear(2, 1), mse, x.repeat(1, 2), y, cfg, directory=tmp_path)
    with pytest.raises(ConfigError, match=r"model\.bias: \[\[1\], 'torch.float32'\] in the folder, absent now"):
        train_gd(nn.Linear(1, 1, bias=False), mse, x, y, cfg, directory=tmp_path)
    with pytest.raises(ConfigError, match="data_sha256: '[0-9a-f]{64}' in the folder, '[0-9a-f]{64}' now"):
        train_gd(nn.Linear(1, 1), mse, x, y + 1, cfg, directory=tmp_path)
    with pytest.raises(ConfigError, match="optimizer.class: 'torch.optim.adam.Adam' in the folder, 'torch.optim.sgd.SGD' now"):
        train_gd(nn.Linear(1, 1), mse, x, y, cfg, directory=tmp_path, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before
