"""The ring study (Ruiz Euler et al. 2021, experiment 2) as a task: one DNPU vs the 2-2-1 network, many trials each.

``inmaterio run examples/rings_study.yaml`` trains ``task.trials`` ring
classifiers per architecture on the surrogate (groups of ``task.group``
trials as one vectorised model, :mod:`~inmaterio.studies.ring_trials`,
through :func:`inmaterio.parallel.run_trials`), then applies one device
protocol to both architectures; no test point is used for training,
calibration or choice:

1. Ranking (``ranking``): ``train`` ranks the trials by their noise-free
   training accuracy on the surrogate; ``noisy-train`` by their training
   accuracy with Gaussian output noise on every node (standard deviation
   ``ranking_noise`` times the surrogate's test RMSE, default
   ``1/sqrt(device.plateau_samples)``: the device's noise after averaging;
   mean over ``ranking_draws`` draws, threshold fitted without noise).
2. Calibration (``readout``): ``surrogate`` keeps the logistic read-out
   fitted on the surrogate's training output; ``device`` measures the
   training set once on the device, takes the 2-2-1's batch-norm statistics
   from it (unless ``calibrate_bn: false``) and re-fits the read-out on the
   measured output (:func:`~inmaterio.studies.ring_trials.calibrate_on_device`).
3. Choice (``candidates: K``): the ``K`` best-ranked trials are each measured
   once on the validation set; the best on the device is chosen. ``K = 1``:
   the best-ranked trial, no validation set.
4. Test: the chosen network is measured ``validate_repeats`` times over the
   test set (the 2-2-1 node after node on one device: time multiplexing),
   ``device.plateau_samples`` samples averaged per operating point. The
   report gives the 2-2-1's margin over the single DNPU on the same test
   points with a 95% paired-bootstrap interval.

Resuming: every finished group of trials and every device stage (one
candidate's validation, the test) is saved in the run's checkpoint at once;
a rerun of the same command redoes only what had not finished. The device
measurements are keyed by what they serve (``("rings_study", architecture,
"calibration" | "validation", rank)``, ``("rings_study", architecture,
"test")``), so a resumed study measures exactly what an uninterrupted one
would.

``reuse_training: FOLDER`` takes the trained candidates of another finished
rings study instead of training (measure them again with other device
settings): every training and data setting must equal that run's; only the
device protocol (architectures, n_val, candidates up to the number kept,
readout, calibrate_bn, validate_repeats, device) may differ.

The run folder holds ``metrics.json`` (every trial's numbers, the
candidates with their states, the device results), ``history.json`` (one
row per trial) and ``histograms.png``; ``inmaterio report FOLDER ...``
rebuilds the table with the paper's numbers beside ours
(:func:`report_rings_study`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from inmaterio.errors import ConfigError
from inmaterio.parallel import ExecutorConfig, run_trials
from inmaterio.runs import RunFolder
from inmaterio.studies.common import DeviceChoice, Finished, StudyBackends, SurrogateChoice
from inmaterio.studies.ring_trials import Architecture, RingData, RingGroup, RingTraining, ring_trials
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = [
    "PAPER",
    "RingsDevice",
    "RingsStudyTask",
    "RingsStudyConfig",
    "prepare_rings_study",
    "run_rings_study",
    "report_rings_study",
]

#: Best of 1000 off-chip, and validated on their chip over 50 measurements (test accuracy, %).
PAPER = {"single": (84.95, 76.75), "2-2-1": (94.62, 93.98)}

#: Input electrodes per architecture: the pair with the best noisy training accuracy of an electrode
#: sweep on training data only (``benchmarks/dnpu_networks/results/ring_electrodes``).
INPUT_ELECTRODES: dict[str, tuple[int, int]] = {"single": (2, 5), "2-2-1": (1, 6)}

#: Fields of the task that only the device protocol uses: the ones ``reuse_training`` may change.
DEVICE_FIELDS = frozenset(
    {"type", "architectures", "candidates", "readout", "calibrate_bn", "validate_repeats", "reuse_training"}
)

Electrode = Union[int, str]


class RingsDevice(DeviceChoice):
    """The device of the rings study (see :class:`~inmaterio.studies.common.DeviceChoice`); 4 samples per point."""

    plateau_samples: int = Field(4, ge=1)


class RingsStudyTask(RingTraining):
    """The ``task:`` of a rings study. Training fields: those of :class:`~inmaterio.studies.ring_trials.RingTraining`.

    architectures : ``single`` and/or ``2-2-1`` (no repeats).
    trials : trainings per architecture (>= 1).
    group : trials vectorised in one worker task (>= 1).
    input_electrodes : the two data electrodes per architecture; an architecture not given keeps
        its default (single: 2, 5; 2-2-1: 1, 6).
    data : :class:`~inmaterio.studies.ring_trials.RingData` (gap, points per class of each set).
    ranking, ranking_noise, ranking_draws : how trials are ranked (see the module docstring);
        ``ranking_noise`` null = ``1/sqrt(device.plateau_samples)``.
    candidates : best-ranked trials measured on the device's validation set (>= 1, <= trials).
    readout, calibrate_bn : the calibration on the device (see the module docstring).
    validate_repeats : test-set measurements of the chosen network (0: no device at all).
    reuse_training : a finished rings-study run folder whose trained candidates are measured again.
    """

    type: Literal["rings_study"]
    architectures: list[Architecture] = Field(default_factory=lambda: ["single", "2-2-1"])
    trials: int = Field(1000, ge=1)
    group: int = Field(25, ge=1)
    input_electrodes: dict[Architecture, tuple[Electrode, Electrode]] = Field(default_factory=lambda: dict(INPUT_ELECTRODES))
    data: RingData = RingData()
    ranking: Literal["train", "noisy-train"] = "noisy-train"
    ranking_noise: float | None = Field(None, ge=0)
    ranking_draws: int = Field(20, ge=1)
    candidates: int = Field(4, ge=1)
    readout: Literal["surrogate", "device"] = "surrogate"
    calibrate_bn: bool = True
    validate_repeats: int = Field(3, ge=0)
    reuse_training: Path | None = None

    @field_validator("input_electrodes", mode="before")
    @classmethod
    def _merge_defaults(cls, value: Any) -> Any:
        return {**INPUT_ELECTRODES, **value} if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _consistent(self) -> RingsStudyTask:
        if not self.architectures or len(set(self.architectures)) != len(self.architectures):
            raise ValueError(f"architectures must list single and/or 2-2-1 once each, got {self.architectures}")
        if self.candidates > self.trials:
            raise ValueError(f"candidates = {self.candidates} must not exceed trials = {self.trials}")
        for arch, (a, b) in self.input_electrodes.items():
            if a == b:
                raise ValueError(f"input_electrodes of {arch} must be two different electrodes, got [{a}, {b}]")
        return self


class RingsStudyConfig(RunnableConfig):
    """A rings study: the task, the surrogate, the device, the executor, the seed.

    ``executor`` and ``device.threads`` are speed only: a run may resume with other values.
    """

    SPEED_ONLY = {"executor": True, "device": {"threads"}}

    task: RingsStudyTask
    surrogate: SurrogateChoice = SurrogateChoice()
    device: RingsDevice = RingsDevice()
    executor: ExecutorConfig = ExecutorConfig()
    seed: int = 0

    def ranking_noise(self) -> float:
        """The ranking's node noise, x the surrogate's test RMSE."""
        noise = self.task.ranking_noise
        return noise if noise is not None else self.device.plateau_samples**-0.5

    def groups(self, architecture: str) -> list[RingGroup]:
        """The groups of trials of ``architecture``; trial ``t`` has seed ``seed * 1_000_003 + t``."""
        task = self.task
        training = RingTraining.model_validate(task.model_dump(include=set(RingTraining.model_fields)))
        draws = task.ranking_draws if task.ranking == "noisy-train" else 0
        return [
            RingGroup(
                architecture=architecture, first_seed=self.seed * 1_000_003 + start, count=min(task.group, task.trials - start),
                input_electrodes=task.input_electrodes[architecture], data=task.data, data_seed=self.seed, training=training,
                keep=task.candidates, noisy_draws=draws, noisy_std_factor=self.ranking_noise(), surrogate=self.surrogate,
            )
            for start in range(0, task.trials, task.group)
        ]  # fmt: skip


def prepare_rings_study(config: RingsStudyConfig) -> StudyBackends:
    """Load the surrogate, build the device (if measured), check electrodes and a reused run, before any folder is made.

    Raises
    ------
    ConfigError, ModelFileError, RunFolderError
        A surrogate that cannot be loaded, input electrodes it does not have, a device that does
        not fit the surrogate, or a ``reuse_training`` folder that is not a finished rings study
        with the same training settings.
    """
    from inmaterio.nn import DNPU
    from inmaterio.processors import check_interchangeable
    from inmaterio.studies.common import backends_identity, device_processor, surrogate_processor

    task = config.task
    surrogate = surrogate_processor(config.surrogate)
    for arch in task.architectures:
        DNPU(surrogate, 1, task.input_electrodes[arch], (-1.0, 1.0))  # names and indices (ConfigError naming them)
    device = None
    if task.validate_repeats > 0:
        device = device_processor(config.device, surrogate)
        check_interchangeable(
            surrogate.info, device.info, new_name="the surrogate", old_name="the device", old_short="the device",
            hint="give a surrogate of that device or another device.spec",
        )  # fmt: skip
    identity = backends_identity(surrogate, device)
    extra = {}
    if task.reuse_training is not None:
        extra["reused"], identity["reused_training"] = _reused_training(config)
    return StudyBackends(surrogate, device, identity, extra)


def _training_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a rings-study config (its ``model_dump``, as plain data) that decide its training.

    The ranking noise is compared as used (null resolved from the device's samples per point).
    """
    task = {k: v for k, v in config["task"].items() if k not in DEVICE_FIELDS}
    task["data"] = {k: v for k, v in task["data"].items() if k != "n_val"}
    if task["ranking_noise"] is None:
        task["ranking_noise"] = config["device"]["plateau_samples"] ** -0.5
    return {"task": task, "surrogate": config["surrogate"], "seed": config["seed"]}


