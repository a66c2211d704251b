"""Ensembles of surrogates of one device: the mean prediction, and the members' spread as its uncertainty.

Members are surrogates of the same device trained from different seeds
(:func:`inmaterio.smg.ensemble.train_ensemble`). Where the training data pin
the device down, they agree; where they do not (sparse corners, slices a
random plan misses) they disagree, and their standard deviation measures how
far one surrogate may be from the device there. Add the device's own noise to
get the spread of a fresh measurement
(:func:`inmaterio.smg.evaluate.calibration` checks that on measured points).

Members trained alike share part of their error, which their spread ``s``
(nA) does not see. A :class:`SpreadCalibration` corrects it post hoc: the
calibrated model spread is

    sqrt((scale * s)^2 + floor_na^2)

with ``scale``, ``floor_na`` fitted on measured points
(:func:`inmaterio.smg.evaluate.fit_spread_calibration`); ``scale = 1``,
``floor_na = 0`` is the uncalibrated ensemble.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inmaterio.errors import ConfigError, ModelFileError
from inmaterio.fileio import read_json
from inmaterio.surrogate.info import DeviceInfo
from inmaterio.surrogate.io import ENSEMBLE_DIR, load_surrogate
from inmaterio.surrogate.model import SurrogateModel

__all__ = ["SpreadCalibration", "SurrogateEnsemble", "load_ensemble", "CALIBRATION_FILE"]

#: The spread's calibration inside an ensemble folder (``ensemble/calibration.json``).
CALIBRATION_FILE = "calibration.json"
#: Added to the members' variance (nA^2) in :meth:`SurrogateEnsemble.mean_and_spread`: a finite gradient where they agree.
_SPREAD_EPS_NA2 = 1e-12
#: Where an SMG run folder keeps its tested model (member 0).
SMG_MODEL_DIR = "model"


@dataclass(frozen=True)
class SpreadCalibration:
    """A post-hoc correction of an ensemble's spread: ``sqrt((scale * s)^2 + floor_na^2)`` nA for a raw spread ``s`` nA.

    scale : factor on the members' standard deviation, finite and >= 0 (1: as the members say).
    floor_na : spread added in quadrature, nA, finite and >= 0 (the error the members share).

    Raises
    ------
    ConfigError
        A field that is not a finite number >= 0 (the message names the field and its value).
    """

    scale: float = 1.0
    floor_na: float = 0.0

    def __post_init__(self) -> None:
        for name in ("scale", "floor_na"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"spread calibration {name} must be a finite number in [0, inf), got {value!r}")
            object.__setattr__(self, name, float(value))

    def apply(self, spread_na: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """The calibrated spread ``sqrt((scale * s)^2 + floor_na^2)`` nA of raw spreads ``s`` nA (any shape): float64
        numpy for array-likes, a differentiable tensor of ``s``'s dtype for a tensor."""
        s = spread_na if isinstance(spread_na, torch.Tensor) else np.asarray(spread_na, dtype=np.float64)
        return ((self.scale * s) ** 2 + self.floor_na**2) ** 0.5

    def as_dict(self) -> dict[str, float]:
        """``{"scale": ..., "floor_na": ...}``, JSON-serialisable; :meth:`from_dict` reads it back."""
        return {"scale": self.scale, "floor_na": self.floor_na}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpreadCalibration:
        """The calibration of :meth:`as_dict`'s mapping (a missing key takes its default; an unknown key is an error)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a spread calibration must be a mapping with keys scale, floor_na; got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known, key=str)
        if unknown:
            raise ConfigError(f"unknown spread calibration key {unknown[0]!r}; the keys are {sorted(known)}")
        return cls(**data)


class SurrogateEnsemble(nn.Module):
    """The mean of ``K >= 2`` surrogates of one device, with their standard deviation.

    ``forward(voltages (batch, n_activation) V) -> (batch,) nA`` is the
    members' mean and differentiable, so an ensemble can stand in for a single
    :class:`~inmaterio.surrogate.SurrogateModel` in training;
    :meth:`predict_with_std` gives the mean and the spread, corrected by
    ``calibration`` (default: none, ``SpreadCalibration()``).

    Raises
    ------
    TypeError
        A member is not a SurrogateModel, or ``calibration`` not a SpreadCalibration.
    ConfigError
        Fewer than two members, or members with other electrodes or voltage ranges.
    """

    def __init__(self, members: Sequence[SurrogateModel], calibration: SpreadCalibration | None = None) -> None:
        super().__init__()
        if calibration is None:
            calibration = SpreadCalibration()
        if not isinstance(calibration, SpreadCalibration):
            raise TypeError(f"calibration must be a SpreadCalibration or None, got {type(calibration).__name__}")
        members = list(members)
        for k, member in enumerate(members):
            if not isinstance(member, SurrogateModel):
                raise TypeError(f"ensemble member {k} must be a SurrogateModel, got {type(member).__name__}")
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 members to give a spread, got {len(members)}")
        first = members[0].info
        for k, member in enumerate(members[1:], start=1):
            info = member.info
            if info.n_activation != first.n_activation or info.voltage_ranges_v != first.voltage_ranges_v:
                raise ConfigError(
                    f"ensemble member {k} models another device: activation electrodes {info.electrode_names} with "
                    f"ranges {info.voltage_ranges_v} V, member 0 {first.electrode_names} with {first.voltage_ranges_v} V"
                )
        self.members = nn.ModuleList(members)
        self.calibration = calibration

    def with_calibration(self, calibration: SpreadCalibration | None) -> SurrogateEnsemble:
        """A new ensemble of the same member modules (shared, not copied) with ``calibration`` (None: uncalibrated)."""
        return SurrogateEnsemble(list(self.members), calibration)

    @property
    def info(self) -> DeviceInfo:
        """The device the members model (member 0's :class:`DeviceInfo`)."""
        return self.members[0].info

    def forward(self, voltages: torch.Tensor) -> torch.Tensor:
        """The members' mean readout current, nA, ``(batch,)``, for ``voltages (batch, n_activation)`` V."""
        return torch.stack([member(voltages) for member in self.members]).mean(0)

    @property
    def metadata(self) -> dict[str, Any]:
        """Member 0's model card (its ``test_metrics`` are those of the SMG run's tested model)."""
        return self.members[0].metadata

    def mean_and_spread(self, voltages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The members' mean and calibrated spread, each ``(batch,)`` nA, differentiable, for ``voltages (batch, n)`` V.

        The torch twin of :meth:`predict_with_std` (no voltage check, no chunking), for training: the spread
        ``sqrt((scale * s)^2 + floor_na^2)`` of the members' standard deviation ``s`` (``ddof=1``), where ``s``
        is taken as ``sqrt(var + 1e-12 nA^2)`` so that its gradient stays finite where members agree exactly.
        """
        values = torch.stack([member(voltages) for member in self.members])
        return values.mean(0), self.calibration.apply(torch.sqrt(values.var(0) + _SPREAD_EPS_NA2))

    def member_predictions(self, voltages: Any, batch_size: int = 65536) -> np.ndarray:
        """Every member's checked, gradient-free prediction, float64 ``(K, batch)`` nA."""
        v = self.info.check_voltages(voltages)
        return np.stack([member.predict(v, batch_size) for member in self.members])

    def predict_with_std(self, voltages: Any, batch_size: int = 65536, *, raw: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The members' mean and the model spread, each float64 ``(batch,)`` nA.

        The spread is the members' sample standard deviation ``s`` (``ddof=1``)
        corrected by :attr:`calibration`, ``sqrt((scale * s)^2 + floor_na^2)``;
        ``raw=True`` gives ``s`` itself. Neither includes the measurement's
        own noise. ``voltages (batch, n_activation)`` V are checked like
        :meth:`SurrogateModel.predict` (a :class:`~inmaterio.errors.VoltageError`
        names an out-of-range electrode).
        """
        values = self.member_predictions(voltages, batch_size)
        spread = values.std(0, ddof=1)
        return values.mean(0), spread if raw else self.calibration.apply(spread)

    def predict(self, voltages: Any, batch_size: int = 65536) -> np.ndarray:
        """The members' mean, float64 ``(batch,)`` nA (checked, gradient-free)."""
        return self.predict_with_std(voltages, batch_size)[0]


def load_ensemble(paths: str | Path | Sequence[str | Path], calibration: SpreadCalibration | None = None) -> SurrogateEnsemble:
    """An ensemble from the surrogate folders in ``paths``, or from one exported folder.

    ``paths`` a sequence: the surrogates in those folders (or ``model.json`` files, see
    :func:`load_surrogate`), the spread corrected by ``calibration`` (None: uncalibrated).
    ``paths`` one folder: an exported surrogate with its ensemble (layout in
    :mod:`inmaterio.surrogate.io`; ``smg export`` of a run with ``ensemble_members >= 2``)
    or such a finished SMG run folder itself: the folder's model (a run's ``model/``) and
    ``ensemble/member_<k>``, with ``ensemble/calibration.json`` unless ``calibration`` is given.

    Raises
    ------
    ModelFileError
        The folder has no ``ensemble/member_<k>`` subfolders, or a file is unreadable.
    ConfigError
        The calibration file holds other keys or values that are not finite numbers >= 0.
    """
    if not isinstance(paths, (str, Path)):
        return SurrogateEnsemble([load_surrogate(path) for path in paths], calibration)
    folder = Path(paths)
    members_dir = folder / ENSEMBLE_DIR
    numbered = sorted(
        (int(p.name.removeprefix("member_")), p)
        for p in (members_dir.iterdir() if members_dir.is_dir() else [])
        if p.is_dir() and p.name.removeprefix("member_").isdigit()
    )
    if not numbered:
        raise ModelFileError(
            f"'{folder}' holds no ensemble (no {ENSEMBLE_DIR}/member_<k> folders); export an SMG run made with "
            "ensemble_members >= 2, or pass the members' folders as a list"
        )
    if calibration is None and (members_dir / CALIBRATION_FILE).is_file():
        calibration = SpreadCalibration.from_dict(read_json(members_dir / CALIBRATION_FILE, ModelFileError))
    first = folder / SMG_MODEL_DIR if (folder / SMG_MODEL_DIR).is_dir() else folder  # an SMG run folder, or an export
    return SurrogateEnsemble([load_surrogate(first)] + [load_surrogate(path) for _, path in numbered], calibration)
