"""The bundled surrogate against the virtual DNPU's mean current, not against single noisy measurements.

Command (prints markdown tables; numbers go to benchmarks/RESULTS.md):

    python benchmarks/surrogate_vs_device_mean.py [--points 2000] [--blocks 32]

An RMSE against single device measurements cannot fall below the noise of
those measurements. This measures the same fresh points twice on the device
the surrogate was made from:

1. as the surrogate's data were measured (the provenance's settings, one
   measurement per point, holes counted): the device noise is the RMS of
   these points' standard errors;
2. precisely: ``--blocks`` blocks instead of the provenance's few, with the
   Ramo-Shockley estimator (the same mean, less variance); the RMS of
   these standard errors says how close the reference is to the mean.

It prints the surrogate's RMSE against each, in nA and in units of the
device noise, on fresh uniform points and on the single-electrode I-V sweeps
(every activation electrode swept over its range, the others at 0 V), and
the RMS gap between the two measurements of the same points beside the gap
their standard errors predict (the check that both measure the same mean).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from arguments import at_least
from inmaterio.devices.hopping import HoppingDevice
from inmaterio.devices.registry import device_config_from_description
from inmaterio.smg.iv import iv_plan
from inmaterio.surrogate import load_default_surrogate


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def timed(device: HoppingDevice, voltages: np.ndarray):
    """The device's result for ``voltages`` and the wall seconds it took."""
    start = time.perf_counter()
    result = device.simulate(voltages)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=at_least(2), default=2000, help="fresh uniform points")
    parser.add_argument("--iv-points", type=at_least(2), default=41, help="points per single-electrode I-V sweep")
    parser.add_argument("--blocks", type=at_least(2), default=32, help="blocks per point of the precise measurement")
    parser.add_argument("--seed", type=int, default=20261205, help="seed of the fresh points")
    args = parser.parse_args()

    model = load_default_surrogate()
    config = device_config_from_description(model.info.provenance["device"])
    single = HoppingDevice(config)
    precise = HoppingDevice(config, current_estimator="ramo_shockley", min_blocks=args.blocks, max_blocks=args.blocks)
    ranges = single.voltage_ranges
    uniform = np.random.default_rng(args.seed).uniform(ranges[:, 0], ranges[:, 1], (args.points, len(ranges)))
    sweeps, _ = iv_plan(ranges, args.iv_points)
    print(
        f"provenance settings: {config.equilibration_hops} + {config.min_blocks} x {config.block_hops} hops, counting; "
        f"precise: {config.equilibration_hops} + {args.blocks} x {config.block_hops} hops, ramo_shockley\n"
    )
    measured = {}
    for name, v in (("fresh uniform", uniform), ("I-V sweeps", sweeps)):
        measured[name] = (model.predict(v), *timed(single, v), *timed(precise, v))
    noise = rms(measured["fresh uniform"][1].stderr_na)  # the device noise: single measurements of uniform points
    print(f"Device noise: {noise:.2f} nA (RMS standard error of single measurements of the fresh uniform points).\n")
    print(
        "| points | surrogate vs single | surrogate vs precise | stderr single / precise | "
        "single - precise, measured / predicted | device time single / precise |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (predicted, a, t_single, b, t_precise) in measured.items():
        vs_single, vs_precise = rms(predicted - a.current_na), rms(predicted - b.current_na)
        se_a, se_b = rms(a.stderr_na), rms(b.stderr_na)
        print(
            f"| {name} ({len(predicted)}) | {vs_single:.2f} nA = {vs_single / noise:.2f}x | "
            f"**{vs_precise:.2f} nA = {vs_precise / noise:.2f}x** | {se_a:.2f} / {se_b:.2f} nA | "
            f"{rms(a.current_na - b.current_na):.2f} / {np.hypot(se_a, se_b):.2f} nA | {t_single:.0f} s / {t_precise:.0f} s |"
        )
    predicted, _, _, b, _ = measured["I-V sweeps"]
    error = (predicted - b.current_na).reshape(len(ranges), args.iv_points)
    print("\nI-V sweeps against the precise measurement, RMSE per electrode (nA, and in units of the device noise):\n")
    print("| " + " | ".join(single.activation_names) + " |")
    print("|" + " ---: |" * len(ranges))
    print("| " + " | ".join(f"{rms(e):.2f} ({rms(e) / noise:.2f}x)" for e in error) + " |")


if __name__ == "__main__":
    main()
