"""Which two electrodes should take the ring data? A sweep over electrode pairs, judged on training data only.

``inmaterio run examples/ring_electrodes.yaml``. The paper's chip and our
virtual DNPU differ in which electrodes couple strongly to the output, so the
input electrodes of the rings study are a design choice of ours, made here
without looking at a test point:

1. Electrode sensitivity of the surrogate
   (:func:`inmaterio.surrogate.electrode_sensitivity`): for
   ``sensitivity_points`` random operating points, one electrode is swept
   over its range (9 steps) with the others held; the mean standard deviation
   of the output over the sweep (nA), per electrode. Data on a weak electrode
   gives hidden nodes a small swing, which the device noise then swamps.
2. For every pair (``pairs``, default all pairs of activation electrodes)
   and architecture, ``trials`` ring trials (:func:`~inmaterio.studies.ring_trials.ring_trials`,
   the training of the rings study) on the training set; reported: the best
   and the median training accuracy, and the best training accuracy with
   output noise of ``ranking_noise`` x the surrogate's test RMSE on every
   node (mean of ``ranking_draws`` draws), the column the choice is made on.

Each (architecture, pair) is one trial of :func:`inmaterio.parallel.run_trials`,
saved in the run's checkpoint as soon as it ends (a rerun resumes).
``inmaterio report FOLDER`` rebuilds the tables.
"""

from __future__ import annotations

import itertools
from typing import Any, Literal, Union

import numpy as np
from pydantic import Field, model_validator

from inmaterio.parallel import ExecutorConfig, run_trials
from inmaterio.runs import RunFolder
from inmaterio.studies.common import Finished, StudyBackends, SurrogateChoice
from inmaterio.studies.ring_trials import Architecture, RingData, RingGroup, RingTraining, ring_trials
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = [
    "RingElectrodesTask",
    "RingElectrodesConfig",
    "prepare_ring_electrodes",
    "run_ring_electrodes",
    "report_ring_electrodes",
]

Electrode = Union[int, str]


