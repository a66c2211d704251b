r"""EP circuits on asymmetric pulsed devices: accuracy vs number of device states, plain pulsed SGD vs SHD.

The networks and data are those of the EP learning study (:mod:`inmaterio.studies.ep_learning`: EBANA's
diode network, scikit-learn Iris / Wine / digits, a stratified split per seed). Each is trained three ways:

- ``baseline``: floating-point updates of the normalised conductances (``training``, the dataset's recipe,
  Adam by default);
- ``sgd``: every conductance (and learnable bias) a pulsed device, updated by plain pulsed SGD;
- ``shd``: the same devices in the two-array split of Stochastic Hamiltonian Descent (Onen et al. 2022;
  a Tiki-Taka-style A/C pair, the gradient on the zero-shifted A, A's reading pulsed into C).

The pulsed methods use :class:`~inmaterio.circuits.pulsed.PulsedDeviceOptimizer` through
:func:`~inmaterio.circuits.fit.fit` (``optimizer: pulsed``): ``device`` is the template (soft bounds with an
up/down asymmetry by default), and for each entry ``n`` of ``states`` its step is
``dw_min = (w_max - w_min) / n``, so ``n`` pulses span a conductance's bound width. Everything else of the
training (epochs, batch, EP's beta, loss) is ``training``'s; ``sgd.lr`` / ``shd.lr`` are the pulsed learning
rates (desired change of the normalised parameter per unit gradient) and ``shd.lr_c`` the A-to-C transfer rate.

Every (method, states, seed) is one :func:`~inmaterio.circuits.fit.fit` in its own nested run folder
(``baseline/seed_<s>/``, ``<method>/states_<n>/seed_<s>/``); finished ones are kept in the study's checkpoint,
so an interrupted study resumes each training after its last epoch and skips the finished ones. The reported
accuracy is the test accuracy after the last epoch (no model selection); the table gives mean +- std over seeds
(population std), ``accuracy_vs_states.png`` the same against the number of states (log x).

``inmaterio run examples/ep_asymmetric.yaml`` (Iris, 40 epochs, 3 seeds: about 8 min on one thread).
"""

from __future__ import annotations

import statistics
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from inmaterio.circuits.fit import EPTrainConfig
from inmaterio.circuits.pulsed import PulsedOptimizerConfig
from inmaterio.config import StrictModel
from inmaterio.crossbars.pulsed import PulsedDevice
from inmaterio.crossbars.shd import Rounding
from inmaterio.runs import RunFolder
from inmaterio.studies.ep_learning import DATASETS
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = ["EPAsymmetricTask", "EPAsymmetricConfig", "run_ep_asymmetric", "report_ep_asymmetric"]

METHODS = ("baseline", "sgd", "shd")


class PulsedSGDSettings(StrictModel):
    """Plain pulsed SGD: lr, desired change of a normalised parameter per unit of its gradient (> 0)."""

    lr: float = Field(gt=0, le=1e3)


class SHDSettings(StrictModel):
    """SHD: lr (eta_A, desired change of A per unit gradient, normalised units) and lr_c (eta_C, A's reading to C)."""

    lr: float = Field(gt=0, le=1e3)
    lr_c: float = Field(gt=0, le=1e3)


