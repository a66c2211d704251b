"""General gradient-descent trainer: convergence, optimisers, splits, early stopping, hooks, vector losses,
model selection, divergence, checkpoints and bit-exact resume."""

import contextlib
import copy
import json
import math

import pytest
import torch
from torch import nn

from inmaterio.errors import ConfigError, TrainingDivergedError
from inmaterio.runs import CHECKPOINT_FILE
from inmaterio.training.gd import Callback, GDConfig, read_checkpoint, train_gd


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
    checkpoint = read_checkpoint(tmp_path / "bad")
    assert checkpoint["epoch"] == 4 and not checkpoint["finished"]
    assert json.loads((tmp_path / "bad" / "run.json").read_text())["state"] == "failed"
    assert len(json.loads((tmp_path / "bad" / "history.json").read_text())) == 4
    # epoch 4's state, from an independent 4-epoch run
    train_gd(copy.deepcopy(init), mse, x, y, cfg.model_copy(update={"epochs": 4}), directory=tmp_path / "ref")
    reference = read_checkpoint(tmp_path / "ref")
    for key in ("model", "best_model"):
        for name, value in reference[key].items():
            assert torch.equal(checkpoint[key][name], value)
    assert checkpoint["history"] == [{**h, "time_s": c["time_s"]} for h, c in zip(reference["history"], checkpoint["history"])]
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
    assert read_checkpoint(tmp_path / "cut")["epoch"] == 5
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["state"] == "interrupted"
    resumed = train_gd(copy.deepcopy(init), mse, x, y, cfg, directory=tmp_path / "cut", metrics=metric)

    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    strip = [{k: v for k, v in h.items() if k != "time_s"} for h in full.history]
    assert [{k: v for k, v in h.items() if k != "time_s"} for h in resumed.history] == strip
    assert (resumed.best_epoch, resumed.best_loss) == (full.best_epoch, full.best_loss)
    end_full = read_checkpoint(tmp_path / "full")
    end_cut = read_checkpoint(tmp_path / "cut")
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
    with pytest.raises(
        ConfigError, match=r"model\.weight: \[\[1, 1\], 'torch.float32'\] in the folder, \[\[1, 2\], 'torch.float32'\] now"
    ):
        train_gd(nn.Linear(2, 1), mse, x.repeat(1, 2), y, cfg, directory=tmp_path)
    with pytest.raises(ConfigError, match=r"model\.bias: \[\[1\], 'torch.float32'\] in the folder, absent now"):
        train_gd(nn.Linear(1, 1, bias=False), mse, x, y, cfg, directory=tmp_path)
    with pytest.raises(ConfigError, match="data_sha256: '[0-9a-f]{64}' in the folder, '[0-9a-f]{64}' now"):
        train_gd(nn.Linear(1, 1), mse, x, y + 1, cfg, directory=tmp_path)
    with pytest.raises(ConfigError, match="optimizer.class: 'torch.optim.adam.Adam' in the folder, 'torch.optim.sgd.SGD' now"):
        train_gd(nn.Linear(1, 1), mse, x, y, cfg, directory=tmp_path, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before


# ------------------------------------------------------------------------------- schedules and callbacks


def one_cycle(total):
    """The MNIST benchmark's one-cycle factor: linear warm-up from 4% over 10% of the steps, cosine down to 0.01%."""

    def factor(step):
        t = min(step / max(total, 1), 1.0)
        if t < 0.1:
            return 0.04 + 0.96 * t / 0.1
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - 0.1) / 0.9))

    return factor


