"""Cost tables: per-layer and total energy per inference, latency, area, TOPS/W, TOPS/mm², with the assumptions.

A :class:`CostReport` holds :class:`CostLine` rows (one per layer or block),
their total, an optional digital baseline for the same network, and the
assumptions the numbers rest on; it renders as JSON (:meth:`CostReport.to_dict`)
and as a markdown table (:meth:`CostReport.to_markdown`).

Definitions: ``TOPS/W = ops / energy / 1e12`` (operations per joule /
1e12); ``TOPS/mm² = ops / latency / area / 1e12``; a total's energy, latency
(layers run one after the other), area and operations are the sums of its
lines' (the latency the longest line's when they are parts of one circuit
working at once). Area is None where the model defines none (an EP circuit, a DNPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from inmaterio.costs.mapping import ArrayGeometry, LayerShape, map_layer
from inmaterio.costs.neurosim import MacroConfig, macro_cost
from inmaterio.errors import ConfigError

__all__ = ["CostLine", "CostReport", "tops_per_w", "total_line", "crossbar_lines"]


def tops_per_w(ops: float, energy_j: float) -> float:
    """``ops / energy_j / 1e12``: tera-operations per second per watt (= per joule / 1e12)."""
    if not (math.isfinite(energy_j) and energy_j > 0):
        raise ConfigError(f"energy_j must be a finite number > 0, got {energy_j!r}")
    if not ops >= 0:
        raise ConfigError(f"ops must be >= 0, got {ops!r}")
    return ops / energy_j / 1e12


@dataclass(frozen=True)
class CostLine:
    """One row: ``energy_j`` per inference (J), ``latency_s`` (s), ``area_mm2`` (mm², None: not defined), ``ops``."""

    name: str
    technology: str
    energy_j: float
    latency_s: float | None
    area_mm2: float | None
    ops: int
    note: str = ""

    @property
    def tops_per_w(self) -> float:
        """TOPS/W of this row."""
        return tops_per_w(self.ops, self.energy_j)

    @property
    def tops_per_mm2(self) -> float | None:
        """``ops / latency / area / 1e12`` (None without a latency or an area)."""
        if not self.latency_s or not self.area_mm2:
            return None
        return self.ops / self.latency_s / self.area_mm2 / 1e12

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON-ready numbers."""
        return {
            "name": self.name,
            "technology": self.technology,
            "energy_j": self.energy_j,
            "latency_s": self.latency_s,
            "area_mm2": self.area_mm2,
            "ops": self.ops,
            "tops_per_w": self.tops_per_w,
            "tops_per_mm2": self.tops_per_mm2,
            "note": self.note,
        }


def total_line(lines: Sequence[CostLine], name: str = "total", *, concurrent: bool = False) -> CostLine:
    """Sum of ``lines``: energy, area (None if any is None) and ops; latency summed (lines one after the other) or,
    ``concurrent``, the longest (parts of one circuit settling together)."""
    if not lines:
        raise ConfigError("a total needs at least one line, got none")
    combine = max if concurrent else sum
    latency = None if any(line.latency_s is None for line in lines) else combine(line.latency_s for line in lines)
    area = None if any(line.area_mm2 is None for line in lines) else sum(line.area_mm2 for line in lines)
    techs = sorted({line.technology for line in lines})
    return CostLine(name, " + ".join(techs), sum(line.energy_j for line in lines), latency, area, sum(line.ops for line in lines))