def _reused_training(config: RingsStudyConfig) -> tuple[dict[str, Any], str]:
    """The training summaries of the ``reuse_training`` run and its fingerprint, after checking that it may be reused."""
    from inmaterio.config import read_yaml
    from inmaterio.errors import ModelFileError, RunFolderError
    from inmaterio.fileio import read_json
    from inmaterio.runs import CONFIG_FILE, METRICS_FILE, identity_differences, read_run

    source = config.task.reuse_training
    record = read_run(source)
    if record["kind"] != "inmaterio.task.rings_study" or record["state"] != "finished":
        raise RunFolderError(
            f"task.reuse_training: '{source}' holds a {record['state']} run of kind '{record['kind']}'; "
            "give a finished rings study (kind 'inmaterio.task.rings_study')"
        )
    stored = read_yaml(source / CONFIG_FILE)
    mine = config.model_dump(mode="json")
    diffs = identity_differences(_training_fields(stored), _training_fields(mine))
    if diffs:
        raise ConfigError(
            f"task.reuse_training: '{source}' was trained with other settings ({'; '.join(diffs)}); only the device "
            f"protocol ({', '.join(sorted(DEVICE_FIELDS - {'type', 'reuse_training'}))}, task.data.n_val, device) may differ"
        )
    summary = read_json(source / METRICS_FILE, ModelFileError)["summary"]
    for arch in config.task.architectures:
        kept = summary.get(arch, {}).get("candidates")
        if kept is None:
            raise ConfigError(
                f"task.reuse_training: '{source}' trained no {arch} networks (its architectures: {sorted(summary)})"
            )
        if config.task.candidates > len(kept):
            raise ConfigError(f"task.candidates = {config.task.candidates}: '{source}' kept {len(kept)} candidates of {arch}")
    reused = {arch: {k: v for k, v in summary[arch].items() if k != "validation"} for arch in config.task.architectures}
    return reused, record["fingerprint"]