class NoisyClassifier(nn.Module):
    """A small MLP with dropout and output noise (global RNG); ``quiet()`` switches the noise off like a processor's noise_off."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 3))
        self.noise = 0.05

    def forward(self, x):
        out = self.net(x)
        return out + self.noise * torch.randn_like(out) if self.noise else out

    @contextlib.contextmanager
    def quiet(self):
        saved, self.noise = self.noise, 0.0
        try:
            yield
        finally:
            self.noise = saved


def blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[1.0, 0.0], [-0.5, 0.9], [-0.5, -0.9]])
    return centres[labels] + 0.6 * torch.randn(n, 2, generator=g), labels


def cross_entropy(out, target):
    return nn.functional.cross_entropy(out, target)


def val_accuracy(out, target):
    return float((out.argmax(dim=1) == target).float().mean())


def grouped_adamw(model):
    """Two parameter groups as the MNIST recipe: decay on the first layer only, another rate for the rest."""
    first = [model.net[0].weight]
    rest = [p for p in model.parameters() if p is not model.net[0].weight]
    return torch.optim.AdamW(
        [{"params": first, "lr": 0.03, "weight_decay": 0.1}, {"params": rest, "lr": 0.02, "weight_decay": 0.0}]
    )


def reference_loop(model, x, y, x_val, y_val, epochs, batch, seed):
    """By hand: train_gd's documented order of random draws, a per-step one-cycle LambdaLR, selection by the best
    validation accuracy (first on ties), evaluation without noise, train loss as the mean of the batch losses."""
    opt = grouped_adamw(model)
    total = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, one_cycle(total))
    generator = torch.Generator().manual_seed(seed)
    best_accuracy, best_epoch, best_state, rows = -math.inf, 0, None, []
    for epoch in range(1, epochs + 1):
        epoch_seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
        perm = torch.randperm(len(x), generator=generator)
        xs, ys = x[perm], y[perm]
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(epoch_seed)
            model.train()
            weighted = []
            for start in range(0, len(x), batch):
                xb, yb = xs[start : start + batch], ys[start : start + batch]
                loss = cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                weighted.append(loss.detach().mean() * len(xb))
                lr = opt.param_groups[0]["lr"]
                sched.step()
            model.eval()
            with torch.no_grad(), model.quiet():
                out = model(x_val)
            accuracy = val_accuracy(out, y_val)
            rows.append(
                {
                    "epoch": epoch,
                    "train_loss": float(torch.stack(weighted).sum() / len(x)),
                    "val_loss": float(cross_entropy(out, y_val)),
                    "val_accuracy": accuracy,
                    "lr": lr,
                }
            )
        if accuracy > best_accuracy:
            best_accuracy, best_epoch, best_state = accuracy, epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return rows, best_epoch, best_accuracy


def without_time(history):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in history]


def test_per_step_one_cycle_and_accuracy_selection_equal_a_hand_written_loop(tmp_path):
    x, y = blobs(150, seed=1)
    x_val, y_val = blobs(30, seed=2)
    torch.manual_seed(0)
    init = NoisyClassifier()
    epochs, batch = 8, 32
    total = epochs * math.ceil(len(x) / batch)
    rows, best_epoch, best_accuracy = reference_loop(copy.deepcopy(init), x, y, x_val, y_val, epochs, batch, seed=5)

    def run(directory=None, metric=val_accuracy):
        model = copy.deepcopy(init)
        cfg = GDConfig(epochs=epochs, batch_size=batch, seed=5, select_by="val_accuracy", select_mode="max", evaluate_train=False)
        result = train_gd(
            model, cross_entropy, x, y, cfg,
            optimizer=lambda params: grouped_adamw(model),
            scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, one_cycle(total)),
            scheduler_interval="step",
            validation=(x_val, y_val),
            metrics={"val_accuracy": metric},
            eval_context=model.quiet,
            directory=directory,
        )  # fmt: skip
        return result

    result = run()
    assert without_time(result.history) == rows
    assert (result.best_epoch, result.best_value) == (best_epoch, best_accuracy)
    assert result.best_loss == rows[best_epoch - 1]["val_loss"]
    reference_model = copy.deepcopy(init)
    reference_loop(reference_model, x, y, x_val, y_val, epochs, batch, seed=5)
    for (name, a), b in zip(result.model.state_dict().items(), reference_model.state_dict().values()):
        assert torch.equal(a, b), name
    # the recorded rate is that of each epoch's last step (5 steps per epoch)
    assert [r["lr"] for r in rows] == pytest.approx([0.03 * one_cycle(total)(5 * e - 1) for e in range(1, epochs + 1)])

    # interrupted after epoch 3 and resumed: the scheduler and the optimiser continue where they stopped
    calls = {"n": 0}

    def interrupting(out, target):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return val_accuracy(out, target)

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", interrupting)
    assert read_checkpoint(tmp_path / "cut")["epoch"] == 3
    resumed = run(tmp_path / "cut")
    assert without_time(resumed.history) == rows
    for (name, a), b in zip(resumed.model.state_dict().items(), reference_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_epoch_scheduler_rates_follow_the_closed_form():
    x, y = line_data(16)
    cfg = GDConfig(optimizer="sgd", learning_rate=0.1, epochs=7)
    result = train_gd(
        Scalar(0.0),
        mse,
        x,
        torch.zeros(16),
        cfg,
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    )
    # StepLR: lr of epoch k (1-based) = 0.1 * 0.5 ** floor((k - 1) / 2)
    assert [h["lr"] for h in result.history] == pytest.approx([0.1 * 0.5 ** ((k - 1) // 2) for k in range(1, 8)], rel=1e-12)


def test_reduce_on_plateau_is_stepped_with_the_selection_value():
    x, y = line_data(8)
    model = Scalar(0.0)
    model.p.requires_grad_(True)
    flat = lambda out, target: (out * 0).sum() + 1.0  # never improves after epoch 1
    cfg = GDConfig(optimizer="sgd", learning_rate=0.1, epochs=6)
    plateau = lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=1)
    result = train_gd(model, flat, x, y, cfg, scheduler=plateau)
    # epoch 1 sets the best; epochs 2, 3 are bad (patience 1): the rate halves after epoch 3, again after 5
    assert [h["lr"] for h in result.history] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025])
    with pytest.raises(ConfigError, match="ReduceLROnPlateau needs scheduler_interval='epoch'"):
        train_gd(Scalar(0.0), flat, x, y, cfg, scheduler=plateau, scheduler_interval="step")
    with pytest.raises(ConfigError, match="another optimiser"):
        other = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        train_gd(Scalar(0.0), flat, x, y, cfg, scheduler=torch.optim.lr_scheduler.StepLR(other, 1))
    with pytest.raises(ConfigError, match="scheduler_interval must be 'step' or 'epoch', got 'batch'"):
        train_gd(Scalar(0.0), flat, x, y, cfg, scheduler_interval="batch")


class Counter(Callback):
    """Counts steps, adds entries to the history, keeps a running sum of the training losses as its state."""

    def __init__(self):
        self.steps, self.sum_loss, self.seen_eval = [], 0.0, []

    def on_step_end(self, step):
        assert step.model.training and not step.objective.requires_grad
        self.steps.append((step.epoch, step.step, step.batch))

    def on_epoch_end(self, end):
        assert not end.model.training
        self.sum_loss += end.row["train_loss"]
        self.seen_eval.append(end.outputs.shape)
        return {"sum_loss": self.sum_loss, "steps": torch.tensor(len(self.steps))}

    def state_dict(self):
        return {"sum_loss": self.sum_loss, "n_steps": len(self.steps)}

    def load_state_dict(self, state):
        self.sum_loss = state["sum_loss"]
        self.steps = [None] * state["n_steps"]


class StopAtFour(Counter):
    """A Counter that raises KeyboardInterrupt after epoch 4 if told to."""

    def __init__(self, stop=False):
        super().__init__()
        self.stop = stop

    def on_epoch_end(self, end):
        entries = super().on_epoch_end(end)
        if self.stop and end.epoch == 4:
            raise KeyboardInterrupt
        return entries


def test_callbacks_see_every_step_add_history_entries_and_resume_their_state(tmp_path):
    x, y = line_data(40)
    cfg = GDConfig(learning_rate=0.05, epochs=6, batch_size=16)
    counter = Counter()
    full = train_gd(nn.Linear(1, 1), mse, x, y, cfg, callbacks=[counter])
    assert counter.steps == [(e, 3 * (e - 1) + b + 1, b) for e in range(1, 7) for b in range(3)]
    assert counter.seen_eval == [torch.Size([40, 1])] * 6  # evaluation outputs on the training set
    assert [h["steps"] for h in full.history] == [3, 6, 9, 12, 15, 18]
    sums = [sum(h["train_loss"] for h in full.history[:k]) for k in range(1, 7)]
    assert [h["sum_loss"] for h in full.history] == pytest.approx(sums, rel=1e-15)
    assert list(full.history[0]) == ["epoch", "train_loss", "val_loss", "sum_loss", "steps", "time_s"]

    torch.manual_seed(3)
    init = nn.Linear(1, 1)
    reference = train_gd(copy.deepcopy(init), mse, x, y, cfg, callbacks=[Counter()])
    with pytest.raises(KeyboardInterrupt):
        train_gd(copy.deepcopy(init), mse, x, y, cfg, callbacks=[StopAtFour(stop=True)], directory=tmp_path / "a")
    # another callback class is another run
    with pytest.raises(
        ConfigError, match=r"callbacks\.0: 'test_training_gd\.StopAtFour' in the folder, 'test_training_gd\.Counter' now"
    ):
        train_gd(copy.deepcopy(init), mse, x, y, cfg, callbacks=[Counter()], directory=tmp_path / "a")

    # a run interrupted by its callback resumes with the callback's state
    with pytest.raises(KeyboardInterrupt):
        train_gd(copy.deepcopy(init), mse, x, y, cfg, callbacks=[StopAtFour(stop=True)], directory=tmp_path / "b")
    resumed_counter = StopAtFour()
    resumed = train_gd(copy.deepcopy(init), mse, x, y, cfg, callbacks=[resumed_counter], directory=tmp_path / "b")
    assert without_time(resumed.history) == without_time(reference.history)
    assert resumed_counter.sum_loss == sum(h["train_loss"] for h in reference.history)
    # a finished run gives its callbacks their final state back without training
    again_counter = StopAtFour()
    train_gd(copy.deepcopy(init), mse, x, y, cfg, callbacks=[again_counter], directory=tmp_path / "b")
    assert again_counter.sum_loss == resumed_counter.sum_loss and len(again_counter.steps) == 18


def test_callback_entries_may_not_replace_history_keys():
    x, y = line_data(8)

    class Clash(Callback):
        def on_epoch_end(self, end):
            return {"train_loss": 0.0}

    with pytest.raises(ConfigError, match="returned the entry 'train_loss', which the history already has"):
        train_gd(nn.Linear(1, 1), mse, x, y, GDConfig(epochs=2), callbacks=[Clash()])


def test_selection_by_a_metric_and_its_checks():
    # the loss pulls p to 2; the metric "closeness to 1" is best where p passes 1, not at the end
    x = torch.zeros(4, 1)
    cfg = GDConfig(optimizer="sgd", learning_rate=0.05, epochs=30, select_by="near_one", select_mode="max")
    near_one = lambda out, t: -abs(out[0].item() - 1.0)
    result = train_gd(Scalar(0.0), mse, x, torch.full((4,), 2.0), cfg, metrics={"near_one": near_one})
    values = [h["near_one"] for h in result.history]
    assert result.best_epoch == values.index(max(values)) + 1 < 30
    assert result.best_value == max(values)
    assert result.best_loss == result.history[result.best_epoch - 1]["train_loss"]
    assert abs(result.model.p.item() - 1.0) == -max(values)
    with pytest.raises(ConfigError, match="select_by 'accuracy' is not a value of this run; choose one of: loss, train_loss"):
        train_gd(Scalar(0.0), mse, x, torch.full((4,), 2.0), cfg.model_copy(update={"select_by": "accuracy"}))
    with pytest.raises(ConfigError, match="choose one of: loss, train_loss, near_one"):
        train_gd(Scalar(0.0), mse, x, torch.full((4,), 2.0), cfg.model_copy(update={"select_by": "val_loss"}),
                 metrics={"near_one": near_one})  # fmt: skip
    with pytest.raises(ValueError, match="select_by 'loss' is a loss and is minimised"):
        GDConfig(select_mode="max")


def test_patience_counts_epochs_without_a_better_selection_value():
    x = torch.zeros(4, 1)
    # accuracy-like metric that peaks at epoch 3 and falls afterwards
    peak = {"n": 0}

    def rises_then_falls(out, t):
        peak["n"] += 1
        return -abs(peak["n"] - 3)

    cfg = GDConfig(epochs=50, patience=4, select_by="m", select_mode="max")
    result = train_gd(Scalar(0.0), mse, x, torch.zeros(4), cfg, metrics={"m": rises_then_falls})
    assert result.best_epoch == 3 and len(result.history) == 7 and result.stopped_because == "early_stopping"


def test_evaluate_train_false_records_the_mean_of_the_batch_losses():
    x, y = line_data(10)
    seen = []

    def recording(out, target):
        loss = mse(out, target)
        if out.requires_grad:
            seen.append((loss.item(), len(target)))
        return loss

    cfg = GDConfig(optimizer="sgd", learning_rate=0.01, epochs=2, batch_size=4, evaluate_train=False)
    result = train_gd(nn.Linear(1, 1), recording, x, y, cfg)
    assert [n for _, n in seen] == [4, 4, 2, 4, 4, 2]  # no evaluation pass over the training set
    for epoch, row in enumerate(result.history):
        batches = seen[3 * epoch : 3 * epoch + 3]
        assert row["train_loss"] == pytest.approx(sum(v * n for v, n in batches) / 10, rel=1e-6)


def test_eval_context_wraps_each_evaluation():
    x, y = line_data(12)
    log = []

    @contextlib.contextmanager
    def context():
        log.append("enter")
        yield
        log.append("exit")

    def metric(out, target):
        log.append("metric")
        return 0.0

    train_gd(nn.Linear(1, 1), mse, x, y, GDConfig(epochs=3, batch_size=4), metrics={"m": metric}, eval_context=context)
    assert log == ["enter", "metric", "exit"] * 3


def test_overwrite_replaces_a_finished_run_and_identity_names_the_callers_fields(tmp_path):
    x, y = line_data(16)
    cfg = GDConfig(epochs=3)
    first = train_gd(nn.Linear(1, 1), mse, x, y, cfg, directory=tmp_path, identity={"device": {"seed": 1}})
    with pytest.raises(ConfigError, match=r"extra\.device\.seed: 1 in the folder, 2 now"):
        train_gd(nn.Linear(1, 1), mse, x, y, cfg, directory=tmp_path, identity={"device": {"seed": 2}})
    again = train_gd(nn.Linear(1, 1), mse, x, y, cfg.model_copy(update={"epochs": 2}), directory=tmp_path, overwrite=True)
    assert len(again.history) == 2 and len(first.history) == 3
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs_run"] == 2
    assert read_checkpoint(tmp_path)["finished"] and again.directory == tmp_path


class CheckpointSpy(Callback):
    """Reads the run folder's checkpoint at the end of every epoch (before that epoch is saved)."""

    def __init__(self, folder):
        self.folder, self.seen = folder, []

    def on_epoch_end(self, end):
        self.seen.append(read_checkpoint(self.folder)["epoch"] if (self.folder / CHECKPOINT_FILE).exists() else None)