@dataclass(frozen=True)
class CostReport:
    """A model's cost table: ``lines`` (per layer, one inference), their ``total``, an optional digital ``baseline``,
    the ``assumptions``, and for a model trained in hardware the cost of one ``training_step`` (not in the total).

    ``combine`` says what the lines are: ``sequential`` layers (the total adds their latencies), ``concurrent`` parts
    of one circuit settling together (the total latency is the longest), or ``alternatives``, separate models such as
    one DNPU per gate (the total row is their mean, ``mean per row``)."""

    def __post_init__(self) -> None:
        if self.combine not in ("sequential", "concurrent", "alternatives"):
            raise ConfigError(f"combine must be 'sequential', 'concurrent' or 'alternatives', got {self.combine!r}")

    title: str
    lines: tuple[CostLine, ...]
    assumptions: Mapping[str, Any]
    baseline: CostLine | None = None
    accuracy: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    training_step: CostLine | None = None
    accuracy_percent: float | None = None
    combine: str = "sequential"

    @property
    def total(self) -> CostLine:
        """The sum of the lines (latency: the longest line's when ``concurrent``); for ``alternatives`` their mean."""
        if self.combine == "alternatives":
            n = len(self.lines)
            t = total_line(self.lines, concurrent=True)
            latency = None if t.latency_s is None else sum(line.latency_s for line in self.lines) / n
            area = None if t.area_mm2 is None else t.area_mm2 / n
            return CostLine("mean per row", t.technology, t.energy_j / n, latency, area, round(t.ops / n))
        return total_line(self.lines, concurrent=self.combine == "concurrent")

    @property
    def digital_ratio(self) -> float | None:
        """Baseline energy / this model's energy (> 1: the model uses less), None without a baseline."""
        return None if self.baseline is None else self.baseline.energy_j / self.total.energy_j

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "title": self.title,
            "accuracy": self.accuracy,
            "accuracy_percent": self.accuracy_percent,
            "lines": [line.to_dict() for line in self.lines],
            "total": self.total.to_dict(),
            "digital_baseline": None if self.baseline is None else self.baseline.to_dict(),
            "digital_energy_ratio": self.digital_ratio,
            "training_step": None if self.training_step is None else self.training_step.to_dict(),
            "assumptions": dict(self.assumptions),
            "notes": list(self.notes),
        }

    def rows(self) -> list[list[str]]:
        """Table rows as text: name, technology, energy/inference, latency, area, TOPS/W, TOPS/mm²."""
        out = [_row(line) for line in self.lines]
        if len(self.lines) > 1:
            out.append(_row(self.total))
        if self.training_step is not None:
            out.append(_row(self.training_step))
        if self.baseline is not None:
            out.append(_row(self.baseline))
        return out

    def to_markdown(self) -> str:
        """A markdown table of :meth:`rows` with the accuracy, the digital ratio, the notes and the assumptions."""
        head = ["row", "technology", "energy / inference", "latency", "area", "TOPS/W", "TOPS/mm²"]
        lines = [f"# {self.title}", ""]
        if self.accuracy:
            lines += [f"Accuracy: {self.accuracy}", ""]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows()]
        if self.digital_ratio is not None:
            lines += ["", f"Digital baseline / this model, energy per inference: {self.digital_ratio:.3g}x"]
        if self.notes:
            lines += ["", *[f"- {note}" for note in self.notes]]
        lines += ["", "## Assumptions", ""] + [f"- `{k}`: {v}" for k, v in self.assumptions.items()]
        return "\n".join(lines) + "\n"


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return f"0 {unit}"
    prefixes = [(1e-15, "f"), (1e-12, "p"), (1e-9, "n"), (1e-6, "µ"), (1e-3, "m"), (1.0, "")]
    scale, prefix = prefixes[0]
    for s, p in prefixes:
        if abs(value) >= s:
            scale, prefix = s, p
    return f"{value / scale:.3g} {prefix}{unit}"


def _row(line: CostLine) -> list[str]:
    area = "n/a" if line.area_mm2 is None else f"{line.area_mm2:.3g} mm²"
    per_mm2 = line.tops_per_mm2
    return [
        line.name,
        line.technology,
        _si(line.energy_j, "J"),
        _si(line.latency_s, "s"),
        area,
        f"{line.tops_per_w:.3g}",
        "n/a" if per_mm2 is None else f"{per_mm2:.3g}",
    ]


def crossbar_lines(
    layers: Sequence[LayerShape], geometry: ArrayGeometry, macro: MacroConfig, technology: str = "crossbar"
) -> list[CostLine]:
    """One line per layer on ``macro`` subarrays of ``geometry``.

    Rule: a layer occupies :func:`~inmaterio.costs.mapping.map_layer`'s subarrays, each running one full MVM
    (:func:`~inmaterio.costs.neurosim.macro_cost` at the macro's mean conductance) per output position, a
    partly filled subarray costing a full one; its subarrays work in parallel, its positions one after the other;
    its area is its subarrays' macros; its operations ``2 * MACs`` of the layer.
    """
    if (geometry.rows, geometry.cols) != (macro.rows, macro.cols):
        raise ConfigError(
            f"geometry {geometry.rows}x{geometry.cols} and macro {macro.rows}x{macro.cols} must have the same array size"
        )
    mvm = macro_cost(macro)
    out = []
    for layer in layers:
        m = map_layer(layer, geometry)
        out.append(
            CostLine(
                layer.name,
                technology,
                m.subarrays * layer.positions * mvm.energy_j,
                layer.positions * mvm.latency_s,
                m.subarrays * mvm.area_um2 * 1e-6,
                2 * layer.macs,
                f"{m.subarrays} subarrays, utilisation {m.utilisation:.1%}",
            )
        )
    return out
