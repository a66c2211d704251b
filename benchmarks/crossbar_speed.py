"""Crossbar layer speed: forward + backward of a 512 x 512 analog linear layer, ours vs aihwkit vs ``nn.Linear``.

Command (from the repository root; prints a markdown table)::

    python benchmarks/crossbar_speed.py --threads 1 --repeats 3

One training step's worth of work per iteration: ``y = layer(x)``, then
``y.backward(g)`` with ``x.requires_grad`` (input and weight gradients, as for
a hidden layer); no optimiser step. Train mode. Each batch size gets an
untimed warm-up, then ``--repeats`` timed runs of about ``--seconds`` each
(whole iterations); the table shows the fastest run as samples per second.
All rows run in the same process, one after the other, on the CPU.

Layers (512 inputs, 512 outputs, bias, float32, one 512 x 512 tile):

* ``nn.Linear`` — the digital reference.
* ``ours, as aihwkit`` — :class:`~inmaterio.crossbars.layers.AnalogLinear` with the periphery of the
  aihwkit row below: 7-bit DAC over [-1, 1] with per-vector abs-max input scaling, 9-bit ADC
  saturating at 12, output noise 0.06, forward-only weight noise 0.02 of max ``|w|`` per batch
  (hardware-aware training), weights normalised by max ``|w|``, ideal backward, ideal update.
* ``ours, full`` — the same plus everything ours has that aihwkit's torch tile has not: per-read weight
  noise 0.02 (output-referred), IR drop (``ir_drop`` = 1.75e-6), output noise 0.5 LSB instead of 0.06, and the
  backward read through the same periphery (:data:`~inmaterio.crossbars.tile.REALISTIC_IO`: 7-bit DAC,
  9-bit ADC, noise 0.5 LSB). The weights do not change between iterations, so the IR-drop map is
  computed once and cached, as in inference; a training step that changes the weights recomputes it
  (two cumulative sums per polarity over the 512 x 512 array, a few ms on one thread).
* ``aihwkit`` — ``aihwkit.nn.AnalogLinear`` with ``TorchInferenceRPUConfig`` (pure torch; aihwkit's compiled
  tiles are not used): forward ``inp_res = 1/126``, ``inp_bound = 1``, ``out_res = 1/510``, ``out_bound = 12``,
  ``out_noise = 0.06``, ``noise_management = ABS_MAX``, ``bound_management = NONE`` (its default ITERATIVE
  re-reads saturated vectors at half the input, a data-dependent extra cost ours does not model),
  modifier ``ADD_NORMAL`` std 0.02 (its hardware-aware weight noise, relative to max ``|w|``, redrawn
  per batch), ``mapping.weight_scaling_omega = 1`` (weights normalised by max ``|w|``, the output
  rescaled digitally), digital bias, perfect backward. Differences that remain: aihwkit's torch tile
  has no per-read weight noise and no IR drop (its ``w_noise`` and ``ir_drop`` raise there), so the
  matched row leaves them out; ours re-reads max ``|w|`` on every call, aihwkit remaps once.

When aihwkit does not import, its column says why and the rest still runs.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn

from inmaterio.crossbars.layers import AnalogLinear
from inmaterio.crossbars.tile import REALISTIC_IO, IOConfig, TileConfig

SIZE = 512


def ours_matched() -> TileConfig:
    io = IOConfig(
        dac_bits=7, input_bound=1.0, input_scaling="max", adc_bits=9, output_bound=12.0, output_noise=0.06,
        forward_weight_noise=0.02,
    )  # fmt: skip
    return TileConfig(io=io, backward="ideal")


def ours_full() -> TileConfig:
    io = IOConfig(**{**REALISTIC_IO.model_dump(), "weight_noise": 0.02, "forward_weight_noise": 0.02, "ir_drop": 1.75e-6})
    return TileConfig(io=io, backward=REALISTIC_IO)


def aihwkit_layer() -> nn.Module:
    """aihwkit's AnalogLinear 512 x 512 with a TorchInferenceRPUConfig matched to :func:`ours_matched`."""
    from aihwkit.nn import AnalogLinear as AihwkitLinear
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType, WeightModifierType

    config = TorchInferenceRPUConfig()
    config.forward.inp_res = 1 / (2**7 - 2)
    config.forward.inp_bound = 1.0
    config.forward.out_res = 1 / (2**9 - 2)
    config.forward.out_bound = 12.0
    config.forward.out_noise = 0.06
    config.forward.noise_management = NoiseManagementType.ABS_MAX
    config.forward.bound_management = BoundManagementType.NONE
    config.modifier.type = WeightModifierType.ADD_NORMAL
    config.modifier.std_dev = 0.02
    config.mapping.weight_scaling_omega = 1.0
    config.mapping.max_input_size = SIZE
    config.mapping.max_output_size = SIZE
    return AihwkitLinear(SIZE, SIZE, bias=True, rpu_config=config)