def run_rings_study(config: RingsStudyConfig, run: RunFolder, *, progress: bool, prepared: StudyBackends) -> TaskOutcome:
    """Train (or reuse) the trials of every architecture, run the device protocol, tabulate."""
    finished = Finished(run)
    task = config.task
    summary: dict[str, dict[str, Any]] = {}
    for arch in task.architectures:
        if task.reuse_training is not None:
            summary[arch] = prepared.extra["reused"][arch]
        else:
            summary[arch] = _train(config, arch, finished, progress)
        if task.validate_repeats > 0:
            summary[arch]["validation"] = _device_protocol(config, arch, summary[arch]["candidates"], prepared, finished)
    _histograms(summary, run.file("histograms.png"))
    metrics: dict[str, Any] = {
        "study": "rings",
        "architectures": list(task.architectures),
        "summary": summary,
        "ranking_noise": config.ranking_noise(),
        "plateau_samples": config.device.plateau_samples,
        "paper": PAPER,
        "device": None if prepared.device is None else prepared.device.describe(),
        "executor": {
            "kind": config.executor.kind,
            "workers": 1 if config.executor.kind == "serial" else config.executor.n_workers(),
        },
    }
    curves = {
        arch: [
            {"step": t, "fisher": s["fisher"][t], "train_accuracy": s["train_accuracy"][t], "test_accuracy": s["test_accuracy"][t],
             **({"noisy_train_accuracy": s["noisy_train_accuracy"][t]} if "noisy_train_accuracy" in s else {})}
            for t in range(s["trials"])
        ]
        for arch, s in summary.items()
    }  # fmt: skip
    short = [0, 1, 3, 5, 6, 8, 9]  # the printed table: accuracies beside the paper's; the report has every column
    rows = [[_row(a, summary[a])[k] for k in short] for a in summary]
    return TaskOutcome(metrics, {}, "Rings: one DNPU vs the 2-2-1 network", [COLUMNS[k] for k in short], rows, curves)


