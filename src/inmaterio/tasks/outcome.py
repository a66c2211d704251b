"""What a task returns to the runner: numbers for metrics.json, control voltages, a summary table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TaskOutcome"]


@dataclass
class TaskOutcome:
    """Result of one task run.

    Attributes
    ----------
    metrics : JSON-serialisable numbers (written to ``metrics.json``).
    controls : JSON-serialisable learned control voltages (``controls.json``), V.
    title, columns, rows : the summary table the CLI prints (rows of strings).
    curves : training curves by name, rows ``{"step": int, "loss": float}``
        (epochs or generations; written to ``history.json`` / ``history.csv`` as rows
        ``{"curve": name, "step", "loss"}``).
    """

    metrics: dict[str, Any]
    controls: dict[str, Any]
    title: str
    columns: list[str]
    rows: list[list[str]]
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def table(self) -> dict[str, Any]:
        """The summary table as stored in ``metrics.json``."""
        return {"title": self.title, "columns": list(self.columns), "rows": [list(r) for r in self.rows]}

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> TaskOutcome:
        """The outcome of a finished run, read back from its ``metrics.json`` (controls and curves stay in their files)."""
        table = metrics.get("table") or {"title": "", "columns": [], "rows": []}
        return cls(metrics, {}, table["title"], table["columns"], table["rows"])
