"""Analog diode circuits trained with Equilibrium Propagation: accuracy over seeds, as one typed study.

The network is EBANA's (Watfa et al. 2023), built by
:func:`~inmaterio.circuits.examples.diode_network`: inputs and their inverted
copies plus bias sources (+1 V, -1 V), a Dense crossbar to hidden nodes with
two Shockley diodes each (series bias ``diode_bias_v``), bidirectional
amplifiers (gain ``gain``) and a Dense crossbar to two output nodes per class,
read differentially. Symmetric EP, MSE on the class scores by default
(:class:`~inmaterio.circuits.fit.EPTrainConfig`).

``dataset``:

- ``xor`` / ``gates``: the four points of two binary inputs; ``gates`` trains
  every gate of ``gates`` (one circuit each); a seed *succeeds* when the
  free circuit classifies all four points after the last epoch;
- ``iris``, ``wine``, ``digits``: stratified splits of the scikit-learn sets
  (features min-max scaled to [-1, 1] V on the training set); each seed
  draws its own initial conductances, and its own split unless
  ``split_seed`` fixes one split for every seed.

Every (problem, seed) is one :func:`~inmaterio.circuits.fit` in its own
nested run folder ``<problem>/seed_<s>/``, so an interrupted study resumes
each training after its last epoch and skips the finished ones; its numbers
are kept in the study's checkpoint as they finish.

``selection`` (:class:`SelectionConfig`) says which weights are tested:

- ``kind: last`` (the default): those after the last epoch. The test set is
  evaluated after every epoch only for the learning curve (it never changes
  what is reported).
- ``kind: validation`` (tabular sets only): a stratified part ``fraction``
  of each seed's training set is held out (:func:`validation_split`: per
  class ``round(fraction * n_class)`` samples, drawn by a generator keyed by
  the seed); the circuit trains on the rest and is evaluated on the held-out
  part after every epoch; the weights of the best validation epoch
  (:func:`~inmaterio.circuits.fit.best_epoch`: highest validation accuracy,
  ties: lowest validation loss, then the earliest epoch; kept in the
  training's checkpoint) are tested once, after training. The test set is
  never evaluated before the choice is made, so it cannot influence it; the
  learning curve then shows training and validation accuracy. With
  ``refit: true`` only the number of epochs is taken from that choice: a fresh
  circuit with the seed's initialisation trains on the whole training set for
  that many epochs (``<problem>/seed_<s>_refit/``) and is the one tested.
- ``kind: cross_validation`` (tabular sets only): the training set is cut
  into ``folds`` stratified folds (:func:`cross_validation_folds`); fold
  ``k``'s circuit (the seed's initialisation) trains on the other folds
  (``<problem>/seed_<s>_fold_<k>/``) and is evaluated on fold ``k`` after
  every epoch. Pooled over the folds, every training sample is predicted
  once per epoch by a circuit that never saw it; the epoch with the best
  pooled accuracy (ties: lowest pooled loss, then the earliest) gives the
  number of epochs, and a fresh circuit trains on the whole training set
  for that many epochs (``<problem>/seed_<s>_refit/``) and is the one
  tested. Costs ``folds + 1`` trainings per seed; uses every training
  sample for the choice, where ``validation`` uses ``fraction`` of them.

``inmaterio run examples/ep_learning.yaml`` (Iris); variants in ``examples/ep_learning/``.
"""

from __future__ import annotations

import statistics
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_serializer, model_validator

from inmaterio.circuits.fit import EPTrainConfig
from inmaterio.config import StrictModel
from inmaterio.errors import ConfigError
from inmaterio.runs import RunFolder
from inmaterio.tasks.gates import GATES, GateName
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = [
    "DATASETS",
    "EPLearningTask",
    "EPLearningConfig",
    "SelectionConfig",
    "run_ep_learning",
    "report_ep_learning",
    "validation_split",
    "cross_validation_folds",
]

_RECIPE = {"beta": 1e-7, "variant": "symmetric", "optimizer": "adam", "loss": "mse", "readout": "differential", "target_v": 0.1}