def _train(config: RingsStudyConfig, arch: str, finished: Finished, progress: bool) -> dict[str, Any]:
    """The training summary of ``arch``: its groups not yet in the checkpoint are trained (and saved one by one)."""
    groups = config.groups(arch)
    todo = [g for g in groups if g.key not in finished]

    def keep(result) -> None:
        if result.ok:
            finished.save(todo[result.index].key, result.value)

    run_trials(ring_trials, todo, config.executor, progress=progress, description=f"rings {arch}", on_result=keep)
    results = [finished[g.key] for g in groups]
    fisher = np.concatenate([r["fisher"] for r in results])
    train = np.concatenate([r["train_accuracy"] for r in results])
    test = np.concatenate([r["test_accuracy"] for r in results])
    candidates = []
    for r in results:
        offset = r["first_seed"] - groups[0].first_seed
        for c in r["top"]:
            candidates.append(c | {"trial": offset + c["index"], "test_accuracy": float(test[offset + c["index"]])})
    candidates.sort(key=lambda c: (-c["score"], c["trial"]))  # stable: the earlier trial first on ties
    candidates = candidates[: config.task.candidates]
    best = candidates[0]["trial"]
    summary = {
        "trials": len(test), "fisher": fisher.tolist(), "train_accuracy": train.tolist(), "test_accuracy": test.tolist(),
        "best_trial": int(best), "best_train_accuracy": float(train[best]), "best_test_accuracy": float(test[best]),
        "median_test_accuracy": float(np.median(test)), "training_seconds": float(sum(r["seconds"] for r in results)),
        "ranking": config.task.ranking, "best_score": candidates[0]["score"],
        "candidates": candidates,  # with their states: reuse_training measures them again without training
    }  # fmt: skip
    if config.task.ranking == "noisy-train":
        summary["noisy_train_accuracy"] = np.concatenate([r["noisy_train_accuracy"] for r in results]).tolist()
    return summary


def _load_trial(config: RingsStudyConfig, arch: str, state: dict, surrogate):
    """A trained network (eval mode) on ``surrogate`` from the state a trial returned."""
    from inmaterio.tasks.rings import build_ring_model

    net = build_ring_model(arch, surrogate, tuple(config.task.input_electrodes[arch]), seed=0)
    net.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    net.eval()
    return net


