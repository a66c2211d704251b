"""The EP learning studies as tasks: configs, tiny runs, resume after an interrupt, reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import inmaterio.studies.ep_learning as ep_learning
from inmaterio.circuits import evaluate, fit
from inmaterio.circuits.examples import diode_network
from inmaterio.config import validate_config
from inmaterio.errors import ConfigError, RunInterrupted
from inmaterio.studies.ep_learning import DATASETS, EPLearningConfig
from inmaterio.studies.ep_mnist import EPMnistConfig
from inmaterio.tasks.registry import load_run_config, parse_run_config
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task
from test_studies_mnist import write_synthetic_mnist

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GATES_TINY = {
    "task": {"type": "ep_learning", "dataset": "gates", "gates": ["AND", "XOR"], "seeds": 2, "training": {"epochs": 25}}
}


_FIT_MODULE = __import__("importlib").import_module("inmaterio.circuits.fit")


def _untimed_seeds(metrics: dict) -> list[dict]:
    """The per-seed rows of a study's metrics without their timings (which differ between runs)."""
    return [{k: v for k, v in row.items() if not k.startswith(("seconds", "samples"))} for row in metrics["seeds"]]


def _interrupt_at_ep_step(monkeypatch, config, folder: Path, step: int) -> None:
    """Run ``config`` in ``folder``, stopped by Ctrl-C in EP gradient step ``step`` (1-based); the run must say so."""
    real, calls = _FIT_MODULE.ep_gradients, []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(_FIT_MODULE, "ep_gradients", interrupt)
    with pytest.raises(RunInterrupted):
        run_task(config, folder, progress=False)
    monkeypatch.undo()


@pytest.mark.parametrize(
    "path", [EXAMPLES / "ep_learning.yaml", *sorted((EXAMPLES / "ep_learning").glob("*.yaml"))], ids=lambda p: p.name
)
def test_ep_learning_examples_validate(path):
    config = load_run_config(path)
    assert isinstance(config, EPLearningConfig)
    recipe = DATASETS[config.task.dataset][3]
    decayed = config.task.training.lr_decay != 1.0  # trained to convergence: more epochs at a falling rate
    for key in ("batch_size", "lr") if decayed else ("epochs", "batch_size", "lr"):  # the measured recipes
        assert getattr(config.task.training, key) == recipe[key], key
    assert validate_config(EPLearningConfig, yaml.safe_load(path.read_text())) == config


def test_ep_mnist_example_validates():
    config = load_run_config(EXAMPLES / "ep_mnist.yaml")
    assert isinstance(config, EPMnistConfig)
    assert config.task.hidden == 100 and config.task.training.loss == "cross_entropy" and config.data.dir is None


def test_partial_training_keeps_the_dataset_recipe():
    task = parse_run_config({"task": {"type": "ep_learning", "dataset": "wine", "training": {"epochs": 3}}}).task
    assert (task.training.epochs, task.training.lr, task.training.batch_size, task.training.readout) == (
        3,
        0.01,
        8,
        "differential",
    )
    assert task.n_hidden() == 10


def test_a_seed_of_the_study_is_plain_fit(tmp_path):
    """The study's numbers for a seed are those of fit + evaluate on the same circuit, data and settings."""
    config = parse_run_config(GATES_TINY)
    outcome = run_task(config, tmp_path / "run", progress=False)
    seed_row = next(s for s in outcome.metrics["seeds"] if s["problem"] == "AND" and s["seed"] == 1)
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1])
    model = diode_network(2, 6, 2, seed=1)
    training = config.task.training.model_copy(update={"seed": 1})
    fit(model, x, y, training, validation=(x, y), progress=False)
    assert evaluate(model, x, y, training)["accuracy"] == seed_row["train_accuracy"] == seed_row["test_accuracy"]
    summary = outcome.metrics["summary"]["AND"]
    assert summary["seeds_at_100_test"] == sum(
        s["test_accuracy"] == 1.0 for s in outcome.metrics["seeds"] if s["problem"] == "AND"
    )
    assert (tmp_path / "run" / "learning_curve.png").is_file() and (tmp_path / "run" / "XOR" / "seed_1" / "run.json").is_file()
    report = build_report([tmp_path / "run"])
    assert "## ep_learning" in report and "| AND |" in report and "per seed" in report


