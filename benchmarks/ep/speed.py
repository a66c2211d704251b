"""Milliseconds per sample of EP's free + nudged phases: the native Newton solver against ngspice, one thread each.

Command (from the repository root; prints markdown tables and writes ``results/speed.md``; progress on
stderr; about 10 minutes on a busy 2-core machine, most of it ngspice at MNIST size, ~20 s CPU per ``op``)::

    nice -n 10 python benchmarks/ep/speed.py --spice-samples-mnist 2

Networks (random inputs in [-0.5, 0.5] V, conductances from the models' seeded initialisation):

* ``iris``: EBANA's Iris network, 4 inputs and their inverses, 2 bias sources
  (+1 V, -1 V), Dense to 10 hidden nodes with two Shockley diodes each
  (series bias 0.1 V) and bidirectional amplifiers (gain 4), Dense (with the
  biases) to 6 outputs (4x2+2-10-6);
* ``mnist``: 784 inputs and inverses, the same biases, 100 hidden nodes as
  above, 10 outputs (784x2+2-100-10, Kendall et al. 2020's size);
* a size sweep of the MNIST-style network with 10..300 hidden nodes.

One EP sample = a free phase and one nudged phase (output currents
``-beta dL/dV``, MSE loss), as EBANA runs it. Every solver gets the same
circuits in the same run:

* *native*: :func:`~inmaterio.circuits.solve.native.solve_dc` solves both
  phases of the whole batch at once (the nudged one warm-started from the
  free one and reusing its Jacobian factorisation, as EP does), the time
  divided by the batch; also the full :func:`~inmaterio.circuits.ep.ep_gradients`
  step (solves plus gradients);
* *ngspice, best driver*: the shared library with the circuit kept loaded,
  sample by sample as EBANA runs EP (free phase, nudged phase, next sample:
  one batch of interleaved circuits), the values that change set by
  ``alter``, one ``op`` per phase, the results read through ngspice's data
  callback and the result set destroyed after every operating point (the
  default of :meth:`~inmaterio.circuits.solve.ngspice.NgspiceShared.solve`).
  The deck is loaded once per pass; that load is timed on its own (its own
  column) and left out of the time per sample: a training run loads it once
  for many samples, while here it would be shared by a handful at MNIST size;
* *ngspice, kept result sets*: the same, but result sets destroyed only
  every 200 operating points and at the end of each batch (inmaterio's
  driver before 2026-12), to measure what keeping them costs.

A second table times one ``op`` at Iris size against the number of result
sets ngspice keeps (``destroy_every`` 1 .. 500, and a fresh deck per
operating point as EBANA loads it), on the same 500 circuits (each driver
in a fresh process, the better of two passes), checking that
the answers are identical. An extra line times the layered ideal-diode solver
(:func:`~inmaterio.circuits.solve.layered.solve_layered`) on a layered
784x2-100-10 network (free phase and nudged phases at +beta and -beta,
warm-started from the free one, as ``benchmarks/layered_solver_scaling.py``
sets it up): a *different circuit* (ideal diodes, no amplifiers), shown for
scale, not as the same comparison.

Threads: one torch thread (``torch.set_num_threads(1)``); numba's compiled
small-circuit path is single-threaded; ngspice runs with ``num_threads=1``
(set by :class:`~inmaterio.circuits.solve.ngspice.NgspiceShared`). The
1-minute load average of the machine is recorded for every row.
Times are CPU times of the process (both sides run in one thread, so
time lost to other jobs on the machine is not counted), with the wall-clock
times of the same runs beside them; each the best of several passes
(native 3; ngspice 3 at Iris batch 105, 1 on 2048 of the 4096 circuits of
the throughput batch and at MNIST size, where a pass takes minutes). Every
ngspice measurement runs in a fresh process (spawned, same niceness):
kept result sets leave libngspice slower for the rest of its process, which
would otherwise handicap whatever driver runs after them. The size sweep
runs ngspice with the best driver only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import torch

import inmaterio
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
from inmaterio.circuits.netlist import Circuit
from inmaterio.circuits.solve.layered import LayeredNetwork, diode_boxes, solve_layered
from inmaterio.circuits.solve.ngspice import NgspiceShared, ngspice_available, to_netlist
from inmaterio.fileio import atomic_write_text

BETA = 1e-7
#: The old driver's limit: result sets destroyed every 200 operating points (and at the end of each batch).
KEPT = 200
#: The layered network of ``benchmarks/layered_solver_scaling.py``: conductance scale (S) and nudging (S).
LAYERED_G_S = 1e-4
LAYERED_BETA_S = 1e-5
LAYERED_TOL_V = 1e-10


def layered(n_inputs: int, hidden: int, outputs: int, seed: int = 0) -> Model:
    """EBANA's layered network: inputs and inverses + biases -> Dense -> diodes both ways -> amplifiers -> Dense."""
    x = Input(n_inputs, inverted=True, voltage_range_v=(-1.0, 1.0), name="x")
    b = Bias([1.0, -1.0], name="b")
    h = Dense(hidden, init_s=(1e-7, 2e-6), name="h")(Concatenate()([x, b]))
    h = Diodes(ShockleyDiode(), orientation="both", bias_v=(0.1, 0.1), name="d")(h)
    h = Amplifier(4.0, name="amp")(h)
    y = Dense(outputs, init_s=(1e-7, 2e-6), name="y")(Concatenate()([h, b]))
    return Model(x, y, seed=seed)


