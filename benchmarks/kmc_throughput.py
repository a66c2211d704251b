"""Kinetic Monte Carlo throughput of the virtual DNPU.

Command (prints a markdown table; numbers go to benchmarks/RESULTS.md):

    python benchmarks/kmc_throughput.py

Measures, on the default HoppingDevice (200 acceptors, 3 donors, 8 electrodes):

1. hops per second per core (1 numba thread), and with all cores (parallel
   operating points), over random operating points in the voltage ranges;
2. operating points per second at a given relative error (the simulation runs
   blocks until the standard error falls below rel_tolerance * |I|);
3. the variance gain of the expected-flux current estimator over counting
   hops through the readout: the same runs repeated with fresh seeds, the
   ratio of the two estimators' variances is the factor of hops saved.

Reference for scale (same kind of 2-core machine, from the issue): kmc_dn
(Go back end) does 1.36e5 hops/s for 200 acceptors and 8 electrodes.
"""

from __future__ import annotations

import os
import time

import numba
import numpy as np

from inmaterio.devices.hopping import HoppingDevice

KMC_DN_HOPS_PER_S = 1.36e5


def random_points(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.2, 0.6, (n, 7))


def hops_per_second(threads: int, n_points: int) -> float:
    dev = HoppingDevice(n_threads=threads, equilibration_hops=20000, block_hops=20000, min_blocks=4, max_blocks=4)
    dev.simulate(random_points(2, 99))  # compile / warm up
    start = time.perf_counter()
    res = dev.simulate(random_points(n_points))
    return res.hops.sum() / (time.perf_counter() - start)


def points_per_second(rel_tolerance: float, n_points: int, threads: int) -> tuple[float, float, float]:
    dev = HoppingDevice(
        n_threads=threads, equilibration_hops=5000, block_hops=5000, min_blocks=4, max_blocks=200,
        rel_tolerance=rel_tolerance, abs_tolerance_na=1e-6,
    )  # fmt: skip
    v = random_points(n_points, 1)
    start = time.perf_counter()
    res = dev.simulate(v)
    elapsed = time.perf_counter() - start
    rel = res.stderr_na / np.abs(res.current_na)
    return n_points / elapsed, float(np.median(rel)), float(np.mean(res.hops))


def estimator_variance_ratio(repeats: int) -> tuple[float, float]:
    dev = HoppingDevice(equilibration_hops=5000, block_hops=25000, min_blocks=2, max_blocks=2)
    v = np.repeat(np.array([[0.3, -0.5, 0.1, 0.0, -1.0, 0.2, 0.4]]), repeats, 0)
    res = dev.simulate(v)
    expected = res.electrode_current_na[:, dev.readout_index]
    counted = res.counted_current_na[:, dev.readout_index]
    return float(np.var(counted, ddof=1) / np.var(expected, ddof=1)), float(np.mean(expected))


def main() -> None:
    cores = os.cpu_count() or 1
    print(f"numba {numba.__version__}, {cores} cores\n")
    one = hops_per_second(1, 8)
    allc = hops_per_second(cores, 8 * cores)
    print("| measurement | value |")
    print("| --- | --- |")
    print(f"| hops/s, 1 core | {one:.3g} ({one / KMC_DN_HOPS_PER_S:.1f}x kmc_dn's 1.36e5) |")
    print(f"| hops/s, {cores} cores | {allc:.3g} (parallel efficiency {allc / one / cores:.0%}) |")
    for tol in (0.05, 0.02):
        pps, rel, hops = points_per_second(tol, 4 * cores, cores)
        print(f"| operating points/s at {tol:.0%} relative error, {cores} cores | {pps:.2f} (median achieved {rel:.1%}, {hops:.3g} hops/point) |")
    ratio, mean = estimator_variance_ratio(4 * cores)
    print(f"| variance of counted-hop / expected-flux estimator (I = {mean:.1f} nA) | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