def _on_device(config: RingsStudyConfig, arch: str, rank: int, candidate: dict, prepared: StudyBackends, x_train, y_train):
    """Candidate ``rank``'s network and read-out threshold, calibrated on the device (``readout: device``).

    The calibration measurement is keyed by ``("rings_study", arch, "calibration", rank)``.
    """
    from inmaterio.studies.ring_trials import calibrate_on_device
    from inmaterio.training.metrics import fit_logistic_threshold

    net = _load_trial(config, arch, candidate["state"], prepared.surrogate)
    with torch.no_grad():
        threshold = fit_logistic_threshold(net(x_train), y_train)
    if config.task.readout == "device":
        with prepared.device.device.random_streams("rings_study", arch, "calibration", rank):
            threshold, _ = calibrate_on_device(
                net, prepared.device, x_train, y_train, batch_norm=config.task.calibrate_bn and arch != "single",
                multiplex=arch != "single",
            )  # fmt: skip
    return net, threshold


def _measure(net, device, threshold, x, y, repeats: int, arch: str, keys: tuple):
    """``(repeats,)`` accuracies of ``net`` on ``device`` with ``threshold``, and the validation; measurements keyed by ``keys``."""
    from inmaterio.tasks.validation import validate_model

    with device.device.random_streams(*keys):
        v = validate_model(
            net, device, x, y[None], threshold, outputs=lambda o: o[None], repeats=repeats, multiplex=arch != "single"
        )
    return v.accuracy_surrogate_threshold[:, 0].numpy(), v


def _device_protocol(
    config: RingsStudyConfig, arch: str, candidates: list[dict], prepared: StudyBackends, finished: Finished
) -> dict:
    """Choose among the candidates on the validation set, then measure the choice on the test set (stages saved)."""
    from inmaterio.training.metrics import fit_logistic_threshold

    task, seed = config.task, config.seed
    x_train, y_train = task.data.split("train", seed)
    device = prepared.device
    candidates = candidates[: task.candidates]
    rows, ready = [], {}  # ready: the networks calibrated in this session, by rank
    for rank, c in enumerate(candidates):
        row = {
            "rank": rank,
            "trial": c["trial"],
            "score": c["score"],
            "train_accuracy": c["train_accuracy"],
            "test_accuracy": c["test_accuracy"],
        }
        key = f"device/{arch}/validation/{rank}"
        if len(candidates) > 1 and key not in finished:
            start = time.perf_counter()
            net, threshold = ready[rank] = _on_device(config, arch, rank, c, prepared, x_train, y_train)
            x_val, y_val = task.data.split("val", seed)
            acc, _ = _measure(net, device, threshold, x_val, y_val, 1, arch, ("rings_study", arch, "validation", rank))
            finished.save(key, {"device_validation_accuracy": float(acc[0]), "seconds": time.perf_counter() - start})
        rows.append(row | (finished[key] if key in finished else {}))
    chosen = rows[0]
    for row in rows[1:]:
        if row.get("device_validation_accuracy", 0.0) > chosen.get("device_validation_accuracy", 0.0):
            chosen = row
    key = f"device/{arch}/test"
    if key not in finished:
        start = time.perf_counter()
        rank = chosen["rank"]
        net, threshold = ready.get(rank) or _on_device(config, arch, rank, candidates[rank], prepared, x_train, y_train)
        x_test, y_test = task.data.split("test", seed)
        with torch.no_grad():
            fresh = _load_trial(config, arch, candidates[rank]["state"], prepared.surrogate)
            surrogate_correct = fit_logistic_threshold(fresh(x_train), y_train).predict(fresh(x_test)) == y_test
        per_repeat, v = _measure(
            net, device, threshold, x_test, y_test, task.validate_repeats, arch, ("rings_study", arch, "test")
        )
        device_correct = threshold.predict(v.output_na[:, 0]) == y_test  # (repeats, test points)
        finished.save(key, {
            "surrogate_test_accuracy": float(surrogate_correct.float().mean()),
            # per test point, for the paired margin between architectures (same test points)
            "surrogate_test_correct": surrogate_correct.int().tolist(),
            "device_test_correct": device_correct.int().tolist(),
            "device_test_accuracy_mean": float(per_repeat.mean()),
            "device_test_accuracy_std": float(per_repeat.std()),
            "device_test_accuracy_per_repeat": per_repeat.tolist(),
            # a threshold fitted on the device's TEST output itself: an upper bound, not a result
            "device_test_accuracy_threshold_fitted_on_test_mean": float(v.accuracy[:, 0].mean()),
            "rms_difference_na": float(v.rms_difference_na[0]),
            "test_seconds": time.perf_counter() - start,
        })  # fmt: skip
    test = finished[key]
    selection = float(sum(r.get("seconds", 0.0) for r in rows))
    return {
        "chosen": chosen, "candidates": rows, **test, "repeats": task.validate_repeats, "readout": task.readout,
        "calibrate_bn": task.calibrate_bn and arch != "single", "plateau_samples": config.device.plateau_samples,
        "selection_seconds": selection, "seconds": selection + test["test_seconds"],
    }  # fmt: skip