class EPAsymmetricTask(StrictModel):
    """What to learn, on which devices, and how.

    dataset : iris, wine or digits (the EP learning study's data and network).
    seeds : seeds 0 .. seeds-1, each its own split, initial conductances, devices and shuffling.
    hidden : hidden diode nodes (null: the dataset's default).
    diode_bias_v, gain : as in the EP learning study.
    training : EP settings of every method (keys not given keep the dataset's recipe); the baseline uses them
        as they are (its optimiser must not be ``pulsed``), the pulsed methods replace the optimiser and lr.
    device : the pulsed-device template (its ``dw_min`` is replaced per entry of ``states``; ``reference: none``).
    states : numbers of states (>= 2, no repeats): dw_min = (w_max - w_min) / states.
    sgd, shd : the rules' learning rates.
    rounding : stochastic or nearest rounding of a desired change to pulses.
    max_pulses : the most pulses one device gets in one update.
    """

    type: Literal["ep_asymmetric"]
    dataset: Literal["iris", "wine", "digits"] = "iris"
    seeds: int = Field(3, ge=1, le=1000)
    hidden: int | None = Field(None, ge=1, le=10_000)
    diode_bias_v: float = Field(-0.3, ge=-10, le=10)
    gain: float = Field(4.0, gt=0, le=1e6)
    training: EPTrainConfig
    device: PulsedDevice
    states: list[int] = Field(default_factory=lambda: [1000, 300, 100, 30])
    sgd: PulsedSGDSettings
    shd: SHDSettings
    rounding: Rounding = "stochastic"
    max_pulses: int = Field(1000, ge=1, le=1_000_000)

    @model_validator(mode="before")
    @classmethod
    def _recipe_of_the_dataset(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(training := data.get("training", {}), dict):
            dataset = data.get("dataset", "iris")
            recipe = DATASETS[dataset][3] if dataset in DATASETS else {}
            return {**data, "training": {**recipe, **training}}
        return data

    @field_validator("training")
    @classmethod
    def _float_baseline(cls, training: EPTrainConfig) -> EPTrainConfig:
        if training.optimizer == "pulsed":
            raise ValueError("the baseline's optimizer must be adam, momentum or sgd (the pulsed methods are sgd and shd)")
        return training

    @field_validator("states")
    @classmethod
    def _distinct_states(cls, states: list[int]) -> list[int]:
        if not states or len(set(states)) != len(states) or min(states) < 2:
            raise ValueError(f"states must list distinct numbers of states >= 2, got {states}")
        return states

    @field_validator("device")
    @classmethod
    def _reference_none(cls, device: Any) -> Any:
        if device.reference != "none":
            raise ValueError(f"reference is {device.reference!r}; the conductance is the device state, use reference: none")
        return device

    def n_hidden(self) -> int:
        return self.hidden if self.hidden is not None else DATASETS[self.dataset][2]

    def runs(self) -> list[tuple[str, int | None]]:
        """(method, states) of every training per seed: the baseline once, then each rule at each number of states."""
        return [("baseline", None)] + [(m, n) for m in ("sgd", "shd") for n in self.states]

    def training_of(self, method: str, states: int | None, seed: int) -> EPTrainConfig:
        """The EP settings of one training (validated)."""
        base = self.training.model_dump()
        if method == "baseline":
            return EPTrainConfig.model_validate({**base, "seed": seed})
        span = self.device.w_max - self.device.w_min
        device = type(self.device).model_validate({**self.device.model_dump(), "dw_min": span / states})
        rule = self.sgd if method == "sgd" else self.shd
        pulsed = PulsedOptimizerConfig(
            device=device, rule=method, rounding=self.rounding, max_pulses=self.max_pulses,
            **({"lr_c": self.shd.lr_c} if method == "shd" else {}),
        )  # fmt: skip
        return EPTrainConfig.model_validate({**base, "seed": seed, "optimizer": "pulsed", "lr": rule.lr, "pulsed": pulsed})


class EPAsymmetricConfig(RunnableConfig):
    """The study: the task and the torch threads (speed only)."""

    SPEED_ONLY = {"threads": True}

    task: EPAsymmetricTask
    threads: int = Field(1, ge=1, le=256)


def _key(method: str, states: int | None, seed: int) -> str:
    return f"baseline/seed_{seed}" if states is None else f"{method}/states_{states}/seed_{seed}"


def _train_one(task: EPAsymmetricTask, method: str, states: int | None, seed: int, run: RunFolder, progress: bool):
    """Fit one circuit in its nested folder; its final accuracies and timing."""
    from inmaterio.circuits import evaluate, fit
    from inmaterio.circuits.examples import diode_network
    from inmaterio.studies.ep_learning import _data

    n_inputs, n_classes, _, _ = DATASETS[task.dataset]
    data = _data(task.dataset, task.dataset, seed)
    model = diode_network(n_inputs, task.n_hidden(), n_classes, seed=seed, diode_bias_v=task.diode_bias_v, gain=task.gain)
    config = task.training_of(method, states, seed)
    history = fit(model, data.x_train, data.y_train, config, directory=run.subfolder(_key(method, states, seed)),
                  progress=progress)  # fmt: skip
    return {
        "method": method,
        "states": states,
        "seed": seed,
        "train_accuracy": evaluate(model, data.x_train, data.y_train, config)["accuracy"],
        "test_accuracy": evaluate(model, data.x_test, data.y_test, config)["accuracy"],
        "final_loss": history[-1]["loss"],
        "seconds_per_epoch": statistics.median(r["seconds"] for r in history),
        "n_train": len(data.x_train),
        "n_test": len(data.x_test),
        "loss_curve": [r["loss"] for r in history],
    }


def run_ep_asymmetric(config: EPAsymmetricConfig, run: RunFolder, *, progress: bool, prepared: None = None) -> TaskOutcome:
    """Train every (method, states, seed); finished ones are kept in the checkpoint and not trained again."""
    task = config.task
    done: dict[str, Any] = dict((run.load_checkpoint() or {}).get("results", {}))
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        for seed in range(task.seeds):
            for method, states in task.runs():
                key = _key(method, states, seed)
                if key not in done:
                    done[key] = _train_one(task, method, states, seed, run, progress)
                    run.save_checkpoint({"results": done})
    finally:
        torch.set_num_threads(saved_threads)
    results = [done[_key(m, n, s)] for m, n in task.runs() for s in range(task.seeds)]
    summary = _summary(task, results)
    _figure(run, task, summary)
    metrics = {
        "study": "ep_asymmetric",
        "dataset": task.dataset,
        "hidden": task.n_hidden(),
        "training": task.training.model_dump(mode="json"),
        "device": task.device.model_dump(mode="json"),
        "states": list(task.states),
        "summary": summary,
        "seeds": [{k: v for k, v in r.items() if k != "loss_curve"} for r in results],
    }
    curves = {f"{r['method']}{'' if r['states'] is None else ' ' + str(r['states'])} seed {r['seed']}":
              [{"step": e + 1, "loss": loss} for e, loss in enumerate(r["loss_curve"])] for r in results}  # fmt: skip
    columns = ["method", "states", "test acc. mean", "std", "min", "max", "train acc. mean", "s/epoch"]
    rows = [[s["method"], "float" if s["states"] is None else str(s["states"]), f"{s['test_mean']:.2%}",
             f"{s['test_std']:.2%}", f"{s['test_min']:.2%}", f"{s['test_max']:.2%}", f"{s['train_mean']:.2%}",
             f"{s['seconds_per_epoch']:.3f}"] for s in summary]  # fmt: skip
    title = f"EP on {task.dataset}, {task.device.kind} devices (up_down {task.device.up_down:g}), {task.seeds} seeds"
    return TaskOutcome(metrics, {}, title, columns, rows, curves)


def _summary(task: EPAsymmetricTask, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, states): test accuracy mean, std (population), min, max over seeds; train mean; s/epoch."""
    rows = []
    for method, states in task.runs():
        mine = [r for r in results if r["method"] == method and r["states"] == states]
        test = np.array([r["test_accuracy"] for r in mine])
        rows.append({
            "method": method,
            "states": states,
            "seeds": len(mine),
            "test_mean": float(test.mean()),
            "test_std": float(test.std()),
            "test_min": float(test.min()),
            "test_max": float(test.max()),
            "train_mean": float(np.mean([r["train_accuracy"] for r in mine])),
            "seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in mine),
        })  # fmt: skip
    return rows


def _figure(run: RunFolder, task: EPAsymmetricTask, summary: list[dict[str, Any]]) -> None:
    """``accuracy_vs_states.png``: test accuracy (mean +- std over seeds) vs number of states, log x; the baseline a band."""
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    ax = fig.subplots()
    base = next(s for s in summary if s["method"] == "baseline")
    ax.axhline(base["test_mean"], color="k", lw=1, label=f"floating point ({task.training.optimizer})")
    ax.axhspan(base["test_mean"] - base["test_std"], base["test_mean"] + base["test_std"], color="k", alpha=0.1)
    for method, label in (("sgd", "plain pulsed SGD"), ("shd", "SHD (A/C split)")):
        mine = sorted((s for s in summary if s["method"] == method), key=lambda s: s["states"])
        ax.errorbar([s["states"] for s in mine], [s["test_mean"] for s in mine], yerr=[s["test_std"] for s in mine],
                    marker="o", capsize=3, label=label)  # fmt: skip
    ax.set_xscale("log")
    ax.set(xlabel="device states (w_max - w_min) / dw_min", ylabel="test accuracy", ylim=(0, 1.02),
           title=f"{task.dataset}: {task.device.kind}, up_down {task.device.up_down:g}, {task.seeds} seeds")  # fmt: skip
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, run.file("accuracy_vs_states.png"))


def report_ep_asymmetric(runs: list[FinishedRun]) -> str:
    """Markdown: each run's table, its settings and the figure."""
    from inmaterio.tasks.report import markdown_table

    sections = []
    for run in runs:
        m, table, task = run.metrics, run.metrics["table"], run.config["task"]
        t = m["training"]
        sections.append(
            f"### {table['title']} (`{run.path}`)\n\n"
            f"Diode network with {m['hidden']} hidden nodes; {t['variant']} EP, beta {t['beta']:g}, {t['loss']} "
            f"({t['readout']} readout), batch {t['batch_size']}, {t['epochs']} epochs; baseline {t['optimizer']} lr {t['lr']}; "
            f"pulsed SGD lr {task['sgd']['lr']}; SHD lr {task['shd']['lr']}, lr_c {task['shd']['lr_c']}; "
            f"{task.get('rounding', 'stochastic')} rounding. Test accuracy after the last epoch, mean and std over seeds. "
            f"{run.record.get('wall_s', 0.0) / 60:.1f} min wall.\n\n"
            + markdown_table(table["columns"], table["rows"])
            + f"\n\n![accuracy vs states]({run.path / 'accuracy_vs_states.png'})"
        )
    return "\n\n".join(sections)