#: Per dataset: (inputs, classes, hidden nodes, training recipe) as measured to learn it.
DATASETS: dict[str, tuple[int, int, int, dict[str, Any]]] = {
    "xor": (2, 2, 6, {"epochs": 150, "batch_size": 4, "lr": 0.02, **_RECIPE}),
    "gates": (2, 2, 6, {"epochs": 150, "batch_size": 4, "lr": 0.02, **_RECIPE}),
    "iris": (4, 3, 10, {"epochs": 200, "batch_size": 8, "lr": 0.003, **_RECIPE}),
    "wine": (13, 3, 10, {"epochs": 60, "batch_size": 8, "lr": 0.01, **_RECIPE}),
    "digits": (64, 10, 40, {"epochs": 15, "batch_size": 16, "lr": 0.01, **_RECIPE}),
}


#: Key of the random stream that draws the validation part of a seed's training set.
_VALIDATION_STREAM = 0x5E1EC7
#: Key of the random stream that deals a seed's training set to the cross-validation folds.
_FOLDS_STREAM = 0xF01D5


class SelectionConfig(StrictModel):
    """Which weights are tested (see the module docstring).

    kind : "last" (after the last epoch), "validation" (the best epoch on a held-out part of the training set) or
        "cross_validation" (the number of epochs chosen by k-fold cross-validation on the training set, then a
        circuit trained on all of it).
    fraction : the part of every class of the training set held out with ``validation``, in (0, 1); unused by ``last``,
        refused with ``cross_validation`` (which holds out each fold in turn).
    refit : with ``validation`` only: train a fresh circuit (the seed's initialisation) on the whole training set for
        the selected number of epochs and test that one instead (the selection run is then never tested).
        ``cross_validation`` always does so (``refit`` is refused there).
    folds : with ``cross_validation`` only: the number of folds, 2 to 20 (left out of the dumped config otherwise).
    """

    kind: Literal["last", "validation", "cross_validation"] = "last"
    fraction: float = Field(0.2, gt=0, lt=1)
    refit: bool = False
    folds: int = Field(5, ge=2, le=20)

    @model_validator(mode="after")
    def _refit_needs_validation(self) -> SelectionConfig:
        if self.refit and self.kind == "cross_validation":
            raise ValueError("refit: cross_validation always trains a fresh circuit on the whole training set; leave refit out")
        if self.refit and self.kind != "validation":
            raise ValueError(
                f"refit retrains for the epochs a validation part selects; it needs kind 'validation', got {self.kind!r}"
            )
        return self

    @model_validator(mode="after")
    def _folds_need_cross_validation(self) -> SelectionConfig:
        if self.folds != 5 and self.kind != "cross_validation":
            raise ValueError(
                f"folds {self.folds} is the number of cross-validation folds; it needs kind 'cross_validation', got {self.kind!r}"
            )
        if self.fraction != 0.2 and self.kind == "cross_validation":
            raise ValueError(f"fraction {self.fraction} is the held-out part of kind 'validation'; cross_validation holds out "
                             "each of its folds in turn: set folds instead")  # fmt: skip
        return self

    @model_serializer(mode="wrap")
    def _dump_without_default_refit(self, handler) -> dict[str, Any]:
        data = handler(self)
        if not self.refit:
            data.pop("refit", None)  # runs made before the option existed keep their identity
        if self.kind != "cross_validation":
            data.pop("folds", None)
        else:
            data.pop("fraction", None)  # unused by cross-validation
        return data


