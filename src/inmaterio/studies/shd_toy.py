r"""Toy dynamics of plain pulsed SGD vs Stochastic Hamiltonian Descent (Onen et al. 2022, Figs. 1-2).

M. Onen et al., "Neural network training with asymmetric crosspoint elements", Front. Artif. Intell.
5:891624 (2022). The algorithms and their equations are in :mod:`inmaterio.crossbars.shd`; the devices
are :mod:`inmaterio.crossbars.pulsed` configs (``device``: the asymmetric one, soft bounds by default,
used for SGD's array and for SHD's A and C arrays, A read relative to its symmetry point;
``symmetric_device``: a symmetric constant-step device for the undamped comparison).

Three parts, each vectorised over targets and replicates (every replicate its own devices and noise):

(a) 1-D noisy regression, :math:`E = (W - y)^2` with :math:`y = C_0 + \sigma\xi` (``noise_std``), for each
    target :math:`C_0` of ``targets`` (state units; the device's symmetry point :math:`w^*` is where
    soft bounds drift to). The final weight is the mean over the last ``average_last`` steps and the
    replicates. SGD settles between :math:`C_0` and :math:`w^*` (its error grows with
    :math:`C_0 - w^*`); SHD's stays near 0. The "SGD theory" column is the root of the mean drift of
    one SGD step with one pulse per unit of desired change (stochastic rounding, nominal device):
    :math:`E[x^+]\,\Delta^+(w) = E[x^-]\,\Delta^-(w)` with :math:`x \sim N(-2\eta(w - C_0), (2\eta\sigma)^2)`.
(b) SHD trajectories in the :math:`(\bar A, \bar C)` plane on the noise-free :math:`E = (C - C_0)^2`
    from :math:`(0, w^*)`: asymmetric ``device`` (decaying spiral) vs ``symmetric_device`` (an ellipse);
    the Hamiltonian :math:`H = E + \eta_C \bar A^2 / (2\eta_A)` at the end relative to its start.
(c) 2-D noisy linear regression: :math:`y = w_0\cdot x + \sigma\xi`, :math:`x \sim N(0, I_2)`,
    :math:`E = (y - w\cdot x)^2` per sample; the final :math:`\|w - w_0\|` of SGD and SHD.

``inmaterio run examples/shd_toy.yaml --out runs/shd_toy`` (about a minute on one thread).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from inmaterio.config import StrictModel
from inmaterio.crossbars.pulsed import (
    ConstantStepDevice,
    PulsedArray,
    PulsedDevice,
    SoftBoundsDevice,
    read_weights,
    sample_devices,
    step_sizes,
    symmetry_point,
)
from inmaterio.crossbars.shd import PulsedSGDConfig, SHDConfig, kinetic_energy, sgd_step, shd_step
from inmaterio.runs import RunFolder
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = ["ShdToyTask", "ShdToyConfig", "run_shd_toy", "report_shd_toy"]

F64 = torch.float64
# random streams, keyed by what they serve (seed * 100 + key)
_STREAMS = {"1d_sgd": 1, "1d_shd": 2, "phase_asymmetric": 3, "phase_symmetric": 4, "2d_sgd": 5, "2d_shd": 6}


class ShdToyTask(StrictModel):
    """The toy problems and the algorithms' settings.

    device : the asymmetric device (SGD's array; SHD's A, zero-shifted, and C arrays).
    symmetric_device : a symmetric device for part (b)'s undamped comparison.
    targets : optima C_0 of part (a), state units, inside the device's nominal range.
    noise_std : std of the targets' noise (parts a and c), weight units.
    sgd, shd : the algorithms of parts (a) and (c).
    phase_shd : SHD's settings for part (b) (larger rates: several turns of the spiral in ``phase_steps``).
    phase_target : C_0 of part (b).
    steps : iterations of parts (a) and (c); average_last : the last iterations averaged for the final weight.
    phase_steps : iterations of part (b).
    weights_2d : w_0 of part (c).
    replicates : independent device sets and noise streams per target.
    seed : the seed of every random stream.
    """

    type: Literal["shd_toy"]
    device: PulsedDevice = SoftBoundsDevice(w_min=-1.0, w_max=1.0, dw_min=0.005)
    symmetric_device: PulsedDevice = ConstantStepDevice(w_min=-1.0, w_max=1.0, dw_min=0.005)
    targets: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    noise_std: float = Field(0.5, ge=0, le=100)
    sgd: PulsedSGDConfig = PulsedSGDConfig(lr=0.01)
    shd: SHDConfig = SHDConfig(lr_a=0.01, lr_c=0.01)
    phase_shd: SHDConfig = SHDConfig(lr_a=0.04, lr_c=0.04)
    phase_target: float = 0.4
    steps: int = Field(4000, ge=2, le=10_000_000)
    average_last: int = Field(2000, ge=1)
    phase_steps: int = Field(1500, ge=1, le=10_000_000)
    weights_2d: tuple[float, float] = (0.5, -0.4)
    replicates: int = Field(100, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("targets")
    @classmethod
    def _some_targets(cls, targets: tuple[float, ...]) -> tuple[float, ...]:
        if not targets:
            raise ValueError("targets must list at least one optimum C_0")
        return targets

    @model_validator(mode="after")
    def _inside_the_range(self) -> ShdToyTask:
        lo, hi = self.device.w_min, self.device.w_max
        for name, values in (("targets", self.targets), ("phase_target", (self.phase_target,)), ("weights_2d", self.weights_2d)):
            outside = [v for v in values if not lo < v < hi]
            if outside:
                raise ValueError(f"{name} {outside} outside the device's range ({lo}, {hi})")
        if self.average_last > self.steps:
            raise ValueError(f"average_last {self.average_last} exceeds steps {self.steps}")
        return self


class ShdToyConfig(RunnableConfig):
    """An SHD toy study: the task and the torch threads (speed only)."""

    SPEED_ONLY = {"threads": True}

    task: ShdToyTask
    threads: int = Field(1, ge=1, le=256)


# --------------------------------------------------------------------------------------------------
# the three parts
# --------------------------------------------------------------------------------------------------


def _generator(task: ShdToyTask, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(task.seed * 100 + _STREAMS[stream])


def _a_device(device: PulsedDevice) -> PulsedDevice:
    """The A array's device: ``device`` read relative to its symmetry point."""
    return device.model_copy(update={"reference": "zero_shift"})


