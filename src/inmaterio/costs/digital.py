r"""A digital baseline: the same network on a digital accelerator, from Horowitz's 45 nm energies.

Energies per operation at 45 nm, 0.9 V (M. Horowitz, *Computing's energy
problem (and what we can do about it)*, ISSCC 2014, pp. 10-14), in pJ:

=================  =====  ==============  =====
integer add 8 b    0.03   float add 16 b  0.4
integer add 16 b   0.05   float add 32 b  0.9
integer add 32 b   0.1    float mult 16 b 1.1
integer mult 8 b   0.2    float mult 32 b 3.7
integer mult 32 b  3.1
=================  =====  ==============  =====

Memory, per 64-bit access: SRAM cache 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ;
DRAM 1.3-2.6 nJ (2.6 nJ here, the upper end: the worst case, stated).

**Cost rule** (:func:`digital_cost`), per inference:

- compute: every multiply-accumulate is one multiply and one add at the
  network's precision, :math:`E_c = N_{MAC} (E_\times + E_+)`;
- memory: every weight and every input and output activation crosses one
  memory once per inference, in 64-bit words
  (:math:`\lceil \text{bits} / 64 \rceil` accesses); the memory is the
  smallest SRAM holding all the weights (8 KB, 32 KB, 1 MB), or DRAM when
  they do not fit in 1 MB. Reuse inside the datapath (registers) is free: a
  lower bound on a real accelerator's memory traffic.

Precisions without a published number (integer 16-bit multiply, 8-bit float)
are refused rather than guessed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from inmaterio.config import StrictModel
from inmaterio.costs.mapping import LayerShape
from inmaterio.errors import ConfigError

__all__ = ["DigitalEnergies", "HOROWITZ_45NM", "DigitalCost", "digital_cost"]

Precision = Literal["int8", "int16", "int32", "fp16", "fp32"]


class DigitalEnergies(StrictModel):
    """Energies per operation and per 64-bit memory access, pJ (each >= 0; None: not published)."""

    add_pj: dict[str, float] = Field(
        default_factory=lambda: {"int8": 0.03, "int16": 0.05, "int32": 0.1, "fp16": 0.4, "fp32": 0.9}
    )
    mult_pj: dict[str, float] = Field(default_factory=lambda: {"int8": 0.2, "int32": 3.1, "fp16": 1.1, "fp32": 3.7})
    sram_pj: dict[int, float] = Field(default_factory=lambda: {8 * 1024: 10.0, 32 * 1024: 20.0, 1024 * 1024: 100.0})
    dram_pj: float = Field(2600.0, ge=0)
    word_bits: int = Field(64, ge=1)


#: Horowitz (ISSCC 2014), 45 nm, 0.9 V.
HOROWITZ_45NM = DigitalEnergies()


@dataclass(frozen=True)
class DigitalCost:
    """A network on the digital baseline, per inference: ``compute_j``, ``memory_j``, ``energy_j`` (their sum), the
    ``memory`` used (``sram_8KB``, ..., ``dram``), ``macs`` and ``ops`` (2 per MAC)."""

    compute_j: float
    memory_j: float
    energy_j: float
    memory: str
    macs: int
    ops: int


_BITS = {"int8": 8, "int16": 16, "int32": 32, "fp16": 16, "fp32": 32}


def digital_cost(layers: Sequence[LayerShape], precision: str = "int8", energies: DigitalEnergies = HOROWITZ_45NM) -> DigitalCost:
    """Energy of one inference of ``layers`` on the digital baseline (rule in the module docstring)."""
    if precision not in _BITS:
        raise ConfigError(f"precision must be one of {sorted(_BITS)}, got {precision!r}")
    for table, what in ((energies.mult_pj, "multiply"), (energies.add_pj, "add")):
        if precision not in table:
            raise ConfigError(
                f"no published {what} energy for precision {precision!r} (known: {sorted(table)}); choose one of those"
            )
    if not layers:
        raise ConfigError("digital_cost needs at least one layer, got none")
    bits = _BITS[precision]
    macs = sum(layer.macs for layer in layers)
    weights = sum(layer.matrix_rows * layer.outputs for layer in layers)
    activations = sum((layer.inputs + layer.outputs) * layer.positions for layer in layers)
    weight_bytes = weights * bits / 8
    fitting = [size for size in sorted(energies.sram_pj) if size >= weight_bytes]
    if fitting:
        size = fitting[0]
        memory = f"sram_{size // 2**20}MB" if size >= 2**20 else f"sram_{size // 1024}KB"
        access_pj = energies.sram_pj[size]
    else:
        memory, access_pj = "dram", energies.dram_pj
    accesses = math.ceil(weights * bits / energies.word_bits) + math.ceil(activations * bits / energies.word_bits)
    compute = macs * (energies.mult_pj[precision] + energies.add_pj[precision]) * 1e-12
    mem = accesses * access_pj * 1e-12
    return DigitalCost(compute, mem, compute + mem, memory, macs, 2 * macs)
