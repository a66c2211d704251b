"""Training an ensemble of surrogates: the same data and config, one seed per member.

Member ``k`` is an ordinary surrogate training (:func:`~inmaterio.smg.train.train_surrogate`)
in ``<directory>/member_<k>`` with ``seed = config.seed + k``, so it has its own
weight initialisation and shuffling, resumes on its own, and a finished member
is read back instead of trained again: calling :func:`train_ensemble` again
after an interruption trains only what is missing. The ensemble's spread
(:class:`~inmaterio.surrogate.ensemble.SurrogateEnsemble`) then measures how
much the data leave the surrogate undetermined.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from inmaterio.errors import ConfigError
from inmaterio.smg.config import TrainConfig
from inmaterio.smg.dataset import Dataset
from inmaterio.smg.train import TrainResult, train_surrogate
from inmaterio.surrogate import DeviceInfo
from inmaterio.surrogate.ensemble import SurrogateEnsemble

__all__ = ["train_ensemble", "train_member", "member_directory"]


def member_directory(directory: str | Path, k: int) -> Path:
    """The run folder of member ``k`` of the ensemble in ``directory``."""
    return Path(directory) / f"member_{k}"


def train_member(
    train: Dataset,
    val: Dataset,
    config: TrainConfig,
    directory: str | Path,
    info: DeviceInfo,
    k: int,
    progress: bool = True,
    *,
    notify: Callable[[str], None] = print,
) -> TrainResult:
    """Member ``k``: :func:`train_surrogate` in ``directory`` with ``seed = config.seed + k``."""
    member_config = config.model_copy(update={"seed": config.seed + k})
    return train_surrogate(train, val, member_config, directory, info, progress, notify=notify)


def train_ensemble(
    train: Dataset,
    val: Dataset,
    config: TrainConfig,
    directory: str | Path,
    info: DeviceInfo,
    members: int,
    progress: bool = True,
    *,
    notify: Callable[[str], None] = print,
) -> tuple[SurrogateEnsemble, list[TrainResult]]:
    """Train ``members`` surrogates (seeds ``config.seed .. config.seed + members - 1``); return the ensemble and each result.

    Raises :class:`~inmaterio.errors.ConfigError` for ``members < 2`` and
    whatever :func:`train_surrogate` raises for a member (naming its folder).
    """
    if isinstance(members, bool) or not isinstance(members, int) or members < 2:
        raise ConfigError(f"members must be an integer >= 2 (an ensemble of one has no spread), got {members!r}")
    results = []
    for k in range(members):
        notify(f"ensemble member {k + 1} of {members} (seed {config.seed + k})")
        results.append(train_member(train, val, config, member_directory(directory, k), info, k, progress, notify=notify))
    return SurrogateEnsemble([result.model for result in results]), results