@pytest.mark.parametrize("interval_s, expected", [(0.0, [None, 1, 2, 3, 4]), (3600.0, [None, 1, 1, 1, 1])])
def test_checkpoints_are_written_at_most_every_interval_and_always_at_the_end(tmp_path, interval_s, expected):
    x, y = line_data(16)
    spy = CheckpointSpy(tmp_path)
    train_gd(
        nn.Linear(1, 1), mse, x, y, GDConfig(epochs=5), directory=tmp_path, callbacks=[spy], checkpoint_interval_s=interval_s
    )
    assert spy.seen == expected  # the first epoch is written at once, then every interval_s
    final = read_checkpoint(tmp_path)
    assert final["epoch"] == 5 and final["finished"] and len(json.loads((tmp_path / "history.json").read_text())) == 5
    with pytest.raises(ConfigError, match=r"checkpoint_interval_s must be a finite number of seconds >= 0, got -1"):
        train_gd(nn.Linear(1, 1), mse, x, y, GDConfig(epochs=5), checkpoint_interval_s=-1)


def test_callback_entries_are_plain_numbers_or_refused_by_name():
    import numpy as np

    x, y = line_data(8)

    class Entries(Callback):
        def on_epoch_end(self, end):
            return {"np": np.float32(1.5), "tensor": torch.tensor([2]), "text": "ok", "none": None}

    result = train_gd(nn.Linear(1, 1), mse, x, y, GDConfig(epochs=1), callbacks=[Entries()])
    row = result.history[0]
    assert (row["np"], row["tensor"], row["text"], row["none"]) == (1.5, 2, "ok", None)
    assert type(row["np"]) is float and type(row["tensor"]) is int

    class Vector(Callback):
        def on_epoch_end(self, end):
            return {"per_node": torch.zeros(3)}

    with pytest.raises(
        ConfigError, match=r"Vector\.on_epoch_end returned the entry 'per_node' = Tensor; history entries are numbers"
    ):
        train_gd(nn.Linear(1, 1), mse, x, y, GDConfig(epochs=1), callbacks=[Vector()])
