"""EP gradient estimates against the exact gradient: error vs beta, and the slopes of the one-sided and symmetric estimators.

Command (from the repository root)::

    python benchmarks/ep/gradient_check.py --seeds 5

For each seed, a layered circuit (3 inputs and their inverses, 2 learnable
bias sources, a Dense layer of 6 nodes with Shockley diodes both ways, bidirectional
amplifiers of gain 4 and current gain 1/4, a Dense layer of 4 outputs read
differentially, MSE loss; 8 random samples) is solved with tight
tolerances. The exact batch-mean gradient comes from implicit
differentiation of the free equilibrium
(:func:`inmaterio.circuits.ep.implicit_gradients`, itself checked against
finite differences in ``tests/test_circuits_ep.py``). For every beta the
relative error ``||g_EP - g|| / ||g||`` over all parameters is recorded for
the one-sided and symmetric estimators; the slope is fitted on the beta
range above the float64 noise floor. Writes ``results/gradient_check.md``
and ``results/gradient_check.png``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from inmaterio.circuits import (
    Amplifier,
    Bias,
    Concatenate,
    Dense,
    Diodes,
    Input,
    Model,
    ShockleyDiode,
    SolverOptions,
    ep_gradients,
    implicit_gradients,
    output_loss,
)
from inmaterio.fileio import atomic_write_text
from inmaterio.plots import save_figure

TIGHT = SolverOptions(reltol=1e-13, vntol_v=1e-15)
BETAS = [10.0**e for e in np.arange(-4.0, -10.5, -0.5)]
#: Fit the slopes where the error is well above the float64 noise floor.
FIT_RANGE = (1e-8, 1e-5)


def network(seed: int) -> Model:
    x = Input(3, inverted=True, name="x")
    b = Bias([0.5, -0.5], learnable=True, name="b")
    h = Dense(6, name="h", init_s=(1e-6, 1e-5))(Concatenate()([x, b]))
    h = Diodes(ShockleyDiode(), orientation="both", bias_v=(0.1, 0.1), name="d")(h)
    h = Amplifier(4.0, name="amp")(h)
    y = Dense(4, name="y", init_s=(1e-6, 1e-5))(Concatenate()([h, b]))
    return Model(x, y, seed=seed)


def relative_error(est: dict, ref: dict) -> float:
    num = sum(((est[k] - ref[k]) ** 2).sum().item() for k in ref)
    den = sum((ref[k] ** 2).sum().item() for k in ref)
    return math.sqrt(num / den)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    loss = output_loss("mse", readout_kind="differential", target_v=0.2)
    errors = {v: np.zeros((args.seeds, len(BETAS))) for v in ("one-sided", "symmetric")}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        model = network(seed)
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(8, 3, generator=g, dtype=torch.float64) - 0.5
        t = torch.randint(0, 2, (8,), generator=g)
        ref = implicit_gradients(model, x, t, loss, options=TIGHT)
        for j, beta in enumerate(BETAS):
            for variant in errors:
                est = ep_gradients(model, x, t, loss, beta=float(beta), variant=variant, options=TIGHT)
                errors[variant][seed, j] = relative_error(est.gradients, ref)
    wall = time.perf_counter() - t0
    betas = np.array(BETAS)
    in_fit = (betas >= FIT_RANGE[0]) & (betas <= FIT_RANGE[1])
    slopes = {}
    for variant, e in errors.items():
        med = np.median(e, axis=0)
        ok = in_fit & (med > 1e-11)
        slopes[variant] = np.polyfit(np.log10(betas[ok]), np.log10(med[ok]), 1)[0]

    lines = [
        "# EP gradient check: error vs beta",
        "",
        f"Command: `python benchmarks/ep/gradient_check.py --seeds {args.seeds}` ({wall:.1f} s, 1 thread). "
        "Relative error of the EP estimate against the exact gradient (implicit differentiation), "
        "median over seeds; slopes fitted on log10(error) vs log10(beta) for beta in "
        f"[{FIT_RANGE[0]:g}, {FIT_RANGE[1]:g}] S.",
        "",
        "| beta (S) | one-sided | symmetric |",
        "| --- | --- | --- |",
    ]
    for j, beta in enumerate(BETAS):
        lines.append(f"| {beta:.1e} | {np.median(errors['one-sided'][:, j]):.2e} | {np.median(errors['symmetric'][:, j]):.2e} |")
    lines += [
        "",
        f"Slopes: one-sided **{slopes['one-sided']:.2f}** (theory 1), symmetric **{slopes['symmetric']:.2f}** (theory 2).",
        "",
        "![error vs beta](gradient_check.png)",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "gradient_check.md", "\n".join(lines))
    print("\n".join(lines))

    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for variant, e in errors.items():
        ax.loglog(betas, np.median(e, axis=0), "o-", label=f"{variant} (slope {slopes[variant]:.2f})")
    ax.set_xlabel("beta (S)")
    ax.set_ylabel("relative error of the EP gradient")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, args.out / "gradient_check.png")


if __name__ == "__main__":
    main()