def test_an_interrupted_study_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    config = parse_run_config(GATES_TINY)
    reference = run_task(config, tmp_path / "reference", progress=False).metrics
    real, calls = ep_learning._train_one, []

    def interrupt_third(task, problem, seed, run, progress):
        calls.append((problem, seed))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, problem, seed, run, progress)

    monkeypatch.setattr(ep_learning, "_train_one", interrupt_third)
    with pytest.raises(RunInterrupted):
        run_task(config, tmp_path / "run", progress=False)
    resumed = run_task(config, tmp_path / "run", progress=False).metrics
    assert calls == [("AND", 0), ("AND", 1), ("XOR", 0), ("XOR", 0), ("XOR", 1)]  # the finished seeds are not trained again
    assert _untimed_seeds(resumed) == _untimed_seeds(reference)


def test_ep_learning_bad_inputs_name_the_field():
    with pytest.raises(ConfigError, match=r"task\.dataset' = 'mnist'"):
        parse_run_config({"task": {"type": "ep_learning", "dataset": "mnist"}})
    with pytest.raises(ConfigError, match=r"gates must list each of .* at most once, got \['AND', 'AND'\]"):
        parse_run_config({"task": {"type": "ep_learning", "dataset": "gates", "gates": ["AND", "AND"]}})
    with pytest.raises(ConfigError, match=r"task\.training\.lr' = -0\.1"):
        parse_run_config({"task": {"type": "ep_learning", "training": {"lr": -0.1}}})
    with pytest.raises(ConfigError, match=r"task\.seeds' = 0"):
        parse_run_config({"task": {"type": "ep_learning", "seeds": 0}})


