"""What a surrogate model knows about the device it imitates.

:class:`DeviceInfo` travels with every surrogate (it is saved in
``model.json``): the activation electrodes in column order with their allowed
voltage ranges, the readout electrode, the instrument gain, the range of the
output current, the surrogate's test error and a free provenance record. It is
an immutable, validated pydantic model; :meth:`DeviceInfo.with_updates` makes a
modified copy.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

import inmaterio
from inmaterio.config import StrictModel
from inmaterio.devices.base import Device, Electrode, check_voltages

__all__ = ["DeviceInfo"]


class DeviceInfo(StrictModel):
    """Description of a device as seen by its surrogate model.

    Attributes
    ----------
    electrode_names : names of the activation electrodes, in column order of
        ``voltages (batch, n_activation)``; unique, non-empty.
    readout_name : name of the readout electrode (not an activation electrode).
    voltage_ranges_v : ``[low, high]`` volts per activation electrode, finite,
        ``low < high``; same length as ``electrode_names``.
    amplification : instrument gain from the measured signal to nA (finite,
        non-zero). Recorded metadata: the surrogate model does not apply it.
    output_clipping_na : ``(low, high)`` nA range of the device output, or
        None when the output is not clipped (applied downstream by processors).
    noise_na : the surrogate's test RMSE in nA (>= 0), None until tested.
    provenance : JSON-serialisable record of where the model comes from
        (device description, dataset, package version, creation time...).
    """

    electrode_names: list[str]
    readout_name: str
    voltage_ranges_v: list[tuple[float, float]]
    amplification: float = 1.0
    output_clipping_na: tuple[float, float] | None = None
    noise_na: float | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)

    @field_validator("electrode_names")
    @classmethod
    def _names_unique(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("at least one activation electrode is required")
        if any(not name for name in names):
            raise ValueError(f"electrode names must be non-empty strings, got {names}")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"electrode names must be unique, repeated: {duplicates}")
        return names

    @field_validator("voltage_ranges_v")
    @classmethod
    def _ranges_are_intervals(cls, ranges: list[tuple[float, float]], info: ValidationInfo) -> list[tuple[float, float]]:
        names = info.data.get("electrode_names") or []
        for k, (low, high) in enumerate(ranges):
            label = f"electrode '{names[k]}'" if k < len(names) else f"electrode {k}"
            if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
                raise ValueError(f"{label} range [{low}, {high}] V is not a finite interval with low < high")
        return ranges

    @field_validator("amplification")
    @classmethod
    def _amplification_finite(cls, value: float) -> float:
        if not math.isfinite(value) or value == 0:
            raise ValueError(f"amplification must be finite and non-zero, got {value}")
        return value

    @field_validator("output_clipping_na")
    @classmethod
    def _clipping_interval(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None:
            low, high = value
            if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
                raise ValueError(f"output clipping [{low}, {high}] nA is not a finite interval with low < high")
        return value

    @field_validator("noise_na")
    @classmethod
    def _noise_non_negative(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"noise_na must be a finite RMSE >= 0 nA, got {value}")
        return value

    @field_validator("provenance")
    @classmethod
    def _provenance_is_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            try:
                json.dumps(item)
            except (TypeError, ValueError) as err:
                raise ValueError(f"provenance['{key}'] is not JSON-serialisable: {err}") from None
        return value

    @model_validator(mode="after")
    def _one_range_per_electrode(self) -> DeviceInfo:
        if len(self.voltage_ranges_v) != len(self.electrode_names):
            raise ValueError(
                f"voltage_ranges_v has {len(self.voltage_ranges_v)} entries but electrode_names has "
                f"{len(self.electrode_names)} ({self.electrode_names}); give one [low, high] per electrode"
            )
        if self.readout_name in self.electrode_names:
            raise ValueError(f"readout_name '{self.readout_name}' is also listed in electrode_names")
        return self

    @property
    def n_activation(self) -> int:
        """Number of activation electrodes (columns of ``voltages``)."""
        return len(self.electrode_names)

    @property
    def electrodes(self) -> tuple[Electrode, ...]:
        """The activation electrodes with their ranges, in column order."""
        return tuple(Electrode(name, low, high) for name, (low, high) in zip(self.electrode_names, self.voltage_ranges_v))

    def ranges_array(self) -> np.ndarray:
        """``(n_activation, 2)`` float64 array of [low, high] volts per electrode."""
        return np.array(self.voltage_ranges_v, dtype=np.float64).reshape(self.n_activation, 2)

    def check_voltages(self, voltages: Any) -> np.ndarray:
        """Validate ``voltages (batch, n_activation)`` V against the ranges; return them as float64.

        Same rules and messages as :meth:`Device.check_voltages`: a wrong shape,
        NaN/inf or a value outside its electrode's range raises
        :class:`~inmaterio.errors.VoltageError` naming the electrode.
        """
        return check_voltages(voltages, self.electrodes)

    @classmethod
    def from_device(cls, device: Device, **overrides: Any) -> DeviceInfo:
        """Build the info of ``device``: its electrodes, ranges and readout.

        ``provenance`` records ``device.describe()`` (key ``device``), the
        package version and the creation time (ISO 8601, UTC); a
        ``provenance`` override is merged into that record, any other keyword
        (e.g. ``amplification``, ``output_clipping_na``) replaces the field.
        """
        provenance = {
            "device": device.describe(),
            "package_version": inmaterio.__version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **overrides.pop("provenance", {}),
        }
        fields = {
            "electrode_names": [e.name for e in device.electrodes],
            "readout_name": device.readout_name,
            "voltage_ranges_v": [(float(e.low_v), float(e.high_v)) for e in device.electrodes],
            "provenance": provenance,
        }
        return cls.model_validate({**fields, **overrides})

    def with_updates(self, **changes: Any) -> DeviceInfo:
        """Return a validated copy with ``changes`` applied (the model itself is frozen)."""
        return type(self).model_validate({**self.model_dump(), **changes})
