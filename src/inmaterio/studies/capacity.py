"""The capacity study (Ruiz Euler et al. 2021, experiment 1) as a task: ``inmaterio run examples/capacity_study.yaml``.

For every model of ``task.models`` and every N of ``task.n_points`` one
trial (:mod:`~inmaterio.studies.capacity_trial`) counts the labellings of the
first N capacity points the model separates; the trials run through
:func:`inmaterio.parallel.run_trials` (``executor``: a local process pool,
Ray or serial; the numbers do not depend on it). Each finished trial is saved
in the run's checkpoint at once, so a study that is interrupted and run again
redoes only the trials that had not finished; the device measurements of a
trial are keyed by what they serve (model, N, seed, attempt), so the resumed
study equals an uninterrupted one bit for bit.

The run folder holds, besides ``run.json``, ``config.yaml`` and the
checkpoint::

    metrics.json   every trial's numbers (found counts, masks, margins, seconds) and the summary table
    history.json   one row per restart / attempt of every trial (found counts)
    capacity.png   fraction found vs N, one line per model

``inmaterio report FOLDER ...`` rebuilds the table of several runs (e.g. the
surrogate models in one folder, the device models in others) with the
paper's VC-dimension bounds beside ours (:func:`report_capacity_study`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from inmaterio.parallel import ExecutorConfig, run_trials
from inmaterio.runs import RunFolder
from inmaterio.studies.capacity_trial import (
    DEVICE_MODELS,
    CapacityModel,
    CapacitySettings,
    CapacityTrial,
    capacity_trial,
)
from inmaterio.studies.common import DeviceChoice, Finished, StudyBackends, SurrogateChoice
from inmaterio.tasks.config import CAPACITY_POINTS
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = [
    "CapacityStudyTask", "CapacityStudyConfig", "LABELS", "PAPER_VC", "prepare_capacity_study", "run_capacity_study",
    "report_capacity_study",
]  # fmt: skip

#: Lower bounds of the VC dimension reported by the paper (their chip and surrogate).
PAPER_VC = {
    "dnpu": ">= 6 (surrogate)", "dnpu_annealed": ">= 5 (on chip)", "dnpu_search": ">= 6 (surrogate)",
    "dnpu_search_device": ">= 5 (on chip)", "logistic2": ">= 5", "logistic3": ">= 8",
}  # fmt: skip
#: The table's name of each model.
LABELS = {
    "dnpu": "DNPU (surrogate)",
    "dnpu_annealed": "DNPU, noise-annealed, on the device",
    "dnpu_search": "DNPU, max-margin search (ours), surrogate",
    "dnpu_search_device": "DNPU, max-margin search (ours), on the device",
    "logistic2": "2 logistic units",
    "logistic3": "3 logistic units",
}
#: The extra row of ``dnpu_search``: labellings found with a margin of at least the surrogate's test RMSE.
ROBUST_LABEL = "DNPU, max-margin search (ours), surrogate, margin >= test RMSE ({rmse:.1f} nA)"


class CapacityStudyTask(CapacitySettings):
    """The ``task:`` of a capacity study: which models, which N, and the settings of every trial.

    models : feature models (no repeats): dnpu, dnpu_annealed, dnpu_search, dnpu_search_device,
        logistic2, logistic3.
    n_points : the N to run (no repeats), each in 4..10.
    The other fields are those of :class:`~inmaterio.studies.capacity_trial.CapacitySettings`.
    """

    type: Literal["capacity_study"]
    models: list[CapacityModel] = Field(default_factory=lambda: ["dnpu", "dnpu_search", "logistic2", "logistic3"])
    n_points: list[int] = Field(default_factory=lambda: list(range(4, len(CAPACITY_POINTS) + 1)))

    @field_validator("models", "n_points")
    @classmethod
    def _unique(cls, value: list, info) -> list:
        if not value:
            raise ValueError(f"{info.field_name} is empty; list at least one")
        if len(set(value)) != len(value):
            raise ValueError(f"{info.field_name} repeats a value: {value}")
        return value

    @model_validator(mode="after")
    def _n_in_range(self) -> CapacityStudyTask:
        bad = [n for n in self.n_points if not 4 <= n <= len(CAPACITY_POINTS)]
        if bad:
            raise ValueError(f"n_points must be values in 4..{len(CAPACITY_POINTS)} (the capacity points), got {bad}")
        for model in self.models:
            self.check_search(model)
        return self

    def settings(self) -> CapacitySettings:
        """The settings every trial gets."""
        return CapacitySettings.model_validate(self.model_dump(include=set(CapacitySettings.model_fields)))


class CapacityStudyConfig(RunnableConfig):
    """A capacity study: the task, the surrogate, the device of the device models, the executor, the seed.

    ``executor`` and ``device.threads`` are speed only: a run may resume with other values.
    """

    SPEED_ONLY = {"executor": True, "device": {"threads"}}

    task: CapacityStudyTask
    surrogate: SurrogateChoice = SurrogateChoice()
    device: DeviceChoice = DeviceChoice()
    executor: ExecutorConfig = ExecutorConfig()
    seed: int = 0

    def trials(self) -> list[CapacityTrial]:
        """The trials, model by model, the largest N first (the longest first balances the workers)."""
        settings = self.task.settings()
        return [
            CapacityTrial(
                model=model, n_points=n, seed=self.seed, settings=settings, surrogate=self.surrogate, device=self.device
            )
            for model in self.task.models
            for n in sorted(self.task.n_points, reverse=True)
        ]


def prepare_capacity_study(config: CapacityStudyConfig) -> StudyBackends:
    """Load the surrogate, build the device (device models only) and check the electrodes, before any folder is made.

    Raises
    ------
    ConfigError, ModelFileError
        A surrogate that cannot be loaded, input electrodes it does not have, a device whose
        electrodes or ranges differ from the surrogate's, ``dnpu_annealed`` on a surrogate
        without a test RMSE.
    """
    from inmaterio.errors import ConfigError
    from inmaterio.nn import DNPU
    from inmaterio.processors import check_interchangeable
    from inmaterio.studies.common import backends_identity, device_processor, surrogate_processor

    task = config.task
    if not any(m.startswith("dnpu") for m in task.models):
        return StudyBackends(None, None, {})
    surrogate = surrogate_processor(config.surrogate)
    DNPU(surrogate, 1, task.input_electrodes, task.data_range)  # electrode names and indices (ConfigError naming them)
    if "dnpu_annealed" in task.models and surrogate.info.noise_na is None:
        raise ConfigError("the surrogate has no test RMSE (info.noise_na); the model dnpu_annealed needs it")
    device = None
    if any(m in DEVICE_MODELS for m in task.models):
        device = device_processor(config.device, surrogate)
        check_interchangeable(
            surrogate.info, device.info, new_name="the surrogate", old_name="the device", old_short="the device",
            hint="give a surrogate of that device or another device.spec",
        )  # fmt: skip
    return StudyBackends(surrogate, device, backends_identity(surrogate, device))


def run_capacity_study(config: CapacityStudyConfig, run: RunFolder, *, progress: bool, prepared: StudyBackends) -> TaskOutcome:
    """Run the trials not yet in the run's checkpoint, then tabulate and plot every trial."""
    from inmaterio.plots import plot_capacity

    finished = Finished(run)
    trials = config.trials()
    todo = [t for t in trials if t.key not in finished]

    def keep(result) -> None:
        if result.ok:
            finished.save(todo[result.index].key, result.value)

    run_trials(capacity_trial, todo, config.executor, progress=progress, description="capacity", on_result=keep)
    results = {t.key: finished[t.key] for t in trials}
    ns = sorted(config.task.n_points)
    rows = _rows(config.task.models, ns, results)
    plot_capacity(ns, {label: fractions for label, fractions, _ in rows}, run.file("capacity.png"))
    curves = {
        key: [{"step": k, "found": count} for k, count in enumerate(r["found_per_restart"])]
        if "found_per_restart" in r
        else [{"step": a["attempt"], "found": a.get("found", a.get("found_on_device"))} for a in r["attempts"]]
        for key, r in results.items()
    }  # fmt: skip
    metrics: dict[str, Any] = {
        "study": "capacity",
        "models": list(config.task.models),
        "n_points": ns,
        "trials": results,
        "surrogate_noise_na": None if prepared.surrogate is None else prepared.surrogate.info.noise_na,
        "device": None if prepared.device is None else prepared.device.describe(),
        "executor": {
            "kind": config.executor.kind,
            "workers": 1 if config.executor.kind == "serial" else config.executor.n_workers(),
        },
    }
    columns = ["model"] + [f"N = {n}" for n in ns] + ["our VC dimension >=", "paper"]
    table = [[label, *(f"{f:.3f}" for f in fractions), _vc(ns, fractions), paper] for label, fractions, paper in rows]
    return TaskOutcome(metrics, {}, "Capacity: fraction of the 2^N labellings found", columns, table, curves)