def test_ep_mnist_tiny_run_on_synthetic_idx_files(tmp_path):
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=120, n_test=40)
    config = parse_run_config({
        "task": {"type": "ep_mnist", "hidden": 8, "train_size": 60, "training": {"epochs": 2, "batch_size": 20}},
        "data": {"dir": str(data), "n_validation": 30},
    })  # fmt: skip
    outcome = run_task(config, tmp_path / "run", progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m == outcome.metrics and m["images"] == {"train": 60, "validation": 30, "test": 40}
    assert len(m["history"]) == 2 and 0.0 <= m["test_accuracy"] <= 1.0
    assert m["test_error_percent"] == pytest.approx(100 * (1 - m["test_accuracy"]))
    assert "3.46%" in build_report([tmp_path / "run"])
    with pytest.raises(ConfigError, match="task.train_size 500 exceeds the 90 training images"):
        run_task(config.model_copy(update={"task": config.task.model_copy(update={"train_size": 500})}), tmp_path / "other")
    assert not (tmp_path / "other").exists()


# ---------------------------------------------------------------- model selection on a validation part (issue 17)

IRIS_SELECTED_TINY = {
    "task": {"type": "ep_learning", "dataset": "iris", "seeds": 1, "training": {"epochs": 5, "batch_size": 21},
             "selection": {"kind": "validation", "fraction": 0.2}}
}  # fmt: skip


def test_validation_split_is_stratified_disjoint_and_drawn_per_seed():
    from inmaterio.circuits.examples import get_example

    y = get_example("iris").load(3).y_train  # 35 of each class
    train, val = ep_learning.validation_split(y, 0.2, seed=3)
    assert len(val) == 21 and len(train) == 84
    assert torch.bincount(y[val]).tolist() == [7, 7, 7] and torch.bincount(y[train]).tolist() == [28, 28, 28]
    assert not set(train.tolist()) & set(val.tolist()) and sorted(train.tolist() + val.tolist()) == list(range(105))
    again, other = ep_learning.validation_split(y, 0.2, seed=3), ep_learning.validation_split(y, 0.2, seed=4)
    assert torch.equal(again[1], val) and not torch.equal(other[1], val)
    assert torch.bincount(y[ep_learning.validation_split(y, 0.3, seed=3)[1]]).tolist() == [11, 11, 11]  # 10.5 rounds up
    with pytest.raises(ConfigError, match=r"task\.selection\.fraction = 0\.01 holds out 0 of the 35 training samples of class 0"):
        ep_learning.validation_split(y, 0.01, seed=0)


def test_bad_selection_configs_name_the_field():
    base = {"type": "ep_learning", "dataset": "iris"}
    for fraction in (0, 1, 1.5, -0.2):
        with pytest.raises(ConfigError, match=rf"task\.selection\.fraction' = {fraction}"):
            parse_run_config({"task": {**base, "selection": {"kind": "validation", "fraction": fraction}}})
    with pytest.raises(ConfigError, match=r"task\.selection\.kind' = 'best'.*'last', 'validation' or 'cross_validation'"):
        parse_run_config({"task": {**base, "selection": {"kind": "best"}}})
    with pytest.raises(ConfigError, match=r"unknown key 'task\.selection\.epochs'"):
        parse_run_config({"task": {**base, "selection": {"kind": "validation", "epochs": 3}}})
    with pytest.raises(ConfigError, match=r"selection\.kind 'validation' needs a dataset .* got dataset 'gates'"):
        parse_run_config({"task": {**base, "dataset": "gates", "selection": {"kind": "validation"}}})
    default = parse_run_config({"task": base})  # the default is left out of the dump: earlier runs keep their identity
    assert default.task.selection.kind == "last" and "selection" not in default.identity()["task"]


def test_the_selection_never_looks_at_the_test_set(tmp_path, monkeypatch):
    """Every evaluation before the choice is on the held-out part; the test set is evaluated once, after it;
    and a different test set changes nothing but the test accuracy."""
    import inmaterio.circuits as circuits_package
    from inmaterio.circuits.examples import ExampleData, get_example

    config = parse_run_config(IRIS_SELECTED_TINY)
    data = get_example("iris").load(0)
    train_idx, val_idx = ep_learning.validation_split(data.y_train, 0.2, seed=0)
    events: list[str] = []

    def which(x) -> str:
        x = x[0] if isinstance(x, list) else x
        for name, ref in (("test", data.x_test), ("validation", data.x_train[val_idx]), ("train", data.x_train[train_idx])):
            if x.shape == ref.shape and torch.equal(x, ref):
                return name
        return "other"

    def spy(real):
        def evaluate(model, x, y, *args, **kwargs):
            events.append(which(x))
            return real(model, x, y, *args, **kwargs)

        return evaluate

    real_fit = _FIT_MODULE.fit

    def fit_spy(model, x, y, *args, **kwargs):
        events.append(f"fit({which(x)}, validation={which(kwargs['validation'][0])})")
        history = real_fit(model, x, y, *args, **kwargs)
        events.append("chosen")
        return history

    monkeypatch.setattr(_FIT_MODULE, "evaluate", spy(_FIT_MODULE.evaluate))  # the per-epoch evaluations inside fit
    monkeypatch.setattr(circuits_package, "evaluate", spy(evaluate))  # the study's own
    monkeypatch.setattr(circuits_package, "fit", fit_spy)
    row = run_task(config, tmp_path / "run", progress=False).metrics["seeds"][0]
    assert events == ["fit(train, validation=validation)", *["validation"] * 5, "chosen", "train", "test"]

    monkeypatch.undo()  # another test set (labels rolled): the same choice, another test accuracy
    rolled = ExampleData(data.x_train, data.y_train, data.x_test, torch.roll(data.y_test, 1))
    monkeypatch.setattr(ep_learning, "_data", lambda dataset, problem, seed, split_seed=None: rolled)
    other = run_task(config, tmp_path / "other", progress=False).metrics["seeds"][0]
    same = ("selected_epoch", "validation_accuracy", "validation_loss", "train_accuracy")
    assert [other[k] for k in same] == [row[k] for k in same] and other["test_accuracy"] != row["test_accuracy"]
    curves = [[(r["val_loss"], r["val_accuracy"]) for r in json.loads((tmp_path / d / "iris" / "seed_0" / "history.json").read_text())]
              for d in ("run", "other")]  # fmt: skip
    assert curves[0] == curves[1] and len(curves[0]) == 5


def test_the_selected_weights_are_those_of_the_best_validation_epoch(tmp_path):
    from inmaterio.circuits.examples import get_example
    from inmaterio.circuits.fit import best_epoch

    data = get_example("iris").load(1)
    tr, va = ep_learning.validation_split(data.y_train, 0.2, seed=1)
    x, y, validation = data.x_train[tr], data.y_train[tr], (data.x_train[va], data.y_train[va])
    config = DATASETS["iris"][3] | {"epochs": 8, "batch_size": 12, "lr": 0.02, "seed": 1}
    training = ep_learning.EPTrainConfig(**config)
    model = diode_network(4, 10, 3, seed=1)
    history = fit(model, x, y, training, validation=validation, progress=False, restore_best=True)
    rows = sorted(history, key=lambda r: (-r["val_accuracy"], r["val_loss"], r["epoch"]))  # the documented rule
    chosen = best_epoch(history)
    assert chosen == rows[0]["epoch"] and chosen < 8  # not simply the last epoch in this case
    twin = diode_network(4, 10, 3, seed=1)  # trained for `chosen` epochs only: the same weights, bit for bit
    fit(twin, x, y, training.model_copy(update={"epochs": chosen}), validation=validation, progress=False)
    for (key, p), q in zip(model.normalised_parameters().items(), twin.normalised_parameters().values()):
        assert torch.equal(p, q), key
    assert evaluate(model, *validation, training) == {"loss": rows[0]["val_loss"], "accuracy": rows[0]["val_accuracy"]}
    last = diode_network(4, 10, 3, seed=1)  # without restore_best: the same history, the last epoch's weights (as before)
    untimed = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert untimed(fit(last, x, y, training, validation=validation, progress=False)) == untimed(history)
    assert evaluate(last, *validation, training)["loss"] == history[-1]["val_loss"] != rows[0]["val_loss"]
    with pytest.raises(ConfigError, match="restore_best=True needs validation=.* got no validation data"):
        fit(model, x, y, training, progress=False, restore_best=True)


def test_an_interrupted_selected_study_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    """Stopped inside a seed's training (after epoch 3 of 5): the best weights so far come back from the checkpoint."""
    config = parse_run_config(IRIS_SELECTED_TINY)
    reference = run_task(config, tmp_path / "reference", progress=False).metrics
    _interrupt_at_ep_step(monkeypatch, config, tmp_path / "run", 3 * 4 + 2)  # 84 samples in batches of 21: 4 steps per epoch
    state = torch.load(tmp_path / "run" / "iris" / "seed_0" / "checkpoint.pt", weights_only=True)["state"]
    assert "best" in state and 1 <= state["best"]["epoch"] <= 3
    resumed = run_task(config, tmp_path / "run", progress=False).metrics
    assert _untimed_seeds(resumed) == _untimed_seeds(reference)
    assert resumed["selection"] == {"kind": "validation", "fraction": 0.2}
    report = build_report([tmp_path / "run"])
    seed = resumed["seeds"][0]
    assert "21 of the 105 training samples held out" in report and "| iris | 84 + 21 / 45 |" in report
    assert f"| iris | 0 | {seed['train_accuracy']:.2%} | {seed['validation_accuracy']:.2%} ({seed['selected_epoch']}) |" in report


def test_a_fixed_split_gives_every_seed_the_same_test_set_and_only_then():
    """``split_seed`` fixes the train/test split for all seeds; without it seed s draws split s."""
    from inmaterio.circuits.examples import get_example

    fixed = parse_run_config({"task": {"type": "ep_learning", "dataset": "iris", "split_seed": 0}}).task
    per_seed = parse_run_config({"task": {"type": "ep_learning", "dataset": "iris"}}).task
    reference = get_example("iris").load(0)  # sklearn's stratified split with random_state 0
    for seed in (0, 3, 7):
        data = ep_learning._data(fixed.dataset, "iris", seed, fixed.split_seed)
        assert torch.equal(data.x_test, reference.x_test) and torch.equal(data.y_train, reference.y_train)
    assert not torch.equal(ep_learning._data(per_seed.dataset, "iris", 3, per_seed.split_seed).x_test, reference.x_test)
    assert "split_seed" not in parse_run_config({"task": {"type": "ep_learning"}}).identity()["task"]
    assert parse_run_config({"task": {"type": "ep_learning", "split_seed": 0}}).identity()["task"]["split_seed"] == 0
    with pytest.raises(ConfigError, match=r"task\.split_seed' = -1"):
        parse_run_config({"task": {"type": "ep_learning", "split_seed": -1}})
    with pytest.raises(ConfigError, match=r"split_seed 0 fixes a train/test split, but dataset 'gates' has none"):
        parse_run_config({"task": {"type": "ep_learning", "dataset": "gates", "split_seed": 0}})


def test_a_decayed_learning_rate_reaches_every_seed_and_the_report(tmp_path):
    """``training.lr_decay``: each seed trains at ``lr d^(e-1)`` in epoch ``e`` (as plain fit), the report says so."""
    tiny = {"task": {**GATES_TINY["task"], "gates": ["XOR"], "seeds": 1, "training": {"epochs": 3, "lr_decay": 0.5}}}
    config = parse_run_config(tiny)
    run_task(config, tmp_path / "run", progress=False)
    history = json.loads((tmp_path / "run" / "XOR" / "seed_0" / "history.json").read_text())
    lr = config.task.training.lr
    assert [row["lr"] for row in history] == [lr, lr * 0.5, lr * 0.25]
    assert f"lr {lr} (x0.5 per epoch)" in build_report([tmp_path / "run"])
    assert "lr_decay" not in parse_run_config(GATES_TINY).identity()["task"]["training"]  # earlier runs keep theirs


def test_refit_trains_a_fresh_circuit_on_the_whole_training_set_for_the_selected_epochs(tmp_path, monkeypatch):
    """``refit``: the validation run only chooses the number of epochs; the tested circuit is the seed's initial
    circuit trained on all 105 samples for that many epochs (bit for bit), and the test set is evaluated once."""
    import inmaterio.circuits as circuits_package
    from inmaterio.circuits.examples import get_example

    tiny = {"task": {**IRIS_SELECTED_TINY["task"], "selection": {"kind": "validation", "fraction": 0.2, "refit": True}}}
    config = parse_run_config(tiny)
    data = get_example("iris").load(0)
    tests_seen = []
    real_evaluate = circuits_package.evaluate

    def evaluate_spy(model, x, y, *args, **kwargs):
        if x.shape == data.x_test.shape and torch.equal(x, data.x_test):
            tests_seen.append(1)
        return real_evaluate(model, x, y, *args, **kwargs)

    monkeypatch.setattr(circuits_package, "evaluate", evaluate_spy)
    metrics = run_task(config, tmp_path / "run", progress=False).metrics
    monkeypatch.undo()
    row = metrics["seeds"][0]
    assert tests_seen == [1] and row["refit_epochs"] == row["selected_epoch"] and row["n_refit"] == 105
    assert metrics["selection"] == {"kind": "validation", "fraction": 0.2, "refit": True}

    training = config.task.training.model_copy(update={"seed": 0, "epochs": row["selected_epoch"]})
    twin = diode_network(4, config.task.n_hidden(), 3, seed=0, diode_bias_v=config.task.diode_bias_v, gain=config.task.gain)
    fit(twin, data.x_train, data.y_train, training, progress=False)
    assert row["test_accuracy"] == evaluate(twin, data.x_test, data.y_test, training)["accuracy"]
    assert row["train_accuracy"] == evaluate(twin, data.x_train, data.y_train, training)["accuracy"]
    assert (tmp_path / "run" / "iris" / "seed_0_refit" / "run.json").is_file()
    assert "a fresh circuit (the seed's initialisation) trains on all 105 training samples" in build_report([tmp_path / "run"])

    without = parse_run_config(IRIS_SELECTED_TINY)  # refit off: left out of the identity (earlier runs keep theirs)
    assert without.identity()["task"]["selection"] == {"kind": "validation", "fraction": 0.2}
    with pytest.raises(ConfigError, match="refit .* needs kind 'validation', got 'last'"):
        parse_run_config({"task": {"type": "ep_learning", "dataset": "iris", "selection": {"refit": True}}})


# ---------------------------------------------------------------- the number of epochs chosen by cross-validation

IRIS_CV_TINY = {
    "task": {"type": "ep_learning", "dataset": "iris", "seeds": 1, "training": {"epochs": 4, "batch_size": 35, "lr": 0.02},
             "selection": {"kind": "cross_validation", "folds": 3}}
}  # fmt: skip


def test_cross_validation_folds_are_stratified_balanced_and_drawn_per_seed():
    from inmaterio.circuits.examples import get_example

    y = get_example("iris").load(0).y_train  # 35 of each class
    fold = ep_learning.cross_validation_folds(y, 5, seed=2)
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3, 4]
    assert all(torch.bincount(y[fold == k]).tolist() == [7, 7, 7] for k in range(5))
    four = ep_learning.cross_validation_folds(y, 4, seed=2)  # 35 = 4 x 8 + 3: per class 8 or 9, fold sizes 26 or 27
    assert all(set(torch.bincount(y[four == k]).tolist()) <= {8, 9} for k in range(4))
    assert sorted(torch.bincount(four).tolist()) == [26, 26, 26, 27]
    assert torch.equal(ep_learning.cross_validation_folds(y, 5, seed=2), fold)
    assert not torch.equal(ep_learning.cross_validation_folds(y, 5, seed=3), fold)
    with pytest.raises(ConfigError, match=r"task\.selection\.folds = 4 exceeds the 3 training samples of class 1"):
        ep_learning.cross_validation_folds(torch.tensor([0, 0, 0, 0, 1, 1, 1]), 4, seed=0)


