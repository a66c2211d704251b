"""Reading the weights out of a noisy analog tile: least squares over random mat-vecs vs one-hot reads.

Reproduces the weight read-out of Gokmen (2021), "Enabling training of neural networks on noisy
hardware", Front. Artif. Intell. 4:699148, Eq. 4 (:mod:`inmaterio.crossbars.extraction`): a tile
holding weights uniform in ``[-a, a]`` (``a`` = ``weight_amplitudes``; ``weight_range`` maps to the
full-scale conductance) is read ``n`` times with inputs uniform in ``[-1, 1]`` through each periphery
of ``peripheries``, the weights are estimated as ``M_yx M_xx^-1`` after every ``n`` of ``n_reads``
(one streaming accumulator per seed, so the sweep costs the largest ``n``), and compared with the
column-by-column read (unit vectors, ``one_hot_repeats`` sweeps averaged). The paper's claim: on a
512 x 512 tile 10,240 random reads give an error std of about 0.002 (0.1 % of the range [-1, 1]).

Reported per (periphery, amplitude, method, reads): the error std of all the estimated weights
(mean and spread over seeds), the closed form ``sigma sqrt(3 / n)`` of the periphery's output noise
``sigma`` alone, and the prediction with the converters as extra noise,
``sigma_eff^2 = sigma^2 + sigma_w^2 in/3 + step_adc^2/12 + step_dac^2/12 |W_i|^2`` (normalised units,
``|W_i|^2`` the mean squared row norm of ``W / weight_range``) at finite ``n`` (``3 / (n - in - 1)``);
one-hot reads: ``sqrt(sigma^2 + sigma_w^2 + step_adc^2/12) / sqrt(repeats)``. Neither includes ADC
saturation; the share of ideal outputs ``|W x| / weight_range`` beyond the ADC bound is reported.

``inmaterio run examples/weight_extraction.yaml``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from inmaterio.config import StrictModel
from inmaterio.crossbars.extraction import MatVecAccumulator, closed_form_error_std, extract_weights, one_hot_weights
from inmaterio.crossbars.tile import AnalogTile, IOConfig, TileConfig
from inmaterio.runs import RunFolder
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = [
    "Periphery",
    "WeightExtractionTask",
    "WeightExtractionConfig",
    "effective_noise",
    "run_weight_extraction",
    "report_weight_extraction",
]

PAPER_READS = 10_240
PAPER_ERROR_STD = 0.002


class Periphery(StrictModel):
    """One forward periphery to read through: a name (letters, digits, ``_ - .``) and its :class:`IOConfig`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,40}$")
    io: IOConfig


class WeightExtractionTask(StrictModel):
    """What to extract and how.

    in_features, out_features : the tile (rows, columns), 1 .. 4096.
    weight_range : ``|w|`` mapped to the full-scale conductance (> 0); 1: normalised units are weight units.
    weight_amplitudes : weights uniform in ``[-a, a]`` for each ``a`` (0 < a <= weight_range), one study each.
    n_reads : increasing numbers of random reads at which the estimate is taken (each >= in_features).
    one_hot_repeats : sweeps of the one-hot baseline (``repeats * in_features`` reads each), increasing.
    peripheries : the forward peripheries compared (distinct names).
    seeds : seeds 0 .. seeds-1: each its own weights, inputs and read noise.
    batch : reads per forward call (memory; part of the identity since it groups the random draws).
    """

    type: Literal["weight_extraction"]
    in_features: int = Field(512, ge=1, le=4096)
    out_features: int = Field(512, ge=1, le=4096)
    weight_range: float = Field(1.0, gt=0)
    weight_amplitudes: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    n_reads: list[int] = Field(default_factory=lambda: [1024, 2560, 5120, 10240, 20480, 40960], min_length=1)
    one_hot_repeats: list[int] = Field(default_factory=lambda: [1], min_length=1)
    peripheries: list[Periphery] = Field(min_length=1)
    seeds: int = Field(3, ge=1, le=100)
    batch: int = Field(4096, ge=1, le=1_000_000)

    @field_validator("n_reads", "one_hot_repeats")
    @classmethod
    def _increasing(cls, values: list[int]) -> list[int]:
        if any(v < 1 for v in values) or any(b <= a for a, b in zip(values, values[1:])):
            raise ValueError(f"must be positive and strictly increasing, got {values}")
        return values

    @field_validator("peripheries")
    @classmethod
    def _distinct(cls, values: list[Periphery]) -> list[Periphery]:
        names = [p.name for p in values]
        if len(set(names)) != len(names):
            raise ValueError(f"periphery names must be distinct, got {names}")
        return values

    @model_validator(mode="after")
    def _enough_reads_and_bounded_weights(self) -> WeightExtractionTask:
        if self.n_reads[0] < self.in_features:
            raise ValueError(f"n_reads {self.n_reads[0]} < in_features = {self.in_features}: least squares needs n >= in")
        for a in self.weight_amplitudes:
            if not 0 < a <= self.weight_range:
                raise ValueError(f"weight amplitude {a} must be in (0, weight_range = {self.weight_range}]")
        return self