def _noisy_1d(task: ShdToyTask, algorithm: str) -> dict[str, Any]:
    """Part (a) for one algorithm: final weights (targets,) and the symmetry point."""
    g = _generator(task, f"1d_{algorithm}")
    targets = torch.tensor(task.targets, dtype=F64)[:, None].expand(len(task.targets), task.replicates).contiguous()
    shape = tuple(targets.shape)
    c_arr = sample_devices(task.device, shape, g, dtype=F64)
    c = symmetry_point(c_arr).clone()
    if algorithm == "shd":
        a_arr = sample_devices(_a_device(task.device), shape, g, dtype=F64)
        a = symmetry_point(a_arr).clone()
    total = torch.zeros(shape, dtype=F64)
    for step in range(task.steps):
        y = targets + task.noise_std * torch.randn(shape, generator=g, dtype=F64)
        grad = 2.0 * (read_weights(c_arr, c) - y)
        if algorithm == "sgd":
            c = sgd_step(c_arr, c, grad, task.sgd, g)
        else:
            a, c = shd_step(a_arr, a, c_arr, c, grad, task.shd, g)
        if step >= task.steps - task.average_last:
            total += read_weights(c_arr, c)
    final = total / task.average_last
    return {
        "final": final.mean(1).tolist(),
        "final_std": final.std(1).tolist() if task.replicates > 1 else [0.0] * len(task.targets),
    }