def _best(fn, repeats: int) -> tuple[float, float]:
    """The smallest CPU time and the smallest wall time (s) of ``repeats`` calls of ``fn``."""
    cpu = wall = float("inf")
    for _ in range(repeats):
        c, t = time.process_time(), time.perf_counter()
        fn()
        cpu, wall = min(cpu, time.process_time() - c), min(wall, time.perf_counter() - t)
    return cpu, wall


def _load() -> float:
    return os.getloadavg()[0]


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _spice_job(circuit: Circuit, destroy_every: int, mode: str, passes: int, warmup: Circuit) -> dict:
    """Solve the batch ``circuit`` with ngspice's shared library ``passes`` times (meant for a fresh process).

    Returns the smallest CPU and wall times of a pass (s), the CPU and wall time (s) of exporting and loading
    the deck of the first circuit once (what every :meth:`NgspiceShared.solve` in shared mode starts with),
    and the node voltages ``(batch, n_nodes)`` (V). ``warmup`` is solved first, untimed (library start-up).
    """
    torch.set_num_threads(1)
    shared = NgspiceShared.get()
    shared.solve(warmup, mode=mode, destroy_every=destroy_every)
    c, t = time.process_time(), time.perf_counter()
    shared.load(to_netlist(circuit, 0))
    load_cpu, load_wall = time.process_time() - c, time.perf_counter() - t
    cpu = wall = float("inf")
    voltages = None
    for _ in range(passes):
        c, t = time.process_time(), time.perf_counter()
        voltages = shared.solve(circuit, mode=mode, destroy_every=destroy_every).voltages_v
        cpu, wall = min(cpu, time.process_time() - c), min(wall, time.perf_counter() - t)
    return {"cpu_s": cpu, "wall_s": wall, "load_cpu_s": load_cpu, "load_wall_s": load_wall, "voltages_v": voltages}


