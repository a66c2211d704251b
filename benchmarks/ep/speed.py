"""Seconds per sample of the EP phases (free + one nudged): native batched solver vs ngspice, and growth with size.

Command (from the repository root; prints a markdown table, writes ``results/speed.md``)::

    python benchmarks/ep/speed.py

Networks (random inputs, conductances from the models' seeded initialisation):

* ``iris``: EBANA's Iris network, 4 inputs and their inverses, 2 bias sources
  (+1 V, -1 V), Dense to 10 hidden nodes with two Shockley diodes each
  (series bias 0.1 V) and bidirectional amplifiers (gain 4), Dense (with the
  biases) to 6 outputs;
* ``mnist``: 784 inputs and inverses, the same biases, 100 hidden nodes as
  above, 10 outputs (784x2-100-10, Kendall et al. 2020's size);
* a size sweep of the MNIST-style network with 10..300 hidden nodes.

The Iris network is timed with the 105 training samples as one batch and,
for the solver's throughput, with 4096 samples (ngspice's time per sample
does not depend on a batch).

One EP sample = a free phase and one nudged phase (output currents
``-beta dL/dV``, MSE loss), as EBANA runs it. *native*: both phases of a
whole batch solved at once by :func:`~inmaterio.circuits.solve.native.solve_dc`
(the nudged one warm-started from the free one and reusing its Jacobian
factorisation, as EP does), the time divided by the batch;
also the full :func:`~inmaterio.circuits.ep.ep_gradients` step (solves plus
gradients). *ngspice*: the same two circuits solved sample by sample through
the shared library with the circuit kept loaded and its sources changed by
``alter`` (``mode="shared"``, the fastest way), and reloading the deck per
sample as EBANA does (``mode="reload"``). The node voltages of both solvers
are compared (max |dV|). All runs in one process, one torch thread, so the
ratios are measured under the same load.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from inmaterio.circuits import (
    Amplifier,
    Bias,
    Concatenate,
    Dense,
    Diodes,
    Input,
    Model,
    ShockleyDiode,
    ep_gradients,
    output_loss,
    solve_dc,
)
from inmaterio.circuits.solve.ngspice import ngspice_available, solve_ngspice
from inmaterio.fileio import atomic_write_text

BETA = 1e-7


def layered(n_inputs: int, hidden: int, outputs: int, seed: int = 0) -> Model:
    x = Input(n_inputs, inverted=True, voltage_range_v=(-1.0, 1.0), name="x")
    b = Bias([1.0, -1.0], name="b")
    h = Dense(hidden, init_s=(1e-7, 2e-6), name="h")(Concatenate()([x, b]))
    h = Diodes(ShockleyDiode(), orientation="both", bias_v=(0.1, 0.1), name="d")(h)
    h = Amplifier(4.0, name="amp")(h)
    y = Dense(outputs, init_s=(1e-7, 2e-6), name="y")(Concatenate()([h, b]))
    return Model(x, y, seed=seed)


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(model: Model, batch: int, n_spice: int, reload: bool, repeats: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    n_in = model.input_layers[0].n_features
    x = torch.rand(batch, n_in, generator=g, dtype=torch.float64) - 0.5
    y = torch.randint(0, model.n_outputs, (batch,), generator=g)
    loss = output_loss("mse", target_v=0.1)
    free_c = model.circuit(x)
    free = solve_dc(free_c)  # warm-up (caches the topology)
    res = ep_gradients(model, x, y, loss, beta=BETA, variant="one-sided")
    currents = res.free.voltages_v.new_zeros(batch, len(model.output_ids))
    currents[:] = -BETA * torch.autograd.functional.jacobian(lambda v: loss(v, y).sum(), model.output_voltages(free))
    nudged_c = model.circuit(x, currents)

    def native_phases():  # as EP runs them: the nudged phase reuses the free phase's factorisation
        f = solve_dc(free_c, source_currents=False)
        solve_dc(nudged_c, initial_v=f.voltages_v, reuse=f, source_currents=False)

    t_native = _best(native_phases, repeats) / batch
    t_step = _best(lambda: ep_gradients(model, x, y, loss, beta=BETA, variant="one-sided"), repeats) / batch
    row = {
        "nodes": free_c.n_nodes,
        "resistors": len(free_c.resistor_nodes),
        "batch": batch,
        "native_ms": 1e3 * t_native,
        "native_step_ms": 1e3 * t_step,
    }
    if n_spice and ngspice_available("shared"):
        sub_f, sub_n = model.circuit(x[:n_spice]), model.circuit(x[:n_spice], currents[:n_spice])
        t = time.perf_counter()
        sf = solve_ngspice(sub_f, mode="shared")
        solve_ngspice(sub_n, mode="shared")
        row["ngspice_ms"] = 1e3 * (time.perf_counter() - t) / n_spice
        row["max_dv"] = (sf.voltages_v - free.voltages_v[:n_spice]).abs().max().item()
        if reload:
            t = time.perf_counter()
            solve_ngspice(sub_f, mode="reload")
            solve_ngspice(sub_n, mode="reload")
            row["ngspice_reload_ms"] = 1e3 * (time.perf_counter() - t) / n_spice
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spice-samples-mnist", type=int, default=2, help="samples solved by ngspice on the MNIST network")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    iris = layered(4, 10, 6)
    rows = {
        "iris (4x2+2 - 10 - 6), batch 105 (the training set)": measure(iris, batch=105, n_spice=105, reload=True),
        "mnist (784x2+2 - 100 - 10)": measure(layered(784, 100, 10), batch=256, n_spice=args.spice_samples_mnist, reload=False),
    }
    wide = measure(iris, batch=4096, n_spice=0, reload=False)
    iris_row = rows["iris (4x2+2 - 10 - 6), batch 105 (the training set)"]
    rows["iris, batch 4096 (solver throughput)"] = {
        **wide,
        **{k: iris_row[k] for k in ("ngspice_ms", "ngspice_reload_ms", "max_dv") if k in iris_row},
    }
    sweep = {h: measure(layered(784, h, 10), batch=256, n_spice=1 if h <= 30 else 0, reload=False) for h in (10, 30, 100, 300)}
    wall = time.perf_counter() - t0

    def fmt(v, spec=".3g"):
        return "-" if v is None else format(v, spec)

    lines = [
        "# EP phases per sample: native batched solver vs ngspice",
        "",
        f"Command: `python benchmarks/ep/speed.py --spice-samples-mnist {args.spice_samples_mnist}` ({wall:.0f} s in all; "
        "1 torch thread; ngspice-39 shared library; shared 2-core VM, other jobs running, so compare the ratios).",
        "",
        "| network | nodes | resistors | native: free + nudged (ms/sample) | native: full EP step (ms/sample) | "
        "ngspice, kept loaded (ms/sample) | ngspice, reloaded (ms/sample) | speed-up (kept loaded / native) | max dV native-ngspice (V) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        sp = r.get("ngspice_ms")
        lines.append(
            f"| {name} | {r['nodes']} | {r['resistors']} | {r['native_ms']:.3f} | {r['native_step_ms']:.3f} | {fmt(sp)} | "
            f"{fmt(r.get('ngspice_reload_ms'))} | {fmt(sp / r['native_ms'] if sp else None, '.0f')}x | {fmt(r.get('max_dv'), '.1e')} |"
        )
    lines += [
        "",
        "Size sweep (784x2+2 inputs, h hidden nodes, 10 outputs; batch 256):",
        "",
        "| hidden | nodes | resistors | native free + nudged (ms/sample) | ngspice kept loaded (ms/sample) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for h, r in sweep.items():
        lines.append(f"| {h} | {r['nodes']} | {r['resistors']} | {r['native_ms']:.3f} | {fmt(r.get('ngspice_ms'))} |")
    lines.append("")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "speed.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