def test_pooled_history_weights_the_folds_by_the_samples_they_hold_out():
    a = [{"epoch": 1, "val_accuracy": 1.0, "val_loss": 0.2, "loss": 1.0, "accuracy": 0.5, "seconds": 1.0}]
    b = [{"epoch": 1, "val_accuracy": 0.0, "val_loss": 0.6, "loss": 3.0, "accuracy": 1.0, "seconds": 2.0}]
    (row,) = ep_learning.pooled_history([a, b], [1, 3])  # 1 of 4 held-out predictions right
    assert row == {"epoch": 1, "val_accuracy": 0.25, "val_loss": pytest.approx(0.5), "loss": 2.0, "accuracy": 0.75,
                   "seconds": 3.0}  # fmt: skip
    with pytest.raises(ConfigError, match=r"one size per history and histories of one length, got 1 sizes and lengths \[1, 1\]"):
        ep_learning.pooled_history([a, b], [1])


def test_cross_validation_chooses_the_epochs_on_held_out_folds_and_tests_a_circuit_trained_on_all(tmp_path, monkeypatch):
    """Each fold's circuit trains on the other folds and is evaluated on its own; the pooled held-out accuracy (the
    documented rule) picks the number of epochs; the tested circuit is the seed's initial one trained on all 105
    samples for that many epochs (bit for bit); the test set is evaluated once, after every training."""
    import inmaterio.circuits as circuits_package
    from inmaterio.circuits.examples import get_example

    config = parse_run_config(IRIS_CV_TINY)
    data = get_example("iris").load(0)
    fold = ep_learning.cross_validation_folds(data.y_train, 3, seed=0)
    events: list[str] = []
    real_fit, real_evaluate = circuits_package.fit, circuits_package.evaluate

    def fit_spy(model, x, y, *args, **kwargs):
        held = [k for k in range(3) if torch.equal(x, data.x_train[fold != k])]
        validation = kwargs.get("validation")
        assert validation is None or torch.equal(validation[0], data.x_train[fold == held[0]])
        events.append(f"fit fold {held[0]}" if held else ("fit all" if torch.equal(x, data.x_train) else "fit other"))
        return real_fit(model, x, y, *args, **kwargs)

    def evaluate_spy(model, x, y, *args, **kwargs):
        events.append("test" if torch.equal(x, data.x_test) else "train" if torch.equal(x, data.x_train) else "other")
        return real_evaluate(model, x, y, *args, **kwargs)

    monkeypatch.setattr(circuits_package, "fit", fit_spy)
    monkeypatch.setattr(circuits_package, "evaluate", evaluate_spy)
    metrics = run_task(config, tmp_path / "run", progress=False).metrics
    monkeypatch.undo()
    assert events == ["fit fold 0", "fit fold 1", "fit fold 2", "fit all", "train", "test"]

    rows = [json.loads((tmp_path / "run" / "iris" / f"seed_0_fold_{k}" / "history.json").read_text()) for k in range(3)]
    sizes = [int((fold == k).sum()) for k in range(3)]
    by_hand = [(sum(n * r[e]["val_accuracy"] for n, r in zip(sizes, rows)) / 105,
                sum(n * r[e]["val_loss"] for n, r in zip(sizes, rows)) / 105, e + 1) for e in range(4)]  # fmt: skip
    chosen = sorted(by_hand, key=lambda t: (-round(t[0], 12), t[1], t[2]))[0]
    row = metrics["seeds"][0]
    assert row["selected_epoch"] == row["refit_epochs"] == chosen[2] and row["n_refit"] == 105 and row["folds"] == 3
    assert row["validation_accuracy"] == pytest.approx(chosen[0]) and row["validation_loss"] == pytest.approx(chosen[1])
    assert metrics["selection"] == {"kind": "cross_validation", "folds": 3}

    training = config.task.training.model_copy(update={"seed": 0, "epochs": chosen[2]})
    twin = diode_network(4, config.task.n_hidden(), 3, seed=0, diode_bias_v=config.task.diode_bias_v, gain=config.task.gain)
    fit(twin, data.x_train, data.y_train, training, progress=False)
    assert row["test_accuracy"] == evaluate(twin, data.x_test, data.y_test, training)["accuracy"]
    assert row["train_accuracy"] == evaluate(twin, data.x_train, data.y_train, training)["accuracy"]
    report = build_report([tmp_path / "run"])
    assert "Number of epochs chosen by 3-fold cross-validation" in report and "| iris | 105 (3-fold CV) / 45 |" in report
    assert (tmp_path / "run" / "learning_curve.png").is_file()