class RingElectrodesTask(RingTraining):
    """The ``task:`` of the electrode sweep; training fields: those of :class:`~inmaterio.studies.ring_trials.RingTraining`.

    architectures : ``single`` and/or ``2-2-1``.
    pairs : the electrode pairs to try (two different activation electrodes each); null: all pairs.
    trials : trainings per (architecture, pair) (>= 1).
    data : the ring data; only the training set is judged (the test set is drawn but not reported).
    ranking_noise : node noise of the noisy training accuracy, x the surrogate's test RMSE (>= 0).
    ranking_draws : its draws (>= 1).
    sensitivity_points : operating points of the sensitivity sweep (>= 1).
    """

    type: Literal["ring_electrodes"]
    architectures: list[Architecture] = Field(default_factory=lambda: ["single", "2-2-1"])
    pairs: list[tuple[Electrode, Electrode]] | None = None
    trials: int = Field(32, ge=1)
    data: RingData = RingData(n_test=100)
    ranking_noise: float = Field(0.5, ge=0)
    ranking_draws: int = Field(10, ge=1)
    sensitivity_points: int = Field(2000, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> RingElectrodesTask:
        if not self.architectures or len(set(self.architectures)) != len(self.architectures):
            raise ValueError(f"architectures must list single and/or 2-2-1 once each, got {self.architectures}")
        for a, b in self.pairs or []:
            if a == b:
                raise ValueError(f"pairs must be two different electrodes each, got [{a}, {b}]")
        if self.pairs is not None and not self.pairs:
            raise ValueError("pairs is empty; list at least one pair or give null for all pairs")
        return self


class RingElectrodesConfig(RunnableConfig):
    """The electrode sweep: task, surrogate, executor (speed only), seed."""

    SPEED_ONLY = {"executor"}

    task: RingElectrodesTask
    surrogate: SurrogateChoice = SurrogateChoice()
    executor: ExecutorConfig = ExecutorConfig()
    seed: int = 0


def prepare_ring_electrodes(config: RingElectrodesConfig) -> StudyBackends:
    """Load the surrogate and resolve the pairs to electrode indices (unknown electrodes are named), before any folder is made."""
    from inmaterio.nn import DNPU
    from inmaterio.studies.common import backends_identity, surrogate_processor

    surrogate = surrogate_processor(config.surrogate)
    n = surrogate.info.n_activation
    pairs = config.task.pairs or list(itertools.combinations(range(n), 2))
    resolved = []
    for pair in pairs:
        layer = DNPU(surrogate, 1, pair, (-1.0, 1.0))  # names and indices checked (ConfigError naming them)
        resolved.append(tuple(layer.input_index[0].tolist()))
    return StudyBackends(surrogate, None, backends_identity(surrogate, None), {"pairs": resolved})


def run_ring_electrodes(config: RingElectrodesConfig, run: RunFolder, *, progress: bool, prepared: StudyBackends) -> TaskOutcome:
    """Sensitivity of every electrode, then the trials of every (architecture, pair) not yet saved."""
    from inmaterio.surrogate import electrode_sensitivity

    task = config.task
    surrogate = prepared.surrogate
    training = RingTraining.model_validate(task.model_dump(include=set(RingTraining.model_fields)))
    groups = [
        RingGroup(architecture=arch, first_seed=config.seed * 1_000_003, count=task.trials, input_electrodes=pair, data=task.data,
                  data_seed=config.seed, training=training, noisy_draws=task.ranking_draws, noisy_std_factor=task.ranking_noise,
                  surrogate=config.surrogate)
        for arch in task.architectures
        for pair in prepared.extra["pairs"]
    ]  # fmt: skip
    finished = Finished(run)
    todo = [g for g in groups if _key(g) not in finished]

    def keep(result) -> None:
        if result.ok:
            r = result.value
            train, noisy = np.array(r["train_accuracy"]), np.array(r["noisy_train_accuracy"])
            finished.save(_key(todo[result.index]), {
                "best_train": float(train.max()), "median_train": float(np.median(train)),
                "best_noisy_train": float(noisy.max()), "seconds": r["seconds"],
            })  # fmt: skip

    run_trials(ring_trials, todo, config.executor, progress=progress, description="electrode pairs", on_result=keep)
    rows = [{"architecture": g.architecture, "pair": list(g.input_electrodes), **finished[_key(g)]} for g in groups]
    sensitivity = electrode_sensitivity(surrogate, surrogate.info.voltage_ranges_v, points=task.sensitivity_points)
    names = surrogate.info.electrode_names
    metrics: dict[str, Any] = {"study": "ring_electrodes", "electrodes": names, "sensitivity_na": sensitivity, "rows": rows}
    table = [[r["architecture"], _pair(names, r["pair"]), *_percent(r)] for r in _ranked(rows)]
    columns = ["architecture", "inputs", "best train acc.", "median train acc.", "best noisy train acc."]
    return TaskOutcome(metrics, {}, "Rings: which electrodes take the data", columns, table)


def _key(group: RingGroup) -> str:
    return f"{group.architecture}/e{group.input_electrodes[0]},e{group.input_electrodes[1]}"


def _pair(names: list[str], pair: list[int]) -> str:
    return ", ".join(names[e] for e in pair)


def _percent(row: dict) -> list[str]:
    return [f"{100 * row[k]:.2f}%" for k in ("best_train", "median_train", "best_noisy_train")]


def _ranked(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["architecture"], -r["best_noisy_train"]))


def report_ring_electrodes(runs: list[FinishedRun]) -> str:
    """Markdown: the sensitivity of every electrode and the pairs ranked by noisy training accuracy, per run."""
    from inmaterio.tasks.report import markdown_table

    sections = []
    for run in runs:
        m, task = run.metrics, run.config["task"]
        names = m["electrodes"]
        data = task["data"]
        sections.append("\n".join([
            f"### Rings: which electrodes take the data (`{run.path}`)",
            "",
            f"`inmaterio run {run.path / 'config.yaml'} --out {run.path}`: wall time {run.record.get('wall_s', 0.0) / 60:.1f} min, "
            f"inmaterio {run.record.get('package_version')}. Training data only ({data['n_train']} points per class, seed "
            f"{run.config['seed']}); no test point is used.",
            "",
            f"Sensitivity of the surrogate's output to each electrode (mean std over a sweep of its range, "
            f"{task['sensitivity_points']} random operating points):",
            "",
            markdown_table(names, [[f"{s:.1f} nA" for s in m["sensitivity_na"]]]),
            "",
            f"{task['trials']} trials per cell; best noisy training accuracy = output noise of {task['ranking_noise']} x test "
            "RMSE on every node.",
            "",
            markdown_table(["architecture", "inputs", "best train acc.", "median train acc.", "best noisy train acc."],
                           [[r["architecture"], _pair(names, r["pair"]), *_percent(r)] for r in _ranked(m["rows"])]),
        ]))  # fmt: skip
    return "\n\n".join(sections)