def _histograms(summary: dict[str, dict], path: Path) -> None:
    """Fisher criterion and test accuracy of every trial, per architecture."""
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_f, ax_a = fig.subplots(1, 2)
    for arch, s in summary.items():
        ax_f.hist(s["fisher"], bins=40, alpha=0.6, label=arch)
        ax_a.hist(100 * np.array(s["test_accuracy"]), bins=40, alpha=0.6, label=arch)
    ax_f.set_xlabel("Fisher criterion (training set)")
    ax_a.set_xlabel("test accuracy / %")
    for ax in (ax_f, ax_a):
        ax.set_ylabel("trials")
        ax.legend()
    save_figure(fig, path)


COLUMNS = [
    "architecture", "trials", "training s (sum of groups)", "median test acc. (surrogate)",
    "best-ranked trial: train / test acc. (surrogate)", "chosen trial: test acc. (surrogate)",
    "chosen trial on the device: test acc. (mean ± std over repeats)", "device wall / s", "paper: best off-chip", "paper: on chip",
]  # fmt: skip


def _row(arch: str, s: dict) -> list[str]:
    v = s.get("validation")
    device = (
        f"{100 * v['device_test_accuracy_mean']:.2f}% ± {100 * v['device_test_accuracy_std']:.2f} ({v['repeats']} x)"
        if v
        else "-"
    )
    chosen = f"{100 * v['surrogate_test_accuracy']:.2f}% (trial {v['chosen']['trial']})" if v else "-"
    return [
        arch, str(s["trials"]), f"{s['training_seconds']:.0f}", f"{100 * s['median_test_accuracy']:.2f}%",
        f"{100 * s['best_train_accuracy']:.2f}% / {100 * s['best_test_accuracy']:.2f}%", chosen, device,
        f"{v['seconds']:.0f}" if v else "-", f"{PAPER[arch][0]}%", f"{PAPER[arch][1]}%",
    ]  # fmt: skip


def _margin_line(summary: dict) -> str | None:
    """The 2-2-1's test accuracy minus the single DNPU's, on the same test points, with 95% intervals."""
    from inmaterio.training.metrics import paired_accuracy_difference

    v = {arch: (summary.get(arch) or {}).get("validation") or {} for arch in PAPER}
    if not all("device_test_correct" in v[arch] for arch in PAPER):
        return None
    device = paired_accuracy_difference(v["2-2-1"]["device_test_correct"], v["single"]["device_test_correct"])
    surrogate = paired_accuracy_difference(v["2-2-1"]["surrogate_test_correct"], v["single"]["surrogate_test_correct"])
    return (f"Margin of the chosen 2-2-1 over the chosen single DNPU (test accuracy, the same test points; paired bootstrap "
            f"over the points, each point's correctness averaged over the repeats): on the device **{device}**; on the "
            f"surrogate {surrogate}.")  # fmt: skip