def time_layer(layer: nn.Module, batch: int, seconds: float, repeats: int) -> float:
    """Best samples/s of ``repeats`` runs of about ``seconds`` each (forward + backward per iteration)."""
    g = torch.Generator().manual_seed(batch)
    x = (torch.rand(batch, SIZE, generator=g) * 2 - 1).requires_grad_(True)
    grad = torch.randn(batch, SIZE, generator=g)
    layer.train()

    def step() -> None:
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(grad)

    for _ in range(3):  # warm-up
        step()
    best = 0.0
    for _ in range(repeats):
        n, start = 0, time.perf_counter()
        while True:
            step()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and n >= 3:
                break
        best = max(best, n * batch / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256, 1024], help="batch sizes")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (the fastest is shown)")
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one timed run, s")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # nn.Linear's and aihwkit's own initialisation (the values do not change the speed)

    layers: dict[str, nn.Module | None] = {
        "nn.Linear": nn.Linear(SIZE, SIZE),
        "ours, as aihwkit": AnalogLinear(SIZE, SIZE, tile_config=ours_matched(), seed=0),
        "ours, full": AnalogLinear(SIZE, SIZE, tile_config=ours_full(), seed=0),
    }
    peer_note = ""
    try:
        import aihwkit

        layers["aihwkit"] = aihwkit_layer()
        peer_note = f"aihwkit {aihwkit.__version__} (TorchInferenceRPUConfig)"
    except Exception as err:  # noqa: BLE001 - any failure to import or build the peer is reported, not raised
        layers["aihwkit"] = None
        peer_note = f"aihwkit missing: {type(err).__name__}: {err}"

    results = {
        name: {b: time_layer(layer, b, args.seconds, args.repeats) for b in args.batches} if layer is not None else None
        for name, layer in layers.items()
    }

    print(
        f"Forward + backward of a {SIZE} x {SIZE} layer (input and weight gradients), samples/s, best of {args.repeats} "
        f"runs of ~{args.seconds} s, {torch.get_num_threads()} thread(s), torch {torch.__version__}, {peer_note}\n"
    )
    names = list(results)
    print(
        "| batch | "
        + " | ".join(names)
        + " | ours (as aihwkit) / aihwkit | nn.Linear / ours (as aihwkit) | nn.Linear / ours (full) |"
    )
    print("| --- " * (len(names) + 4) + "|")
    for b in args.batches:
        cells = [f"{results[n][b]:,.0f}" if results[n] is not None else "missing" for n in names]
        peer = results["aihwkit"]
        vs_peer = f"{results['ours, as aihwkit'][b] / peer[b]:.2f}x" if peer is not None else "-"
        plain = results["nn.Linear"][b]
        print(
            f"| {b} | " + " | ".join(cells) + f" | {vs_peer} | {plain / results['ours, as aihwkit'][b]:.2f}x "
            f"| {plain / results['ours, full'][b]:.2f}x |"
        )
    if results["aihwkit"] is None:
        print(f"\nThe peer did not run: {peer_note}")


if __name__ == "__main__":
    main()