def _fresh_process(fn, *args):
    """``fn(*args)`` in a new Python process: kept result sets leave ngspice slower for the rest of its process
    (measured: the best driver ran 10-25% slower after 2000 operating points with kept result sets), so every
    ngspice measurement starts from a fresh library."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}, load {_load():.2f}] {message}", file=sys.stderr, flush=True)


def measure(model: Model, batch: int, n_spice: int, spice_repeats: int, repeats: int = 3, kept: bool = True) -> dict:
    """One row: native and ngspice ms per sample (free + nudged) on the same circuits.

    ``n_spice`` of the ``batch`` samples go through ngspice (0: none), with the best driver and (``kept``)
    with kept result sets, ``spice_repeats`` passes each.
    """
    row = {"load_start": _load()}
    g = torch.Generator().manual_seed(0)
    n_in = model.input_layers[0].n_features
    x = torch.rand(batch, n_in, generator=g, dtype=torch.float64) - 0.5
    y = torch.randint(0, model.n_outputs, (batch,), generator=g)
    loss = output_loss("mse", target_v=0.1)
    free_c = model.circuit(x)
    free = solve_dc(free_c)  # warm-up (caches the topology)
    ep_gradients(model, x, y, loss, beta=BETA, variant="one-sided")
    currents = -BETA * torch.autograd.functional.jacobian(lambda v: loss(v, y).sum(), model.output_voltages(free))
    nudged_c = model.circuit(x, currents)

    def native_phases():  # as EP runs them: the nudged phase reuses the free phase's factorisation
        f = solve_dc(free_c, source_currents=False)
        solve_dc(nudged_c, initial_v=f.voltages_v, reuse=f, source_currents=False)

    cpu, wall = _best(native_phases, repeats)
    step_cpu, step_wall = _best(lambda: ep_gradients(model, x, y, loss, beta=BETA, variant="one-sided"), repeats)
    row.update(
        nodes=free_c.n_nodes,
        resistors=len(free_c.resistor_nodes),
        batch=batch,
        native_ms=1e3 * cpu / batch,
        native_wall_ms=1e3 * wall / batch,
        native_step_ms=1e3 * step_cpu / batch,
        native_step_wall_ms=1e3 * step_wall / batch,
    )
    if n_spice and ngspice_available("shared"):
        # EP sample by sample, as EBANA runs it: free phase, nudged phase, next sample; one batch of 2 n circuits
        # (the same topology, per-circuit input voltages and output currents), so the deck is loaded once a pass
        free_ia = free_c.current_a.expand(batch, -1) if free_c.current_a.dim() == 1 else free_c.current_a
        interleaved = free_c.with_values(
            source_v=torch.stack([free_c.source_v[:n_spice], nudged_c.source_v[:n_spice]], 1).flatten(0, 1),
            current_a=torch.stack([free_ia[:n_spice], nudged_c.current_a[:n_spice]], 1).flatten(0, 1),
        )
        out: dict[int, torch.Tensor] = {}
        for name, every in (("spice", 1), ("spice_kept", KEPT))[: 2 if kept else 1]:
            res = _fresh_process(_spice_job, interleaved, every, "shared", spice_repeats, model.circuit(x[:1]))
            # the one deck load of a pass is left out: a training run loads it once for many samples
            row[f"{name}_ms"] = 1e3 * (res["cpu_s"] - res["load_cpu_s"]) / n_spice
            row[f"{name}_wall_ms"] = 1e3 * (res["wall_s"] - res["load_wall_s"]) / n_spice
            row[f"{name}_load_ms"] = 1e3 * res["load_cpu_s"]
            out[every] = res["voltages_v"][0::2]
            _progress(f"{free_c.n_nodes} nodes, ngspice destroy_every={every}: {row[f'{name}_ms']:.3g} ms/sample CPU")
        row.update(
            n_spice=n_spice,
            spice_repeats=spice_repeats,
            max_dv=(out[1] - free.voltages_v[:n_spice]).abs().max().item(),
            drivers_identical=torch.equal(out[1], out[KEPT]) if kept else None,
        )
    row["load_end"] = _load()
    _progress(f"{free_c.n_nodes} nodes, batch {batch}: native {row['native_ms']:.3g} ms/sample CPU")
    return row


def driver_table(model: Model, n: int, kept: tuple[int, ...], passes: int = 2) -> list[dict]:
    """ms per ``op`` (free phase) at Iris size against the result sets kept, and with a fresh deck per op.

    Every driver solves the same ``n`` circuits in a fresh process, ``passes`` times; the best pass counts.
    """
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, model.input_layers[0].n_features, generator=g, dtype=torch.float64) - 0.5
    circuit, warmup = model.circuit(x), model.circuit(x[:1])
    rows, reference = [], None
    for label, every, mode in [(f"destroy_every={k}", k, "shared") for k in kept] + [("reload", 1, "reload")]:
        load = _load()
        res = _fresh_process(_spice_job, circuit, every, mode, passes, warmup)
        v = res["voltages_v"]
        reference = v if reference is None else reference
        rows.append(
            {
                "driver": label,
                "ms_per_op": 1e3 * res["cpu_s"] / n,
                "wall_ms_per_op": 1e3 * res["wall_s"] / n,
                "identical": torch.equal(v, reference),
                "load": load,
            }
        )
        _progress(f"driver {label}: {rows[-1]['ms_per_op']:.3g} ms/op CPU")
    return rows


def layered_solver(batch: int, hidden: int = 100, repeats: int = 3) -> dict:
    """ms per sample of free + nudged (+beta, -beta) phases of the layered ideal-diode solver, 784x2-hidden-10."""
    load = _load()
    g = torch.Generator().manual_seed(hidden)
    sizes = [2 * 784, hidden, 10]
    weights = [
        2 * LAYERED_G_S / sizes[k] * torch.rand(sizes[k + 1], sizes[k], generator=g, dtype=torch.float64)
        for k in range(len(sizes) - 1)
    ]
    net = LayeredNetwork(weights, None, [diode_boxes(hidden, "split", lower_v=0.0, upper_v=0.0), None])
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(batch, 784, generator=g, dtype=torch.float64)
    x = torch.cat([pixels, -pixels], 1)
    target = 0.1 * torch.nn.functional.one_hot(torch.randint(0, 10, (batch,), generator=g), 10).to(torch.float64)
    sweeps: list[int] = []

    def phases():  # as the DRN trainer runs them: nudged phases start from the free state and reuse its input drive
        free = solve_layered(x, net, tol_v=LAYERED_TOL_V, kkt=False)
        more = {"v_init": free.voltages_v, "input_drive_a": free.input_drive_a, "tol_v": LAYERED_TOL_V, "kkt": False}
        plus = solve_layered(x, net, beta=LAYERED_BETA_S, target=target, **more)
        minus = solve_layered(x, net, beta=-LAYERED_BETA_S, target=target, **more)
        sweeps[:] = [free.sweeps, plus.sweeps, minus.sweeps]

    phases()  # warm-up
    cpu, wall = _best(phases, repeats)
    return {
        "ms": 1e3 * cpu / batch,
        "wall_ms": 1e3 * wall / batch,
        "sweeps": list(sweeps),
        "conductances": net.n_conductances,
        "batch": batch,
        "load": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spice-samples-mnist", type=int, default=2, help="samples solved by ngspice on the MNIST network")
    parser.add_argument("--driver-ops", type=int, default=500, help="operating points per driver in the result-set table")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    if not ngspice_available("shared"):
        print("libngspice not found (apt-get install libngspice0): timing the native solver only")
    iris, mnist = layered(4, 10, 6), layered(784, 100, 10)
    iris_label, mnist_label = "iris 4x2+2-10-6", "mnist 784x2+2-100-10"
    rows = {
        f"{iris_label}, batch 105 (the training set)": measure(iris, batch=105, n_spice=105, spice_repeats=3),
        f"{iris_label}, batch 4096 (throughput)": measure(iris, batch=4096, n_spice=2048, spice_repeats=1),
        f"{mnist_label}, batch 256": measure(mnist, batch=256, n_spice=args.spice_samples_mnist, spice_repeats=1),
    }
    drn = layered_solver(batch=256)
    _progress(f"layered solver: {drn['ms']:.3g} ms/sample CPU")
    drivers = driver_table(iris, args.driver_ops, (1, 10, 50, KEPT, args.driver_ops)) if ngspice_available("shared") else []
    sweep = {
        h: measure(layered(784, h, 10), batch=256, n_spice=1 if h <= 30 else 0, spice_repeats=1, kept=False)
        for h in (10, 30, 100, 300)
    }
    wall = time.perf_counter() - t0
    assert torch.get_num_threads() == 1

    def fmt(v, spec=".3g"):
        return "-" if v is None else format(v, spec)

    def ratio(a, b):
        return "-" if a is None else f"{a / b:,.0f}x"

    command = f"nice -n 10 python benchmarks/ep/speed.py --spice-samples-mnist {args.spice_samples_mnist}"
    if args.driver_ops != 500:
        command += f" --driver-ops {args.driver_ops}"
    lines = [
        "# EP phases per sample: native Newton solver vs ngspice (best driver and kept result sets)",
        "",
        f"Command: `{command}`",
        "",
        f"Date: {started:%Y-%m-%d %H:%M} UTC; {wall:.0f} s in all. Machine: {_cpu()}, {os.cpu_count()} cores, shared with "
        "other jobs (1-minute load average with every row; above 2 the processes queue for the 2 cores). inmaterio "
        f"{inmaterio.__version__}, torch {torch.__version__} with 1 thread, numba's small-circuit path single-threaded; "
        "ngspice-39 shared library with num_threads=1, each ngspice measurement in a fresh process (kept result sets "
        "slow libngspice down for the rest of its process).",
        "",
        "Free phase + one nudged phase per sample (one-sided EP, beta 1e-7 S, MSE), every solver on the same circuits in "
        "this one run. *Best driver*: the result set destroyed after every operating point (the library's default). "
        f"*Kept*: destroyed every {KEPT} operating points and at the end of each batch (inmaterio's driver before). "
        "Times are **CPU time** of the process (one thread on both sides, so the time the other jobs take the core "
        "from us is not counted; the wall-clock times of the same runs follow), the best of several passes: native 3, "
        "ngspice as shown (a pass = its samples one after the other, free then nudged phase of each, in one loaded "
        "deck; the one deck load of a pass, timed on its own in the last-but-one column, is left out).",
        "",
        "| network, batch | nodes | resistors | native: free + nudged (ms/sample) | native: full EP step (ms/sample) | "
        "ngspice, best driver (ms/sample) | ngspice, kept result sets (ms/sample) | speed-up vs best driver | "
        "speed-up vs kept | kept / best | ngspice samples x passes | max dV native-ngspice (V) | "
        "ngspice deck load, left out (ms) | load avg (start-end) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        best, kept = r.get("spice_ms"), r.get("spice_kept_ms")
        passes = f"{r['n_spice']} x {r['spice_repeats']}" if best else "-"
        lines.append(
            f"| {name} | {r['nodes']} | {r['resistors']} | {r['native_ms']:.4f} | {r['native_step_ms']:.4f} | {fmt(best)} | "
            f"{fmt(kept)} | {ratio(best, r['native_ms'])} | {ratio(kept, r['native_ms'])} | "
            f"{fmt(kept / best if best else None, '.2f')} | {passes} | {fmt(r.get('max_dv'), '.1e')} | "
            f"{fmt(r.get('spice_load_ms'))} | {r['load_start']:.2f}-{r['load_end']:.2f} |"
        )
    identical = [r["drivers_identical"] for r in rows.values() if r.get("drivers_identical") is not None]
    if identical:
        lines += [
            "",
            f"Node voltages from the two ngspice drivers bit-identical in every row: {'yes' if all(identical) else '**no**'}.",
        ]
    lines += [
        "",
        "Wall-clock times of the same runs (ms/sample; inflated by the other jobs, each side by its own share):",
        "",
        "| network, batch | native: free + nudged | native: full EP step | ngspice, best driver | ngspice, kept | "
        "speed-up vs best driver | speed-up vs kept |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        best, kept = r.get("spice_wall_ms"), r.get("spice_kept_wall_ms")
        lines.append(
            f"| {name} | {r['native_wall_ms']:.4f} | {r['native_step_wall_ms']:.4f} | {fmt(best)} | {fmt(kept)} | "
            f"{ratio(best, r['native_wall_ms'])} | {ratio(kept, r['native_wall_ms'])} |"
        )
    aims = []
    iris_rows = [r for k, r in rows.items() if k.startswith(iris_label) and r.get("spice_ms")]
    mnist_row = rows[f"{mnist_label}, batch 256"]
    if iris_rows:
        got = ", ".join(
            f"{r['spice_ms'] / r['native_ms']:,.0f}x at batch {r['batch']} (wall clock {r['spice_wall_ms'] / r['native_wall_ms']:,.0f}x)"
            for r in iris_rows
        )
        met = all(r["spice_ms"] / r["native_ms"] >= 100 for r in iris_rows)
        aims.append(f"- Aim >= 100x ngspice (best driver) per sample at Iris size: {'met' if met else '**not met**'}: {got}.")
    if mnist_row.get("spice_ms"):
        sp, sp_wall = mnist_row["spice_ms"] / mnist_row["native_ms"], mnist_row["spice_wall_ms"] / mnist_row["native_wall_ms"]
        aims.append(
            f"- Aim >= 10^4x at MNIST size: {'met' if sp >= 1e4 else '**not met**'}: {sp:,.0f}x (wall clock {sp_wall:,.0f}x)."
        )
    if aims:
        lines += ["", "Against the aims of issue 17 (CPU time):", "", *aims]
    lines += [
        "",
        "Different circuit, for scale only (not the same comparison): the layered ideal-diode solver "
        f"(`solve_layered`, block coordinate descent) on a layered 784x2-100-10 network with ideal diodes at the "
        f"hidden nodes and no amplifiers or bias sources ({drn['conductances']:,} conductances), batch {drn['batch']}, "
        f"free + nudged at +beta and -beta (beta {LAYERED_BETA_S:g} S, warm-started from the free state, tol "
        f"{LAYERED_TOL_V:g} V; sweeps {' / '.join(map(str, drn['sweeps']))}): **{drn['ms']:.4f} ms/sample** CPU "
        f"({drn['wall_ms']:.4f} wall clock; load {drn['load']:.2f}). ngspice has no ideal diode, so there is no "
        "ngspice number for this circuit.",
    ]
    if drivers:
        lines += [
            "",
            f"ngspice per operating point at Iris size against the result sets it keeps ({args.driver_ops} free-phase "
            "circuits, the same for every driver, each in a fresh process, the better of two passes; *reload*: "
            "`remcirc` and a new deck per operating point, as EBANA does):",
            "",
            "| driver | CPU ms per op | vs destroy_every=1 | wall ms per op | node voltages identical to destroy_every=1 | load avg |",
            "| --- | ---: | ---: | ---: | --- | ---: |",
        ]
        base = drivers[0]["ms_per_op"]
        for d in drivers:
            lines.append(
                f"| {d['driver']} | {d['ms_per_op']:.3f} | {d['ms_per_op'] / base:.2f}x | {d['wall_ms_per_op']:.3f} | "
                f"{'yes' if d['identical'] else 'NO'} | {d['load']:.2f} |"
            )
    lines += [
        "",
        "Size sweep (784x2+2 inputs, h hidden nodes, 10 outputs; batch 256; ngspice best driver, 1 sample; CPU time):",
        "",
        "| hidden | nodes | resistors | native free + nudged (ms/sample) | ngspice best driver (ms/sample) | load avg |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for h, r in sweep.items():
        lines.append(
            f"| {h} | {r['nodes']} | {r['resistors']} | {r['native_ms']:.3f} | {fmt(r.get('spice_ms'))} | {r['load_start']:.2f} |"
        )
    lines.append("")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "speed.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