def test_an_interrupted_cross_validation_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    """Stopped inside the second fold's training: the finished fold is not trained again, the result is the same."""
    config = parse_run_config(IRIS_CV_TINY)
    reference = run_task(config, tmp_path / "reference", progress=False).metrics
    _interrupt_at_ep_step(
        monkeypatch, config, tmp_path / "run", 4 * 2 + 3
    )  # 70 samples in batches of 35: 2 steps per epoch, 4 epochs per fold
    assert json.loads((tmp_path / "run" / "iris" / "seed_0_fold_0" / "run.json").read_text())["state"] == "finished"
    resumed = run_task(config, tmp_path / "run", progress=False).metrics
    assert _untimed_seeds(resumed) == _untimed_seeds(reference)


def test_bad_cross_validation_configs_name_the_field():
    base = {"type": "ep_learning", "dataset": "iris"}
    for folds in (1, 21):
        with pytest.raises(ConfigError, match=rf"task\.selection\.folds' = {folds}"):
            parse_run_config({"task": {**base, "selection": {"kind": "cross_validation", "folds": folds}}})
    with pytest.raises(
        ConfigError, match="folds 3 is the number of cross-validation folds; it needs kind 'cross_validation', got 'validation'"
    ):
        parse_run_config({"task": {**base, "selection": {"kind": "validation", "folds": 3}}})
    with pytest.raises(ConfigError, match="refit: cross_validation always trains a fresh circuit on the whole training set"):
        parse_run_config({"task": {**base, "selection": {"kind": "cross_validation", "refit": True}}})
    with pytest.raises(ConfigError, match="fraction 0.3 is the held-out part of kind 'validation'; .* set folds instead"):
        parse_run_config({"task": {**base, "selection": {"kind": "cross_validation", "fraction": 0.3}}})
    with pytest.raises(ConfigError, match=r"selection\.kind 'cross_validation' needs a dataset .* got dataset 'gates'"):
        parse_run_config({"task": {**base, "dataset": "gates", "selection": {"kind": "cross_validation"}}})
    assert parse_run_config({"task": {**base, "selection": {"kind": "cross_validation"}}}).identity()["task"]["selection"] == {
        "kind": "cross_validation", "folds": 5}  # fmt: skip
    assert "folds" not in parse_run_config(IRIS_SELECTED_TINY).identity()["task"]["selection"]