def _rows(models: list[str], ns: list[int], results: dict[str, dict]) -> list[tuple[str, list[float | None], str]]:
    """``(label, fraction per N (None: not run), paper)`` per model, and the robust row after ``dnpu_search``."""
    rows = []
    for model in models:
        per_n = [results.get(f"{model}/N={n}") for n in ns]
        rows.append((LABELS[model], [None if r is None else r["fraction"] for r in per_n], PAPER_VC[model]))
        if model == "dnpu_search" and all(r is not None and "fraction_margin_ge_rmse" in r for r in per_n):
            rmse = per_n[0]["margin_threshold_na"]
            rows.append((ROBUST_LABEL.format(rmse=rmse), [r["fraction_margin_ge_rmse"] for r in per_n], ""))
    return rows


def _vc(ns: list[int], fractions: list[float | None]) -> str:
    """Our VC-dimension lower bound: the largest N whose labellings were all found."""
    full = [n for n, f in zip(ns, fractions) if f == 1.0]
    return str(max(full)) if full else f"< {ns[0]}"


def report_capacity_study(runs: list[FinishedRun]) -> str:
    """Markdown: the fractions of every model of every run beside the paper's bounds, margins, seconds per trial."""
    from inmaterio.tasks.report import markdown_table

    ns = sorted({n for r in runs for n in r.metrics["n_points"]})
    table, seconds, notes, footer = [], [], [], []
    for run in runs:
        m, folder = run.metrics, f"`{run.path}`"
        results = m["trials"]
        for label, fractions, paper in _rows(m["models"], ns, results):
            table.append([label, *("-" if f is None else f"{f:.3f}" for f in fractions), _vc(ns, fractions), paper, folder])
        for model in m["models"]:
            times = [results.get(f"{model}/N={n}", {}).get("seconds") for n in ns]
            seconds.append([LABELS[model], *("-" if t is None else f"{t:.1f}" for t in times), folder])
        if "dnpu_search" in m["models"]:
            medians = []
            for n in ns:
                margins = sorted(v for v in results.get(f"dnpu_search/N={n}", {}).get("surrogate_margin_na", []) if v is not None)
                medians.append(f"N = {n}: {margins[len(margins) // 2]:.1f}" if margins else f"N = {n}: -")
            notes.append(f"Median margin of the searched classifiers in {folder} (nA, non-constant labellings, on the "
                         f"surrogate): {', '.join(medians)}.")  # fmt: skip
        if run.config["task"].get("device_prefilter") and "dnpu_annealed" in m["models"]:
            notes.append(f"Device pre-filter in {folder}: after each attempt only the classifiers the surrogate separates "
                         "without error were measured on the device, so the annealed fractions are lower bounds.")  # fmt: skip
        device = (m.get("device") or {}).get("device")
        on = "" if device is None else f"; device `{device.get('type')}` ({m['device']['plateau_samples']} sample(s) per point)"
        footer.append(
            f"- {folder}: `inmaterio run {run.path / 'config.yaml'} --out {run.path}`; wall time "
            f"{run.record.get('wall_s', 0.0) / 60:.1f} min, executor `{m['executor']['kind']}` ({m['executor']['workers']} "
            f"workers){on}, inmaterio {run.record.get('package_version')}. ![capacity]({run.path / 'capacity.png'})"
        )
    n_columns = [f"N = {n}" for n in ns]
    lines = [
        "### Capacity: fraction of the 2^N labellings found",
        "",
        markdown_table(["model", *n_columns, "our VC dimension >=", "paper", "run"], table),
        "",
        *(line for note in notes for line in (note, "")),
        "Seconds per trial (one model at one N, all 2^N labellings):",
        "",
        markdown_table(["model", *n_columns, "run"], seconds),
        "",
        "Runs:",
        "",
        *footer,
    ]
    return "\n".join(lines)