def _sgd_theory(task: ShdToyTask, c0: float) -> float:
    """Root of SGD's mean drift on the nominal device (module docstring, part a), by bisection."""
    arr = sample_devices(task.device.model_copy(update={"dw_min_dtod": 0.0, "up_down_dtod": 0.0, "w_min_dtod": 0.0,
                                                         "w_max_dtod": 0.0}), (1,), torch.Generator().manual_seed(0), dtype=F64)  # fmt: skip
    lr, s = task.sgd.lr, 2.0 * task.sgd.lr * task.noise_std

    def drift(w: float) -> float:
        up, down = (float(t[0]) for t in step_sizes(arr, torch.tensor([w], dtype=F64)))
        mu = -2.0 * lr * (w - c0)
        if s == 0:
            pos, neg = max(mu, 0.0), max(-mu, 0.0)
        else:
            z = mu / s
            pdf, cdf = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(z / math.sqrt(2)))
            pos, neg = mu * cdf + s * pdf, -mu * (1 - cdf) + s * pdf
        return pos * up - neg * down

    lo, hi = float(arr.w_min[0]), float(arr.w_max[0])
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if drift(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _phase_plane(task: ShdToyTask, device: PulsedDevice, stream: str) -> dict[str, Any]:
    """Part (b) for one device: the (A_read, C_read) trajectory and the Hamiltonian's decay."""
    g = _generator(task, stream)
    c_arr: PulsedArray = sample_devices(device, (1,), g, dtype=F64)
    a_arr: PulsedArray = sample_devices(_a_device(device), (1,), g, dtype=F64)
    a, c = symmetry_point(a_arr).clone(), symmetry_point(c_arr).clone()
    cfg, c0 = task.phase_shd, task.phase_target

    def energy() -> float:
        return float((read_weights(c_arr, c) - c0).square() + kinetic_energy(read_weights(a_arr, a), cfg))

    h0, path = energy(), [(float(read_weights(a_arr, a)), float(read_weights(c_arr, c)))]
    for _ in range(task.phase_steps):
        a, c = shd_step(a_arr, a, c_arr, c, 2.0 * (read_weights(c_arr, c) - c0), cfg, g)
        path.append((float(read_weights(a_arr, a)), float(read_weights(c_arr, c))))
    return {"path": path, "energy_ratio": energy() / h0, "final_error": abs(path[-1][1] - c0)}


def _noisy_2d(task: ShdToyTask, algorithm: str) -> dict[str, Any]:
    """Part (c) for one algorithm: the final error ||w - w_0|| per replicate and the mean path."""
    g = _generator(task, f"2d_{algorithm}")
    shape = (task.replicates, 2)
    w0 = torch.tensor(task.weights_2d, dtype=F64)
    c_arr = sample_devices(task.device, shape, g, dtype=F64)
    c = symmetry_point(c_arr).clone()
    if algorithm == "shd":
        a_arr = sample_devices(_a_device(task.device), shape, g, dtype=F64)
        a = symmetry_point(a_arr).clone()
    total, path = torch.zeros(shape, dtype=F64), []
    for step in range(task.steps):
        x = torch.randn(shape, generator=g, dtype=F64)
        y = x @ w0 + task.noise_std * torch.randn(task.replicates, generator=g, dtype=F64)
        w = read_weights(c_arr, c)
        grad = -2.0 * (y - (w * x).sum(1))[:, None] * x
        if algorithm == "sgd":
            c = sgd_step(c_arr, c, grad, task.sgd, g)
        else:
            a, c = shd_step(a_arr, a, c_arr, c, grad, task.shd, g)
        w = read_weights(c_arr, c)
        if step >= task.steps - task.average_last:
            total += w
        if step % max(1, task.steps // 200) == 0:
            path.append(w.mean(0).tolist())
    errors = (total / task.average_last - w0).norm(dim=1)
    return {"error_mean": errors.mean().item(), "error_max": errors.max().item(), "path": path}


def run_shd_toy(config: ShdToyConfig, run: RunFolder, *, progress: bool, prepared: None = None) -> TaskOutcome:
    """Run the three parts, write the figures, return the numbers and the part-(a) table."""
    task = config.task
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        w_sym = float(symmetry_point(sample_devices(task.device, (1,), torch.Generator().manual_seed(0), dtype=F64))[0])
        sgd, shd = _noisy_1d(task, "sgd"), _noisy_1d(task, "shd")
        rows_1d = [
            {
                "target": t, "distance": t - w_sym, "sgd_final": sgd["final"][i], "sgd_error": sgd["final"][i] - t,
                "sgd_theory_error": _sgd_theory(task, t) - t, "shd_final": shd["final"][i], "shd_error": shd["final"][i] - t,
                "sgd_final_std": sgd["final_std"][i], "shd_final_std": shd["final_std"][i],
            }
            for i, t in enumerate(task.targets)
        ]  # fmt: skip
        asymmetric = _phase_plane(task, task.device, "phase_asymmetric")
        symmetric = _phase_plane(task, task.symmetric_device, "phase_symmetric")
        reg = {"sgd": _noisy_2d(task, "sgd"), "shd": _noisy_2d(task, "shd")}
    finally:
        torch.set_num_threads(saved_threads)
    _figures(run, task, w_sym, rows_1d, asymmetric, symmetric, reg)
    metrics = {
        "study": "shd_toy",
        "symmetry_point": w_sym,
        "noisy_1d": rows_1d,
        "phase_plane": {
            name: {k: v for k, v in part.items() if k != "path"}
            for name, part in (("asymmetric", asymmetric), ("symmetric", symmetric))
        },
        "regression_2d": {name: {k: v for k, v in part.items() if k != "path"} for name, part in reg.items()},
    }
    columns, rows = _table(metrics)
    return TaskOutcome(metrics, {}, f"SGD vs SHD on {task.device.kind} devices (Onen et al. 2022)", columns, rows)


def _table(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    columns = ["C0 - w_sym", "SGD error", "SGD theory", "SHD error"]
    rows = [[f"{r['distance']:+.2f}", f"{r['sgd_error']:+.4f}", f"{r['sgd_theory_error']:+.4f}", f"{r['shd_error']:+.4f}"]
            for r in metrics["noisy_1d"]]  # fmt: skip
    return columns, rows


def _figures(run: RunFolder, task: ShdToyTask, w_sym: float, rows_1d, asymmetric, symmetric, reg) -> None:
    """``noisy_1d.png``, ``phase_plane.png``, ``regression_2d.png``."""
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    fig = Figure(figsize=(5, 3.8), layout="constrained")
    ax = fig.subplots()
    d = [r["distance"] for r in rows_1d]
    ax.errorbar(d, [r["sgd_error"] for r in rows_1d], yerr=[r["sgd_final_std"] for r in rows_1d], fmt="o-", label="pulsed SGD")
    ax.plot(d, [r["sgd_theory_error"] for r in rows_1d], "k--", label="SGD, fixed point of the mean drift")
    ax.errorbar(d, [r["shd_error"] for r in rows_1d], yerr=[r["shd_final_std"] for r in rows_1d], fmt="s-", label="SHD")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set(xlabel="C0 - symmetry point", ylabel="final weight - C0", title=f"1-D noisy regression, noise std {task.noise_std}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, run.file("noisy_1d.png"))

    fig = Figure(figsize=(9, 4), layout="constrained")
    for ax, (name, part) in zip(fig.subplots(1, 2), (("asymmetric " + task.device.kind, asymmetric),
                                                      ("symmetric " + task.symmetric_device.kind, symmetric))):  # fmt: skip
        p = np.array(part["path"])
        ax.plot(p[:, 0], p[:, 1], lw=0.7)
        ax.plot([0.0], [task.phase_target], "r*", ms=10, label="(0, C0)")
        ax.set(xlabel="A (read)", ylabel="C (read)", title=f"{name}: H_end / H_0 = {part['energy_ratio']:.3f}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, run.file("phase_plane.png"))

    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.subplots()
    for name, part in reg.items():
        p = np.array(part["path"])
        ax.plot(p[:, 0], p[:, 1], label=f"{name.upper()}: final error {part['error_mean']:.4f}")
    ax.plot([task.weights_2d[0]], [task.weights_2d[1]], "r*", ms=10, label="w0")
    ax.plot([w_sym], [w_sym], "kx", label="symmetry point")
    ax.set(xlabel="w1", ylabel="w2", title="2-D noisy regression (mean over replicates)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, run.file("regression_2d.png"))


def report_shd_toy(runs: list[FinishedRun]) -> str:
    """Markdown: per run, the part-(a) table and the numbers of parts (b) and (c)."""
    from inmaterio.tasks.report import markdown_table

    sections = []
    for run in runs:
        m, table = run.metrics, run.metrics["table"]
        pp, reg = m["phase_plane"], m["regression_2d"]
        sections.append(
            f"### {table['title']} (`{run.path}`)\n\n"
            f"Symmetry point {m['symmetry_point']:+.3f}. Part (a), 1-D noisy regression: final weight minus C0.\n\n"
            + markdown_table(table["columns"], table["rows"])
            + f"\n\nPart (b), SHD in the A-C plane: H_end / H_0 = {pp['asymmetric']['energy_ratio']:.4f} (asymmetric), "
            f"{pp['symmetric']['energy_ratio']:.4f} (symmetric). Part (c), 2-D noisy regression, mean final "
            f"||w - w0||: SGD {reg['sgd']['error_mean']:.4f}, SHD {reg['shd']['error_mean']:.4f}.\n\n"
            f"![1-D]({run.path / 'noisy_1d.png'}) ![phase plane]({run.path / 'phase_plane.png'}) "
            f"![2-D]({run.path / 'regression_2d.png'})"
        )
    return "\n\n".join(sections)