def validation_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified, seeded indices ``(train, validation)`` into labels ``y (n,)``; each sorted, disjoint, together all of ``y``.

    Of every class ``c`` (``n_c`` samples), ``round(fraction * n_c)`` (halves up) are held out, drawn by a
    numpy generator seeded by ``(seed, stream key)``, class by class in increasing order.

    Raises:
        ConfigError: a class whose held-out part or remaining part would be empty (names ``task.selection.fraction``).
    """
    labels = np.asarray(y)
    rng = np.random.default_rng([seed, _VALIDATION_STREAM])
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = int(np.floor(fraction * len(members) + 0.5))
        if not 1 <= k <= len(members) - 1:
            raise ConfigError(
                f"task.selection.fraction = {fraction} holds out {k} of the {len(members)} training samples of class {c}; "
                "choose a fraction that leaves at least one sample of every class in both the training and validation parts"
            )
        held.append(rng.permutation(members)[:k])
    val = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return torch.from_numpy(train), torch.from_numpy(val)


def cross_validation_folds(y: torch.Tensor, folds: int, seed: int) -> torch.Tensor:
    """``(n,)`` fold index (0 .. folds-1) of every label in ``y (n,)``: stratified and seeded.

    Every class's members are put in an order drawn by a numpy generator seeded by ``(seed, stream key)`` and dealt
    to the folds in turn, class by class in increasing order (the next class starts at the fold after the one the
    previous class ended on), so every fold holds ``floor`` or ``ceil`` of ``n_c / folds`` of every class ``c`` and
    the folds' sizes differ by at most one.

    Raises:
        ConfigError: a class with fewer members than folds (names ``task.selection.folds``).
    """
    labels = np.asarray(y)
    rng = np.random.default_rng([seed, _FOLDS_STREAM])
    fold = np.empty(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < folds:
            raise ConfigError(
                f"task.selection.folds = {folds} exceeds the {len(members)} training samples of class {c}; "
                f"choose at most {len(members)} folds so that every fold validates every class"
            )
        fold[rng.permutation(members)] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    return torch.from_numpy(fold)


class EPLearningTask(StrictModel):
    """What to learn and how.

    dataset : xor, gates, iris, wine or digits (see the module docstring).
    gates : the gates of ``dataset: gates`` (AND, OR, NAND, NOR, XOR, XNOR; no repeats).
    seeds : seeds 0 .. seeds-1, each its own initialisation and shuffling, and its own split (tabular sets)
        unless ``split_seed`` fixes one.
    split_seed : null (default): seed ``s`` uses the train/test split drawn with ``random_state = s``; an integer:
        every seed uses the one split drawn with ``random_state = split_seed`` (a fixed split, as a published
        105/45 Iris split is one split), so the seeds differ only in initialisation, shuffling and validation
        part. Left out of the dumped config when null, so the configs of earlier runs dump as before.
    hidden : hidden diode nodes (null: the dataset's default, 6 / 10 / 10 / 40).
    diode_bias_v : series bias of every diode, V (-0.3 V: they conduct near +-0.1 V).
    gain : amplifier voltage gain (> 0; the current gain is 1 / gain).
    training : EP settings; keys not given keep the dataset's recipe (e.g. Iris: lr 0.003, 200 epochs).
    selection : which weights are tested (:class:`SelectionConfig`; default the last epoch's; left out of
        the dumped config when it is the default, so the configs of earlier runs dump as before).
    """

    type: Literal["ep_learning"]
    dataset: Literal["xor", "gates", "iris", "wine", "digits"] = "iris"
    gates: list[GateName] = Field(default_factory=lambda: list(GATES))
    seeds: int = Field(10, ge=1, le=1000)
    hidden: int | None = Field(None, ge=1, le=10_000)
    diode_bias_v: float = Field(-0.3, ge=-10, le=10)
    gain: float = Field(4.0, gt=0, le=1e6)
    split_seed: int | None = Field(None, ge=0, le=2**32 - 1)
    training: EPTrainConfig
    selection: SelectionConfig = SelectionConfig()

    @model_validator(mode="before")
    @classmethod
    def _recipe_of_the_dataset(cls, data: Any) -> Any:
        if isinstance(data, dict) and (training := data.get("training", {})) is not None and isinstance(training, dict):
            dataset = data.get("dataset", "iris")
            recipe = DATASETS[dataset][3] if dataset in DATASETS else {}
            return {**data, "training": {**recipe, **training}}
        return data

    @field_validator("gates")
    @classmethod
    def _unique_gates(cls, gates: list[str]) -> list[str]:
        if not gates or len(set(gates)) != len(gates):
            raise ValueError(f"gates must list each of AND, OR, NAND, NOR, XOR, XNOR at most once, got {gates}")
        return gates

    @model_validator(mode="after")
    def _split_seed_needs_a_split(self) -> EPLearningTask:
        if self.split_seed is not None and self.dataset in ("xor", "gates"):
            raise ValueError(
                f"split_seed {self.split_seed} fixes a train/test split, but dataset {self.dataset!r} has none "
                "(its four points are both the training and the test set); leave split_seed out (null)"
            )
        return self

    @model_validator(mode="after")
    def _validation_needs_a_training_set(self) -> EPLearningTask:
        if self.selection.kind != "last" and self.dataset in ("xor", "gates"):
            raise ValueError(
                f"selection.kind {self.selection.kind!r} needs a dataset with a training set to split (iris, wine, digits), "
                f"got dataset {self.dataset!r} (its four points are both the training and the test set)"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump_without_default_selection(self, handler) -> dict[str, Any]:
        data = handler(self)
        if self.selection == SelectionConfig():
            data.pop("selection", None)
        if self.split_seed is None:
            data.pop("split_seed", None)
        return data

    def problems(self) -> list[str]:
        """The problems trained: the gates, or the dataset itself."""
        return list(self.gates) if self.dataset == "gates" else [self.dataset]

    def n_hidden(self) -> int:
        return self.hidden if self.hidden is not None else DATASETS[self.dataset][2]


class EPLearningConfig(RunnableConfig):
    """An EP learning study: the task and the torch threads (speed only)."""

    SPEED_ONLY = {"threads": True}

    task: EPLearningTask
    threads: int = Field(1, ge=1, le=256)


def _data(dataset: str, problem: str, seed: int, split_seed: int | None = None):
    """``ExampleData`` of one problem and seed (volts, class indices); ``split_seed`` fixes the train/test split."""
    from inmaterio.circuits.examples import ExampleData, get_example

    if dataset == "gates":
        x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
        y = torch.tensor(GATES[problem])
        return ExampleData(x, y, x, y)
    return get_example(dataset).load(seed if split_seed is None else split_seed)


def _train_one(task: EPLearningTask, problem: str, seed: int, run: RunFolder, progress: bool) -> dict[str, Any]:
    """Fit one circuit in ``<run>/<problem>/seed_<seed>/``; its final accuracies, timing and curves."""
    from inmaterio.circuits import evaluate, fit
    from inmaterio.circuits.examples import diode_network

    n_inputs, n_classes, _, _ = DATASETS[task.dataset]
    data = _data(task.dataset, problem, seed, task.split_seed)

    def fresh():  # the seed's initial circuit
        return diode_network(n_inputs, task.n_hidden(), n_classes, seed=seed, diode_bias_v=task.diode_bias_v, gain=task.gain)

    config = task.training.model_copy(update={"seed": seed})
    if task.selection.kind == "validation":
        return _train_one_selected(task, problem, seed, run, progress, data, fresh, config)
    if task.selection.kind == "cross_validation":
        return _train_one_cross_validated(task, problem, seed, run, progress, data, fresh, config)
    model = fresh()
    history = fit(
        model, data.x_train, data.y_train, config, validation=(data.x_test, data.y_test),
        directory=run.subfolder(f"{problem}/seed_{seed}"), progress=progress,
    )  # fmt: skip
    train = evaluate(model, data.x_train, data.y_train, config)["accuracy"]
    test = evaluate(model, data.x_test, data.y_test, config)["accuracy"]
    best = max(range(len(history)), key=lambda i: history[i]["val_accuracy"])
    hit = [r["epoch"] for r in history if r["accuracy"] == 1.0]
    seconds = statistics.median(r["seconds"] for r in history)
    return {
        "problem": problem,
        "seed": seed,
        "train_accuracy": train,
        "test_accuracy": test,
        "best_test_accuracy_during_training": history[best]["val_accuracy"],
        "best_epoch": best + 1,
        "first_epoch_at_100": hit[0] if hit else None,
        "seconds_per_epoch": seconds,
        "samples_per_second": len(data.x_train) / seconds,
        "n_train": len(data.x_train),
        "n_test": len(data.x_test),
        "curves": {k: [r[k] for r in history] for k in ("loss", "accuracy", "val_accuracy")},
    }


def _train_one_selected(task: EPLearningTask, problem: str, seed: int, run: RunFolder, progress: bool, data, fresh, config):
    """``selection: validation``: train on part of the training set, keep the best validation epoch, test it once.

    ``fresh()`` builds the seed's initial circuit; with ``refit`` a second one trains on the whole training set for
    the selected number of epochs and is tested instead.
    """
    from inmaterio.circuits import fit
    from inmaterio.circuits.fit import best_epoch

    model = fresh()
    fit_idx, val_idx = validation_split(data.y_train, task.selection.fraction, seed)
    x_fit, y_fit = data.x_train[fit_idx], data.y_train[fit_idx]
    x_val, y_val = data.x_train[val_idx], data.y_train[val_idx]
    history = fit(
        model, x_fit, y_fit, config, validation=(x_val, y_val), directory=run.subfolder(f"{problem}/seed_{seed}"),
        progress=progress, restore_best=True,
    )  # fmt: skip
    chosen = best_epoch(history)  # the model holds this epoch's weights; only validation numbers chose it
    refit = {}
    if task.selection.refit:
        model, x_fit, y_fit = fresh(), data.x_train, data.y_train
        fit(model, x_fit, y_fit, config.model_copy(update={"epochs": chosen}),
            directory=run.subfolder(f"{problem}/seed_{seed}_refit"), progress=progress)  # fmt: skip
        refit = {"refit_epochs": chosen, "n_refit": len(x_fit)}
    hit = [r["epoch"] for r in history if r["accuracy"] == 1.0]
    seconds = statistics.median(r["seconds"] for r in history)
    return _tested(problem, seed, model, (x_fit, y_fit), data, config, history, chosen,
                   first_epoch_at_100=hit[0] if hit else None, seconds_per_epoch=seconds,
                   samples_per_second=len(fit_idx) / seconds, n_train=len(fit_idx), n_validation=len(x_val), **refit)  # fmt: skip


def _tested(
    problem: str, seed: int, model, train: tuple, data, config, history: list[dict], chosen: int, **extra
) -> dict[str, Any]:
    """A selected seed's result: ``model`` evaluated on ``train`` ``(x, y)``, then once on the test set, beside the
    validation numbers of epoch ``chosen`` in ``history``, ``extra`` and the curves."""
    from inmaterio.circuits import evaluate

    train_accuracy = evaluate(model, *train, config)["accuracy"]
    test = evaluate(model, data.x_test, data.y_test, config)["accuracy"]  # the test set's only use
    row = history[chosen - 1]
    return {
        "problem": problem,
        "seed": seed,
        "train_accuracy": train_accuracy,
        "test_accuracy": test,
        "validation_accuracy": row["val_accuracy"],
        "validation_loss": row["val_loss"],
        "selected_epoch": chosen,
        "n_test": len(data.x_test),
        **extra,
        "curves": {k: [r[k] for r in history] for k in ("loss", "accuracy", "val_accuracy")},
    }


def pooled_history(histories: list[list[dict[str, Any]]], sizes: list[int]) -> list[dict[str, Any]]:
    """One history from the folds' :func:`~inmaterio.circuits.fit` histories (``sizes``: samples each fold validates).

    Per epoch: ``val_accuracy`` and ``val_loss`` over all held-out predictions (fold means weighted by fold size),
    ``loss`` and ``accuracy`` (training, during the epoch) the plain mean over the folds.

    Raises:
        ConfigError: histories of different lengths, or a count of sizes that does not match them.
    """
    if len(histories) != len(sizes) or len({len(h) for h in histories}) != 1:
        raise ConfigError(f"pooled_history needs one size per history and histories of one length, got "
                          f"{len(sizes)} sizes and lengths {[len(h) for h in histories]}")  # fmt: skip
    w = np.asarray(sizes, dtype=float) / sum(sizes)
    return [
        {"epoch": rows[0]["epoch"],
         "val_accuracy": float(sum(wi * r["val_accuracy"] for wi, r in zip(w, rows))),
         "val_loss": float(sum(wi * r["val_loss"] for wi, r in zip(w, rows))),
         "loss": float(np.mean([r["loss"] for r in rows])), "accuracy": float(np.mean([r["accuracy"] for r in rows])),
         "seconds": float(sum(r["seconds"] for r in rows))}
        for rows in zip(*histories)
    ]  # fmt: skip


def _train_one_cross_validated(
    task: EPLearningTask, problem: str, seed: int, run: RunFolder, progress: bool, data, fresh, config
):
    """``selection: cross_validation``: choose the number of epochs on ``folds`` held-out folds, train on all, test once."""
    from inmaterio.circuits import fit
    from inmaterio.circuits.fit import best_epoch

    fold = cross_validation_folds(data.y_train, task.selection.folds, seed)
    histories, sizes = [], []
    for k in range(task.selection.folds):
        held = fold == k
        histories.append(fit(
            fresh(), data.x_train[~held], data.y_train[~held], config, validation=(data.x_train[held], data.y_train[held]),
            directory=run.subfolder(f"{problem}/seed_{seed}_fold_{k}"), progress=progress,
        ))  # fmt: skip
        sizes.append(int(held.sum()))
    pooled = pooled_history(histories, sizes)
    chosen = best_epoch(pooled)  # only the held-out folds' numbers chose it
    model = fresh()
    fit(model, data.x_train, data.y_train, config.model_copy(update={"epochs": chosen}),
        directory=run.subfolder(f"{problem}/seed_{seed}_refit"), progress=progress)  # fmt: skip
    n, folds = len(fold), task.selection.folds
    seconds = statistics.median(r["seconds"] / folds for r in pooled)
    return _tested(problem, seed, model, (data.x_train, data.y_train), data, config, pooled, chosen,
                   first_epoch_at_100=None, seconds_per_epoch=seconds, samples_per_second=(n - n / folds) / seconds,
                   n_train=n, n_validation=n, folds=folds, refit_epochs=chosen, n_refit=n)  # fmt: skip


def run_ep_learning(config: EPLearningConfig, run: RunFolder, *, progress: bool, prepared: None = None) -> TaskOutcome:
    """Train every (problem, seed); finished ones are kept in the checkpoint and not trained again."""
    task = config.task
    done: dict[str, Any] = dict((run.load_checkpoint() or {}).get("results", {}))
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        for problem in task.problems():
            for seed in range(task.seeds):
                key = f"{problem}/seed_{seed}"
                if key not in done:
                    done[key] = _train_one(task, problem, seed, run, progress)
                    run.save_checkpoint({"results": done})
    finally:
        torch.set_num_threads(saved_threads)
    results = [done[f"{p}/seed_{s}"] for p in task.problems() for s in range(task.seeds)]
    _learning_curves(run, task, results)
    summary = {p: _summary([r for r in results if r["problem"] == p]) for p in task.problems()}
    metrics = {
        "study": "ep_learning",
        "dataset": task.dataset,
        "hidden": task.n_hidden(),
        "training": task.training.model_dump(mode="json"),
        **({"selection": task.selection.model_dump(mode="json")} if task.selection.kind != "last" else {}),
        **({"split_seed": task.split_seed} if task.split_seed is not None else {}),
        "summary": summary,
        "seeds": [{k: v for k, v in r.items() if k != "curves"} for r in results],
    }
    curves = {f"{r['problem']} seed {r['seed']}": [{"step": e + 1, "loss": loss} for e, loss in enumerate(r["curves"]["loss"])]
              for r in results}  # fmt: skip
    columns, rows = _table(task.dataset, summary)
    return TaskOutcome(metrics, {}, f"EP on {task.dataset} ({task.seeds} seeds)", columns, rows, curves)


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    test = [r["test_accuracy"] for r in results]
    train = [r["train_accuracy"] for r in results]
    firsts = [r["first_epoch_at_100"] for r in results if r["train_accuracy"] == 1.0 and r["first_epoch_at_100"]]
    selected = {}
    if "selected_epoch" in results[0]:
        selected = {"n_validation": results[0]["n_validation"],
                    "median_selected_epoch": statistics.median(r["selected_epoch"] for r in results),
                    **({"folds": results[0]["folds"]} if "folds" in results[0] else {})}  # fmt: skip
    return {
        "seeds": len(results),
        "test_accuracy_mean": float(np.mean(test)),
        "test_accuracy_min": min(test),
        "test_accuracy_max": max(test),
        "seeds_at_100_test": sum(t == 1.0 for t in test),
        "train_accuracy_mean": float(np.mean(train)),
        "median_first_epoch_at_100": statistics.median(firsts) if firsts else None,
        "median_seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in results),
        "samples_per_second": statistics.median(r["samples_per_second"] for r in results),
        "n_train": results[0]["n_train"],
        "n_test": results[0]["n_test"],
        **selected,
    }


def _table(dataset: str, summary: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    if dataset in ("gates", "xor"):
        columns = ["problem", "seeds at 100%", "median first epoch at 100%", "s/epoch", "samples/s"]
        rows = [[p, f"{s['seeds_at_100_test']}/{s['seeds']}",
                 "-" if s["median_first_epoch_at_100"] is None else f"{s['median_first_epoch_at_100']:.0f}",
                 f"{s['median_seconds_per_epoch']:.4f}", f"{s['samples_per_second']:.0f}"] for p, s in summary.items()]  # fmt: skip
        return columns, rows
    if all("n_validation" in s for s in summary.values()):
        columns = ["dataset", "train + validation / test", "test acc. mean", "min", "max", "seeds at 100% test",
                   "train acc. mean", "median selected epoch", "s/epoch"]  # fmt: skip
        rows = [[p, _train_validation(s), f"{s['test_accuracy_mean']:.2%}",
                 f"{s['test_accuracy_min']:.2%}", f"{s['test_accuracy_max']:.2%}", f"{s['seeds_at_100_test']}/{s['seeds']}",
                 f"{s['train_accuracy_mean']:.2%}", f"{s['median_selected_epoch']:g}", f"{s['median_seconds_per_epoch']:.3f}"]
                for p, s in summary.items()]  # fmt: skip
        return columns, rows
    columns = ["dataset", "train / test", "test acc. mean", "min", "max", "seeds at 100% test", "train acc. mean", "s/epoch"]
    rows = [[p, f"{s['n_train']} / {s['n_test']}", f"{s['test_accuracy_mean']:.2%}", f"{s['test_accuracy_min']:.2%}",
             f"{s['test_accuracy_max']:.2%}", f"{s['seeds_at_100_test']}/{s['seeds']}", f"{s['train_accuracy_mean']:.2%}",
             f"{s['median_seconds_per_epoch']:.3f}"] for p, s in summary.items()]  # fmt: skip
    return columns, rows


def _train_validation(summary: dict[str, Any]) -> str:
    """The table's "train + validation / test" cell of a problem's summary."""
    if "folds" in summary:
        return f"{summary['n_train']} ({summary['folds']}-fold CV) / {summary['n_test']}"
    return f"{summary['n_train']} + {summary['n_validation']} / {summary['n_test']}"


def _learning_curves(run: RunFolder, task: EPLearningTask, results: list[dict[str, Any]]) -> None:
    """``learning_curve.png``: per problem, train and test accuracy per epoch (mean over seeds, min-max band)."""
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    problems = task.problems()
    held_out = task.selection.kind != "last"
    fig = Figure(figsize=(4.5 * min(len(problems), 3), 3.6 * ((len(problems) + 2) // 3)), layout="constrained")
    axes = np.atleast_1d(fig.subplots((len(problems) + 2) // 3, min(len(problems), 3), squeeze=False)).ravel()
    for ax, problem in zip(axes, problems):
        mine = [r for r in results if r["problem"] == problem]
        second = {"last": "test", "validation": "validation", "cross_validation": "held-out folds, pooled"}[task.selection.kind]
        second += " (after the epoch)"
        for key, label in (("accuracy", "train (during the epoch)"), ("val_accuracy", second)):
            a = np.array([r["curves"][key] for r in mine])
            epochs = np.arange(1, a.shape[1] + 1)
            ax.plot(epochs, a.mean(0), label=f"{label}, mean of {len(mine)}")
            ax.fill_between(epochs, a.min(0), a.max(0), alpha=0.2)
        if held_out:
            chosen = [r["selected_epoch"] for r in mine]
            ax.plot(chosen, [r["curves"]["val_accuracy"][e - 1] for r, e in zip(mine, chosen)], "kx", ms=5,
                    label="selected epochs")  # fmt: skip
        ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title=f"{problem}, symmetric EP")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    for ax in axes[len(problems) :]:
        ax.set_visible(False)
    save_figure(fig, run.file("learning_curve.png"))


def report_ep_learning(runs: list[FinishedRun]) -> str:
    """Markdown: each run's table, its recipe and the per-seed accuracies."""
    from inmaterio.tasks.report import markdown_table

    sections = []
    for run in runs:
        m, table = run.metrics, run.metrics["table"]
        if "selection" in m:
            sections.append(_report_selected(run))
            continue
        seeds = markdown_table(
            ["problem", "seed", "train acc.", "test acc.", "best test acc. during training (epoch)", "s/epoch"],
            [[s["problem"], s["seed"], f"{s['train_accuracy']:.2%}", f"{s['test_accuracy']:.2%}",
              f"{s['best_test_accuracy_during_training']:.2%} ({s['best_epoch']})", f"{s['seconds_per_epoch']:.3f}"]
             for s in m["seeds"]],
        )  # fmt: skip
        sections.append(
            f"### {table['title']} (`{run.path}`)\n\n"
            f"{_recipe(m)}; accuracies after the last epoch. {_split_sentence(m)}{run.record.get('wall_s', 0.0) / 60:.1f} min wall; "
            f"`inmaterio run {run.path / 'config.yaml'} --out {run.path}`.\n\n"
            + markdown_table(table["columns"], table["rows"])
            + f"\n\n<details><summary>per seed</summary>\n\n{seeds}\n\n</details>\n\n![learning curves]({run.path / 'learning_curve.png'})"
        )
    return "\n\n".join(sections)


def _recipe(metrics: dict[str, Any]) -> str:
    """The network and EP recipe of a run, for a report (one clause, no full stop)."""
    t = metrics["training"]
    decay = f" (x{t['lr_decay']:g} per epoch)" if t.get("lr_decay", 1.0) != 1.0 else ""
    return (
        f"Diode network with {metrics['hidden']} hidden nodes; {t['variant']} EP, beta {t['beta']:g} S, {t['loss']} "
        f"({t['readout']} readout), {t['optimizer']} lr {t['lr']}{decay}, batch {t['batch_size']}, {t['epochs']} epochs"
    )


def _split_sentence(metrics: dict[str, Any]) -> str:
    """How the seeds' train/test splits were drawn, for a report ('' for the four-point sets)."""
    if metrics.get("split_seed") is not None:
        return f"One fixed stratified train/test split (random_state {metrics['split_seed']}) for every seed. "
    return ""


def _report_selected(run: FinishedRun) -> str:
    """The section of a run with ``selection: validation``: the chosen epoch and validation accuracy per seed."""
    from inmaterio.tasks.report import markdown_table

    m = run.metrics
    sel = m["selection"]
    seeds = markdown_table(
        ["problem", "seed", "train acc.", "validation acc. (selected epoch)", "test acc.", "s/epoch"],
        [[s["problem"], s["seed"], f"{s['train_accuracy']:.2%}", f"{s['validation_accuracy']:.2%} ({s['selected_epoch']})",
          f"{s['test_accuracy']:.2%}", f"{s['seconds_per_epoch']:.3f}"] for s in m["seeds"]],
    )  # fmt: skip
    first = m["seeds"][0]
    if sel["kind"] == "cross_validation":
        how = (
            f"Number of epochs chosen by {sel['folds']}-fold cross-validation: the {first['n_train']} training samples "
            f"dealt to {sel['folds']} stratified folds (drawn per seed); one circuit per fold (the seed's initialisation) "
            "trains on the other folds; the epoch with the best accuracy over all held-out predictions (ties: lowest "
            f"held-out loss, then the earliest) gives the number of epochs; a fresh circuit trains on all {first['n_refit']} "
            f"training samples for that many epochs and is tested once on the {first['n_test']} test samples, which play "
            "no part in the choice. "
        )
        return _selected_section(run, seeds, how)
    how = (
        f"Model selection on a validation part: {first['n_validation']} of the {first['n_train'] + first['n_validation']} "
        f"training samples held out (fraction {sel['fraction']:g}, stratified, drawn per seed), training on the other "
        f"{first['n_train']}; the weights of the epoch with the best validation accuracy (ties: lowest validation loss, "
        + (
            f"then the earliest) give the number of epochs; a fresh circuit (the seed's initialisation) trains on all "
            f"{first['n_refit']} training samples for that many epochs and is tested once on the {first['n_test']} test samples, "
            "which play no part in the choice. "
            if sel.get("refit")
            else f"then the earliest) are tested once on the {first['n_test']} test samples, which play no part in the choice. "
        )
    )
    return _selected_section(run, seeds, how)


def _selected_section(run: FinishedRun, seeds: str, how: str) -> str:
    """A report section of a run with a selected epoch: ``how`` it was selected, the table, per-seed numbers, figure."""
    from inmaterio.tasks.report import markdown_table

    m, table = run.metrics, run.metrics["table"]
    return (
        f"### {table['title']} (`{run.path}`)\n\n"
        f"{_recipe(m)}. {_split_sentence(m)}{how}"
        + f"{run.record.get('wall_s', 0.0) / 60:.1f} min wall; `inmaterio run {run.path / 'config.yaml'} --out {run.path}`.\n\n"
        + markdown_table(table["columns"], table["rows"])
        + f"\n\n<details><summary>per seed</summary>\n\n{seeds}\n\n</details>\n\n![learning curves]({run.path / 'learning_curve.png'})"
    )
