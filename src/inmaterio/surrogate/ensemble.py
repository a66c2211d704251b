"""Ensembles of surrogates of one device: the mean prediction, and the members' spread as its uncertainty.

Members are surrogates of the same device trained from different seeds
(:func:`inmaterio.smg.ensemble.train_ensemble`). Where the training data pin
the device down, they agree; where they do not (sparse corners, slices a
random plan misses) they disagree, and their standard deviation measures how
far one surrogate may be from the device there. Add the device's own noise to
get the spread of a fresh measurement
(:func:`inmaterio.smg.evaluate.calibration` checks that on measured points).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inmaterio.errors import ConfigError
from inmaterio.surrogate.info import DeviceInfo
from inmaterio.surrogate.io import load_surrogate
from inmaterio.surrogate.model import SurrogateModel

__all__ = ["SurrogateEnsemble", "load_ensemble"]


class SurrogateEnsemble(nn.Module):
    """The mean of ``K >= 2`` surrogates of one device, with their standard deviation.

    ``forward(voltages (batch, n_activation) V) -> (batch,) nA`` is the
    members' mean and differentiable, so an ensemble can stand in for a single
    :class:`~inmaterio.surrogate.SurrogateModel` in training;
    :meth:`predict_with_std` gives the mean and the spread.

    Raises
    ------
    TypeError
        A member is not a SurrogateModel.
    ConfigError
        Fewer than two members, or members with other electrodes or voltage ranges.
    """

    def __init__(self, members: Sequence[SurrogateModel]) -> None:
        super().__init__()
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

    @property
    def info(self) -> DeviceInfo:
        """The device the members model (member 0's :class:`DeviceInfo`)."""
        return self.members[0].info

    def forward(self, voltages: torch.Tensor) -> torch.Tensor:
        """The members' mean readout current, nA, ``(batch,)``, for ``voltages (batch, n_activation)`` V."""
        return torch.stack([member(voltages) for member in self.members]).mean(0)

    def member_predictions(self, voltages: Any, batch_size: int = 65536) -> np.ndarray:
        """Every member's checked, gradient-free prediction, float64 ``(K, batch)`` nA."""
        v = self.info.check_voltages(voltages)
        return np.stack([member.predict(v, batch_size) for member in self.members])

    def predict_with_std(self, voltages: Any, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """The members' mean and sample standard deviation (``ddof=1``), each float64 ``(batch,)`` nA.

        ``voltages`` are checked like :meth:`SurrogateModel.predict` (a
        :class:`~inmaterio.errors.VoltageError` names an out-of-range electrode).
        """
        values = self.member_predictions(voltages, batch_size)
        return values.mean(0), values.std(0, ddof=1)

    def predict(self, voltages: Any, batch_size: int = 65536) -> np.ndarray:
        """The members' mean, float64 ``(batch,)`` nA (checked, gradient-free)."""
        return self.predict_with_std(voltages, batch_size)[0]


def load_ensemble(paths: Sequence[str | Path]) -> SurrogateEnsemble:
    """An ensemble of the surrogates in ``paths`` (folders or ``model.json`` files, see :func:`load_surrogate`)."""
    return SurrogateEnsemble([load_surrogate(path) for path in paths])