class WeightExtractionConfig(RunnableConfig):
    """A weight-extraction study: the task and the torch threads (speed only)."""

    SPEED_ONLY = {"threads": True}

    task: WeightExtractionTask
    threads: int = Field(1, ge=1, le=256)


def _seed(*key: int) -> int:
    """A 63-bit seed keyed by what it serves (``(seed, stream, ...)``)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)


def effective_noise(io: IOConfig, w: torch.Tensor, weight_range: float, *, one_hot: bool = False) -> float:
    """Output-referred noise std per read, weight units, with the DAC and ADC rounding taken as uniform noise.

    ``w: (out, in)`` the weights; inputs uniform in ``[-1, 1]`` (``one_hot``: unit vectors, no DAC rounding, one
    active input). Saturation is not included. See the module docstring.
    """
    n_in = w.shape[1]
    var = io.output_noise**2 + io.weight_noise**2 * (1.0 if one_hot else n_in / 3.0)
    if io.adc_step is not None:
        var += io.adc_step**2 / 12.0
    if io.dac_step is not None and not one_hot:
        var += io.dac_step**2 / 12.0 * float((w.double() / weight_range).square().sum(dim=1).mean())
    return math.sqrt(var) * weight_range


def _clipped_share(io: IOConfig, w: torch.Tensor, weight_range: float, generator: torch.Generator) -> float:
    """Share of ideal outputs ``|W x| / weight_range`` past the ADC bound for uniform inputs (4096 draws)."""
    if io.output_bound is None:
        return 0.0
    x = torch.rand(4096, w.shape[1], generator=generator, dtype=torch.float64) * 2 - 1
    if io.input_scaling == "max":
        x = x / x.abs().amax(dim=1, keepdim=True)
    return float(((x @ w.double().t()).abs() / weight_range > io.output_bound).double().mean())


def _one_seed(task: WeightExtractionTask, p_index: int, a_index: int, seed: int) -> dict[str, Any]:
    periphery, amplitude = task.peripheries[p_index], task.weight_amplitudes[a_index]
    # the same weights and inputs for every periphery (common random numbers); the read noise per periphery
    init = torch.Generator().manual_seed(_seed(seed, 0))
    w = (torch.rand(task.out_features, task.in_features, generator=init, dtype=torch.float64) * 2 - 1) * amplitude
    config = TileConfig(io=periphery.io, weight_range=task.weight_range, max_rows=task.in_features, max_cols=task.out_features)
    tile = AnalogTile(task.in_features, task.out_features, config, seed=_seed(seed, 2, p_index, a_index))
    tile.set_weight(w)
    w = tile.weight.detach().double()  # as stored (float32)
    inputs = torch.Generator().manual_seed(_seed(seed, 1))
    acc = MatVecAccumulator(task.in_features, task.out_features)
    random_err = []
    for n in task.n_reads:
        est = extract_weights(tile, n - acc.n_reads, inputs, batch=task.batch, accumulator=acc)
        random_err.append(float((est - w).std()))
    total, one_hot_err, done = None, [], 0
    for repeats in task.one_hot_repeats:  # running sum of sweeps
        part = one_hot_weights(tile, repeats=repeats - done) * (repeats - done)
        total = part if total is None else total + part
        done = repeats
        one_hot_err.append(float((total / repeats - w).std()))
    return {
        "random": random_err,
        "one_hot": one_hot_err,
        "sigma_eff": effective_noise(periphery.io, w, task.weight_range),
        "sigma_eff_one_hot": effective_noise(periphery.io, w, task.weight_range, one_hot=True),
        "clipped_share": _clipped_share(periphery.io, w, task.weight_range, torch.Generator().manual_seed(_seed(seed, 3))),
    }


def _finite(value: float) -> float | None:
    """``value``, or None where the formula has no finite value (n <= in + 1)."""
    return value if math.isfinite(value) else None


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def run_weight_extraction(
    config: WeightExtractionConfig, run: RunFolder, *, progress: bool, prepared: None = None
) -> TaskOutcome:
    """Every (periphery, amplitude, seed); finished ones are kept in the checkpoint and not redone."""
    task = config.task
    done: dict[str, Any] = dict((run.load_checkpoint() or {}).get("results", {}))
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        for p, periphery in enumerate(task.peripheries):
            for a, amplitude in enumerate(task.weight_amplitudes):
                for seed in range(task.seeds):
                    key = f"{periphery.name}/{amplitude:g}/seed_{seed}"
                    if key not in done:
                        done[key] = _one_seed(task, p, a, seed)
                        run.save_checkpoint({"results": done})
                        if progress:
                            print(f"{key}: error std {done[key]['random'][-1]:.3g} after {task.n_reads[-1]} reads", flush=True)
    finally:
        torch.set_num_threads(saved_threads)

    results = []
    for periphery in task.peripheries:
        sigma = periphery.io.output_noise * task.weight_range
        for amplitude in task.weight_amplitudes:
            per_seed = [done[f"{periphery.name}/{amplitude:g}/seed_{s}"] for s in range(task.seeds)]
            sigma_eff = float(np.mean([r["sigma_eff"] for r in per_seed]))
            sigma_eff_1h = float(np.mean([r["sigma_eff_one_hot"] for r in per_seed]))
            results.append({
                "periphery": periphery.name,
                "io": periphery.io.model_dump(mode="json"),
                "weight_amplitude": amplitude,
                "sigma_out": sigma,
                "sigma_eff": sigma_eff,
                "sigma_eff_one_hot": sigma_eff_1h,
                "clipped_share": float(np.mean([r["clipped_share"] for r in per_seed])),
                "random": [
                    {"reads": n, "error_std": _stats([r["random"][i] for r in per_seed]),
                     "closed_form": closed_form_error_std(sigma, n),
                     "predicted": _finite(closed_form_error_std(sigma_eff, n, task.in_features))}
                    for i, n in enumerate(task.n_reads)
                ],
                "one_hot": [
                    {"reads": k * task.in_features, "repeats": k, "error_std": _stats([r["one_hot"][i] for r in per_seed]),
                     "closed_form": sigma / math.sqrt(k), "predicted": sigma_eff_1h / math.sqrt(k)}
                    for i, k in enumerate(task.one_hot_repeats)
                ],
            })  # fmt: skip
    _figure(run, task, results)
    metrics = {
        "study": "weight_extraction",
        "tile": [task.out_features, task.in_features],
        "weight_range": task.weight_range,
        "seeds": task.seeds,
        "paper": {"reads": PAPER_READS, "error_std": PAPER_ERROR_STD},
        "results": results,
    }
    columns, rows = _table(results)
    title = f"Weight extraction from a {task.out_features}x{task.in_features} tile ({task.seeds} seeds)"
    return TaskOutcome(metrics, {}, title, columns, rows)


def _table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    columns = ["periphery", "weights within ±", "method", "reads", "error std (mean ± sd over seeds)", "σ√(3/n) of the output noise",
               "predicted with converters", "ideal outputs past the ADC bound"]  # fmt: skip
    rows = []
    for r in results:
        for method in ("random", "one_hot"):
            for e in r[method]:
                label = "random U[-1,1]" if method == "random" else f"one-hot x{e['repeats']}"
                rows.append([r["periphery"], f"{r['weight_amplitude']:g}", label, str(e["reads"]),
                             f"{e['error_std']['mean']:.3g} ± {e['error_std']['std']:.1g}", f"{e['closed_form']:.3g}",
                             "-" if e["predicted"] is None else f"{e['predicted']:.3g}", f"{r['clipped_share']:.2%}"])  # fmt: skip
    return columns, rows


def _figure(run: RunFolder, task: WeightExtractionTask, results: list[dict[str, Any]]) -> None:
    """``error_vs_reads.png``: per amplitude, error std vs reads (log-log) per periphery, closed forms, one-hot."""
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    amplitudes = task.weight_amplitudes
    fig = Figure(figsize=(5.2 * len(amplitudes), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(amplitudes), squeeze=False)).ravel()
    colours = [f"C{i}" for i in range(10)]
    for ax, amplitude in zip(axes, amplitudes):
        for i, r in enumerate(x for x in results if x["weight_amplitude"] == amplitude):
            c = colours[i % 10]
            n = np.array([e["reads"] for e in r["random"]], dtype=float)
            mean = np.array([e["error_std"]["mean"] for e in r["random"]])
            ax.plot(n, mean, "o-", color=c, label=f"{r['periphery']}: random reads")
            if r["sigma_out"] > 0:
                ax.plot(n, r["sigma_out"] * np.sqrt(3 / n), ":", color=c, label=f"σ√(3/n), σ = {r['sigma_out']:.3g}")
            ax.plot(
                n,
                [np.nan if e["predicted"] is None else e["predicted"] for e in r["random"]],
                "--",
                color=c,
                alpha=0.6,
                label="with converters, finite n",
            )
            oh = r["one_hot"]
            ax.plot([e["reads"] for e in oh], [e["error_std"]["mean"] for e in oh], "s", mfc="none", ms=8, color=c,
                    label=f"{r['periphery']}: one-hot")  # fmt: skip
        ax.plot([PAPER_READS], [PAPER_ERROR_STD], "k*", ms=12, label="Gokmen 2021: 0.002 at 10,240")
        ax.set(xscale="log", yscale="log", xlabel="reads (mat-vecs)", ylabel="error std of the weights",
               title=f"{task.out_features}x{task.in_features} tile, |w| <= {amplitude:g}")  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="upper right", framealpha=0.8)
    save_figure(fig, run.file("error_vs_reads.png"))


def report_weight_extraction(runs: list[FinishedRun]) -> str:
    """Markdown: each run's table and, where 10,240 reads were taken, how it compares with the paper's 0.002."""
    from inmaterio.tasks.report import markdown_table

    sections = []
    for run in runs:
        m, table = run.metrics, run.metrics["table"]
        notes = []
        for r in m["results"]:
            at = [e for e in r["random"] if e["reads"] == PAPER_READS]
            if at:
                v = at[0]["error_std"]["mean"]
                verdict = "reaches" if v <= 1.25 * PAPER_ERROR_STD else "misses"
                notes.append(f"- {r['periphery']}, |w| <= {r['weight_amplitude']:g}: {v:.3g} after {PAPER_READS:,} reads "
                             f"({verdict} the published {PAPER_ERROR_STD}; output noise alone predicts "
                             f"{r['sigma_out'] * math.sqrt(3 / PAPER_READS):.3g}).")  # fmt: skip
        sections.append(
            f"### {table['title']} (`{run.path}`)\n\n"
            f"Least squares over random mat-vecs (Gokmen 2021, Eq. 4) vs one-hot reads; weight range "
            f"{m['weight_range']:g}. {run.record.get('wall_s', 0.0) / 60:.1f} min wall; "
            f"`inmaterio run {run.path / 'config.yaml'} --out {run.path}`.\n\n"
            + markdown_table(table["columns"], table["rows"])
            + ("\n\n" + "\n".join(notes) if notes else "")
            + f"\n\n![error vs reads]({run.path / 'error_vs_reads.png'})"
        )
    return "\n\n".join(sections)
