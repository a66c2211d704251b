"""The class gaps of trained gates measured precisely on the virtual DNPU they were validated on.

Command (prints a markdown table; numbers go to benchmarks/RESULTS.md):

    python benchmarks/gates_device_gap.py RUN [RUN ...] [--blocks 64]

A gates run (``inmaterio run`` of a ``gates`` task, validated on a virtual
DNPU) reports each gate's class gap on the device twice: the worst over its
repeated measurements and the gap of the per-point means over them. This
script is an independent check of the second: it rebuilds the device from
the run's record, applies each gate's four operating points (inputs at the
ends of the input electrodes' ranges, the controls of ``controls.json``) and
measures them with ``--blocks`` blocks each and the Ramo-Shockley estimator
(the same mean as counting, less variance), so the gap is the device's own to
within the printed standard error. Gaps are in units of the run's noise
(``noise_na`` of its ``metrics.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from arguments import at_least
from inmaterio.config import load_config
from inmaterio.devices.hopping import HoppingDevice
from inmaterio.devices.registry import device_config_from_description
from inmaterio.errors import InmaterioError
from inmaterio.runs import read_run
from inmaterio.tasks.config import RunConfig
from inmaterio.tasks.gates import GATE_INPUTS, GATES
from inmaterio.training.metrics import separation_with_stderr_na


def gate_points(controls: dict[str, float], input_electrodes: list[int], names: list[str], ranges: np.ndarray) -> np.ndarray:
    """``(4, n_activation)`` volts of one gate: the truth-table inputs at the range ends, the controls elsewhere."""
    points = np.zeros((len(GATE_INPUTS), len(names)))
    for name, volts in controls.items():
        points[:, names.index(name)] = volts
    for position, electrode in enumerate(input_electrodes):
        low, high = ranges[electrode]
        points[:, electrode] = [high if bits[position] else low for bits in GATE_INPUTS]
    return points


def read_gates_run(folder: Path) -> tuple[RunConfig, dict, dict]:
    """The config, metrics and controls of a finished gates run validated on a device."""
    record = read_run(folder)
    if record["kind"] != "inmaterio.task.gates":
        raise InmaterioError(f"run folder '{folder}' holds a run of kind '{record['kind']}', not 'inmaterio.task.gates'")
    if record["state"] != "finished":
        raise InmaterioError(f"run folder '{folder}' is {record['state']}, not finished")
    config = load_config(RunConfig, folder / "config.yaml")
    if not config.validation.enabled:
        raise InmaterioError(f"run folder '{folder}' was not validated on a device (validation.enabled: false)")
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    controls = json.loads((folder / "controls.json").read_text(encoding="utf-8"))
    return config, metrics, controls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished gates run folders")
    parser.add_argument("--blocks", type=at_least(2), default=64, help="blocks per operating point (Ramo-Shockley)")
    args = parser.parse_args()
    try:
        runs = [(folder, *read_gates_run(folder)) for folder in args.runs]
    except InmaterioError as err:
        sys.exit(f"error: {err}")
    print(
        "| run | gate | worst of the repeats | mean of the repeats (± stderr) | precise mean (± stderr) | "
        "precise currents (nA) |\n| --- | --- | ---: | ---: | ---: | --- |"
    )
    for folder, config, metrics, controls in runs:
        description = metrics["device"]["device"]
        try:
            device_config = device_config_from_description(description)
        except InmaterioError as err:
            sys.exit(f"error: {folder}: {err}")
        device = HoppingDevice(device_config, current_estimator="ramo_shockley", min_blocks=args.blocks, max_blocks=args.blocks)
        names = list(device.activation_names)
        inputs = [e if isinstance(e, int) else names.index(e) for e in config.task.input_electrodes]
        noise = metrics["noise_na"]
        for gate in config.task.gates:
            result = device.simulate(gate_points(controls[gate], inputs, names, device.voltage_ranges))
            gap, stderr = separation_with_stderr_na(
                *(torch.as_tensor(a) for a in (result.current_na, result.stderr_na, GATES[gate]))
            )
            entry = metrics["gates"][gate]
            worst = entry["device_separation_over_noise"]
            mean = entry.get("device_mean_separation_over_noise")
            mean_se = entry.get("device_mean_separation_stderr_na")
            shown_mean = "-" if mean is None else f"{mean:.2f}" + ("" if mean_se is None else f" ± {mean_se / noise:.2f}")
            print(
                f"| {folder.name} | {gate} | {worst:.2f} | {shown_mean} | **{gap / noise:.2f} ± {stderr / noise:.2f}** | "
                + " ".join(f"{c:.1f}" for c in result.current_na)
                + " |",
                flush=True,
            )
    print(f"\nGaps in units of the runs' device noise; precise: {args.blocks} blocks per point, Ramo-Shockley estimator.")


if __name__ == "__main__":
    main()