def report_rings_study(runs: list[FinishedRun]) -> str:
    """Markdown: per run, the table beside the paper's numbers, the margin, the protocol and the candidates."""
    from inmaterio.tasks.report import markdown_table

    sections = []
    for run in runs:
        m, task = run.metrics, run.config["task"]
        summary = m["summary"]
        data = task["data"]
        electrodes = ", ".join(f"{a}: e{p[0]}, e{p[1]}" if all(isinstance(e, int) for e in p) else f"{a}: {p[0]}, {p[1]}"
                               for a, p in task["input_electrodes"].items() if a in summary)  # fmt: skip
        lines = [
            f"### Rings: one DNPU vs the 2-2-1 network (`{run.path}`)",
            "",
            f"`inmaterio run {run.path / 'config.yaml'} --out {run.path}`: executor `{m['executor']['kind']}` "
            f"({m['executor']['workers']} workers), wall time {run.record.get('wall_s', 0.0) / 60:.1f} min; data: gap {data['gap']}, "
            f"{data['n_train']} training + {data['n_val']} validation + {data['n_test']} test points per class (seed "
            f"{run.config['seed']}); {task['epochs']} epochs; noise variance {task['noise_variance_factor']} x test MSE; "
            f"data on electrodes {electrodes}"
            + (f"; training reused from `{task['reuse_training']}`" if task.get("reuse_training") else "")
            + f"; inmaterio {run.record.get('package_version')}.",
            "",
            markdown_table(COLUMNS, [_row(arch, s) for arch, s in summary.items()]),
            "",
        ]
        best_clean = []
        for arch, s in summary.items():
            train, test = np.array(s["train_accuracy"]), np.array(s["test_accuracy"])
            t = int(train.argmax())  # the first of equals
            best_clean.append(f"{arch} {100 * train[t]:.2f}% / {100 * test[t]:.2f}% (trial {t})")
        lines += ["Best trial by noise-free training accuracy on the surrogate (as the paper's best off-chip), train / test: "
                  + "; ".join(best_clean) + ".", ""]  # fmt: skip
        margin = _margin_line(summary)
        if margin:
            lines += [margin, ""]
        if any("validation" in s for s in summary.values()):
            rank = ("noise-free training accuracy on the surrogate" if task["ranking"] == "train" else
                    f"training accuracy on the surrogate with output noise of {m['ranking_noise']:.3g} x its test RMSE on every "
                    f"node (mean of {task['ranking_draws']} draws)")  # fmt: skip
            readout = (
                "keep the logistic read-out fitted on the surrogate's output of the training set (no device calibration)"
                if task["readout"] == "surrogate"
                else "are calibrated on the device: the training set measured once, "
                + ("the 2-2-1's batch-norm statistics taken from that measurement and " if task["calibrate_bn"] else "")
                + "the logistic read-out re-fitted on the measured output"
            )
            lines += [
                f"Device protocol (the same for both architectures): trials ranked by {rank}; the best {task['candidates']} "
                f"{readout}"
                + (", are each measured once on the validation set, and the one with the best device validation accuracy is chosen"
                   if task["candidates"] > 1 else "")
                + f"; the chosen network is measured {task['validate_repeats']} times on the test set ({m['plateau_samples']} device "
                "sample(s) averaged per operating point; the 2-2-1 node after node on one device). No test point is used for "
                "training, calibration or choice.",
                "",
                markdown_table(
                    ["architecture", "candidate", "trial", "ranking score", "train acc. (surrogate)", "test acc. (surrogate)",
                     "device validation acc."],
                    [[arch, c["rank"], c["trial"], f"{100 * c['score']:.2f}%", f"{100 * c['train_accuracy']:.2f}%",
                      f"{100 * c['test_accuracy']:.2f}%",
                      "-" if c.get("device_validation_accuracy") is None else f"{100 * c['device_validation_accuracy']:.1f}%"]
                     for arch, s in summary.items() for c in s.get("validation", {}).get("candidates", [])],
                ),
                "",
            ]  # fmt: skip
        lines.append(f"![histograms]({run.path / 'histograms.png'})")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)
