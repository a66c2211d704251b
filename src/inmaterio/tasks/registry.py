"""The one place where a config's ``task.type`` becomes a task: its config class, its runner, its report.

Every YAML that ``inmaterio run CONFIG.yaml`` takes has a top-level ``task:``
mapping whose ``type`` names an entry of :data:`TASKS`; the entry's
``config`` class validates the *whole* file (unknown keys are errors)::

    task:
      type: gates          # an entry of TASKS
      ...
    seed: 0

A task may have a ``prepare(config) -> prepared`` step that builds and checks
what it needs (back ends, data) *before* the run folder is touched, so a bad
surrogate path or electrode name leaves nothing behind; if what it returns
has an ``identity`` mapping (e.g. the fingerprint of a surrogate's weights),
that joins the run's identity. A runner is
``runner(config, run, *, progress, prepared) -> TaskOutcome``: it gets the
validated config, the open :class:`~inmaterio.runs.RunFolder` (checkpoints,
nested runs, figures and extra files go there) and what ``prepare`` returned
(None without one), and returns the numbers;
:func:`~inmaterio.tasks.run.run_task` writes them and marks the run finished.
A report is ``report(runs) -> str``: one Markdown table built from the
finished run folders of that task (``inmaterio report FOLDER ...``).

Runners and reports are named as ``"module:function"`` and imported only
when used, so loading a config never imports a study's heavy dependencies.
To add a task or a study: a config class (a :class:`RunnableConfig` with a
``task`` field whose ``type`` is a ``Literal``), a runner, optionally a
report, and one :class:`Task` line in :data:`TASKS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from inmaterio.config import StrictModel, read_yaml, validate_config
from inmaterio.errors import ConfigError

__all__ = ["RunnableConfig", "Task", "TASKS", "FinishedRun", "task_of", "parse_run_config", "load_run_config", "resolve"]


class RunnableConfig(StrictModel):
    """Base of the configs ``inmaterio run`` takes.

    ``SPEED_ONLY`` lists the fields (pydantic ``exclude`` syntax) that change
    how fast a run goes, not its result (threads, workers, progress bars): a
    run may resume with other values of them.
    """

    SPEED_ONLY: ClassVar[Mapping[str, Any] | set[str] | None] = None

    def identity(self) -> dict[str, Any]:
        """The fields that define the result (everything but ``SPEED_ONLY``), as JSON types."""
        return self.model_dump(mode="json", exclude=self.SPEED_ONLY)


@dataclass(frozen=True)
class Task:
    """A registered task.

    Attributes
    ----------
    type : the ``task.type`` of its YAML.
    config : ``"module:Class"`` of the :class:`RunnableConfig` that validates the whole file.
    runner : ``"module:function"`` of ``runner(config, run, *, progress, prepared) -> TaskOutcome``.
    prepare : ``"module:function"`` of ``prepare(config) -> prepared``, run before the folder is opened, or None.
    summary : one line for ``inmaterio run --list``.
    report : ``"module:function"`` of ``report(runs: list[FinishedRun]) -> str`` (Markdown), or None
        (then a generic table of each run's summary table is used).
    example : the example config under ``examples/`` (for the listing).
    """

    type: str
    config: str
    runner: str
    summary: str
    report: str | None = None
    example: str | None = None
    prepare: str | None = None

    @property
    def kind(self) -> str:
        """The run-folder kind of this task's runs."""
        return f"inmaterio.task.{self.type}"


@dataclass(frozen=True)
class FinishedRun:
    """What a report reads from one finished run folder."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    record: dict[str, Any]


def _task(
    type: str, where: str, summary: str, *, config: str, example: str, name: str | None = None, prepare: bool = True
) -> Task:
    """A task whose config class and functions ``run_<name>``, ``report_<name>`` and (optionally)
    ``prepare_<name>`` live in module ``where`` (``name`` defaults to ``type``)."""
    name = name or type
    return Task(
        type,
        f"{where}:{config}",
        f"{where}:run_{name}",
        summary,
        report=f"{where}:report_{name}",
        example=example,
        prepare=f"{where}:prepare_{name}" if prepare else None,
    )


def _dnpu_task(type: str, summary: str, example: str) -> Task:
    """A DNPU task of :mod:`inmaterio.tasks.run` (one config class for the three)."""
    return Task(
        type,
        "inmaterio.tasks.config:RunConfig",
        "inmaterio.tasks.run:run_dnpu_task",
        summary,
        example=example,
        prepare="inmaterio.tasks.run:prepare_dnpu_task",
    )


TASKS: dict[str, Task] = {
    entry.type: entry
    for entry in (
        _dnpu_task(
            "gates", "two-input Boolean gates on one DNPU (GD or GA; on the surrogate or evolved on the device)", "gates_gd.yaml"
        ),
        _dnpu_task("rings", "inner disc vs outer ring with one DNPU or the 2-2-1 network", "rings.yaml"),
        _dnpu_task("capacity", "fraction of the 2^N labellings of N points one DNPU separates", "capacity.yaml"),
        _task(
            "capacity_study",
            "inmaterio.studies.capacity",
            "capacity study (Ruiz Euler et al. 2021): DNPU vs logistic units, N = 4..10",
            config="CapacityStudyConfig",
            example="capacity_study.yaml",
        ),
        _task(
            "rings_study",
            "inmaterio.studies.rings",
            "ring study (Ruiz Euler et al. 2021): one DNPU vs the 2-2-1, the best on the device",
            config="RingsStudyConfig",
            example="rings_study.yaml",
        ),
        _task(
            "ring_electrodes",
            "inmaterio.studies.ring_electrodes",
            "which two electrodes take the ring data (every pair, training data only)",
            config="RingElectrodesConfig",
            example="ring_electrodes.yaml",
        ),
        _task(
            "mnist_10dnpu",
            "inmaterio.studies.mnist",
            "MNIST with 10 DNPUs or the ReLU baseline (Ruiz Euler et al. 2021)",
            config="MnistConfig",
            example="mnist_10dnpu.yaml",
            name="mnist",
        ),
        _task(
            "ep_learning",
            "inmaterio.studies.ep_learning",
            "diode circuits trained with EP: gates, XOR, Iris, Wine, digits over seeds",
            config="EPLearningConfig",
            prepare=False,
            example="ep_learning.yaml",
        ),
        _task(
            "crossbar_inference",
            "inmaterio.studies.crossbar_inference",
            "PCM crossbar inference over time (Spoon et al. 2021): DNPU / MLP / CNN on tiles, plain vs HWA, drift compensation",
            config="CrossbarInferenceConfig",
            example="crossbar_inference.yaml",
        ),
        _task(
            "weight_extraction",
            "inmaterio.studies.weight_extraction",
            "weights read out of a noisy tile by least squares over random mat-vecs (Gokmen 2021) vs one-hot reads",
            config="WeightExtractionConfig",
            prepare=False,
            example="weight_extraction.yaml",
        ),
        _task(
            "shd_toy",
            "inmaterio.studies.shd_toy",
            "pulsed SGD vs Stochastic Hamiltonian Descent on asymmetric devices (Onen et al. 2022): toy dynamics",
            config="ShdToyConfig",
            prepare=False,
            example="shd_toy.yaml",
        ),
        _task(
            "pulsed_mnist",
            "inmaterio.studies.pulsed_mnist",
            "MNIST MLPs trained on pulsed devices: SGD, MBGD with RN/SR pulse counts, pulse trains (Zhao et al. 2021)",
            config="PulsedMnistConfig",
            example="pulsed_mnist.yaml",
        ),
        _task(
            "ep_asymmetric",
            "inmaterio.studies.ep_asymmetric",
            "EP circuits on asymmetric pulsed devices: accuracy vs device states, plain pulsed SGD vs SHD",
            config="EPAsymmetricConfig",
            prepare=False,
            example="ep_asymmetric.yaml",
        ),
        _task(
            "ep_mnist",
            "inmaterio.studies.ep_mnist",
            "MNIST with an analog 784x2-100-10 network trained with EP",
            config="EPMnistConfig",
            example="ep_mnist.yaml",
        ),
        _task(
            "ep_ebm",
            "inmaterio.studies.ep_ebm",
            "energy-based MLP / ConvNet on MNIST: one-sided, random-sign, symmetric EP, KP vector field vs BPTT (Laborieux 2021)",
            config="EPEBMConfig",
            example="ep_ebm/mlp_symmetric.yaml",
        ),
        _task(
            "drn_mnist",
            "inmaterio.studies.drn_mnist",
            "MNIST with deep resistive networks (ideal diodes) trained by EP and by exact gradients (Scellier 2024)",
            config="DRNMnistConfig",
            example="drn_mnist.yaml",
        ),
    )
}
"""Every task ``inmaterio run`` knows, by ``task.type``."""


def resolve(target: str) -> Callable[..., Any]:
    """Import ``"module:function"``."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def task_of(config: StrictModel) -> Task:
    """The registered task of a validated config."""
    kind = getattr(getattr(config, "task", None), "type", None)
    if kind not in TASKS:
        raise ConfigError(f"unknown task type {kind!r}; choose one of {sorted(TASKS)}")
    return TASKS[kind]


def parse_run_config(data: Any, source: str = "<dict>") -> RunnableConfig:
    """Validate a run config (a mapping with ``task.type``) against its task's config class.

    Raises
    ------
    ConfigError
        When ``task`` or its ``type`` is missing or unknown (the choices are listed), or the file
        does not validate (every offending field named with its value).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a mapping with a 'task' key, got {type(data).__name__}")
    task = data.get("task")
    if not isinstance(task, dict) or "type" not in task:
        raise ConfigError(
            f"invalid configuration in {source}: 'task' must be a mapping with a 'type', one of {sorted(TASKS)} "
            f"(got task = {task!r})"
        )
    kind = task["type"]
    if not isinstance(kind, str) or kind not in TASKS:
        raise ConfigError(f"invalid configuration in {source}: unknown task type {kind!r}; choose one of {sorted(TASKS)}")
    return validate_config(resolve(TASKS[kind].config), data, source=source)


def load_run_config(path: str | Path) -> RunnableConfig:
    """Read a run config YAML file and validate it (see :func:`parse_run_config`).

    Raises
    ------
    ConfigError
        A missing, unreadable, binary, non-UTF-8 or invalid-YAML file, or a config that does not validate.
    """
    data = read_yaml(path)
    return parse_run_config(data, source=str(path))
