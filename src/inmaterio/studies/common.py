"""What the paper studies share: the surrogate, the device they measure on, and finished work kept in the run folder.

A study's YAML names its surrogate and its device the same way::

    surrogate:
      model_dir: null          # null: the bundled surrogate
    device:
      spec: null               # null: the virtual DNPU the surrogate was generated from (its provenance)
      plateau_samples: 4       # device samples averaged per operating point
      threads: null            # numba threads of the virtual DNPU (speed only: not part of the identity)

Trials run in worker processes, so they get these settings (plain data) and
build their own back ends with :func:`surrogate_processor` and
:func:`device_processor`.

:class:`Finished` keeps a study's finished pieces (trials, groups of trials,
device stages) in the run's checkpoint, each under a key that names it, so a
study that is interrupted and started again skips what it has and redoes
only the rest. A piece is stored as the plain data its function returned,
and an uninterrupted run reads its own pieces back from the same store, so
both runs use the very same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from inmaterio.config import StrictModel
from inmaterio.devices.registry import DeviceSpec
from inmaterio.errors import ConfigError
from inmaterio.tasks.run import backends_identity

if TYPE_CHECKING:
    from inmaterio.processors import DeviceProcessor, SurrogateProcessor
    from inmaterio.runs import RunFolder
    from inmaterio.surrogate import SurrogateModel

__all__ = [
    "SurrogateChoice",
    "DeviceChoice",
    "StudyBackends",
    "Finished",
    "surrogate_model",
    "surrogate_processor",
    "device_processor",
    "backends_identity",
]


class SurrogateChoice(StrictModel):
    """The surrogate a study trains on.

    model_dir : a saved surrogate folder; null = the bundled default model.
    """

    model_dir: Path | None = None


class DeviceChoice(StrictModel):
    """The device a study measures on.

    spec : a device spec (``{type: analytic, noise_na: 2}``, ``{type: hopping, ...}``); null = the
        virtual DNPU recorded in the surrogate's provenance (the device it was generated from).
    plateau_samples : device samples averaged per operating point (>= 1).
    threads : numba threads of a virtual DNPU (>= 1; null: all cores). Speed only: the
        measurements do not depend on it, so a run may resume with another value.
    """

    spec: DeviceSpec | None = None
    plateau_samples: int = Field(1, ge=1)
    threads: int | None = Field(None, ge=1)


def surrogate_model(choice: SurrogateChoice) -> SurrogateModel:
    """The surrogate model of ``choice`` (the bundled one for ``model_dir: null``)."""
    from inmaterio.surrogate import load_default_surrogate, load_surrogate

    return load_default_surrogate() if choice.model_dir is None else load_surrogate(choice.model_dir)


def surrogate_processor(choice: SurrogateChoice) -> SurrogateProcessor:
    """A noise-free :class:`~inmaterio.processors.SurrogateProcessor` of ``choice``."""
    from inmaterio.processors import SurrogateProcessor

    return SurrogateProcessor(surrogate_model(choice))


def device_processor(choice: DeviceChoice, surrogate: SurrogateProcessor) -> DeviceProcessor:
    """The device of ``choice`` as a processor averaging ``plateau_samples`` samples per point.

    Raises
    ------
    ConfigError
        ``spec: null`` and a surrogate whose provenance records no virtual DNPU.
    """
    from inmaterio.devices.registry import build_device, device_config_from_description
    from inmaterio.processors import DeviceProcessor

    if choice.spec is None:
        from inmaterio.devices.hopping import HoppingDevice

        description = surrogate.info.provenance.get("device")
        if not isinstance(description, dict):
            raise ConfigError(
                "device.spec is null, which means the virtual DNPU the surrogate was generated from, but the "
                f"surrogate's provenance records no device (provenance device: {description!r}); give device.spec"
            )
        physical = HoppingDevice(device_config_from_description(description), n_threads=choice.threads)
    else:
        physical = build_device(choice.spec)
        if hasattr(physical, "n_threads"):
            physical.n_threads = choice.threads
    return DeviceProcessor(physical, plateau_samples=choice.plateau_samples)


@dataclass(frozen=True)
class StudyBackends:
    """What a study's ``prepare`` step built and checked before the run folder was touched.

    ``identity`` joins the run's identity (see :func:`backends_identity`); ``extra`` holds
    anything else the study prepared (its data, ...).
    """

    surrogate: SurrogateProcessor | None
    device: DeviceProcessor | None
    identity: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


class Finished:
    """A study's finished pieces, by key, kept in the run's checkpoint (``{"finished": {key: data}}``).

    ``data`` is plain data (numbers, strings, lists, dicts, tensors): what the checkpoint
    loads without pickle.
    """

    def __init__(self, run: RunFolder) -> None:
        self._run = run
        self._done: dict[str, Any] = dict((run.load_checkpoint() or {}).get("finished", {}))

    def __contains__(self, key: str) -> bool:
        return key in self._done

    def __getitem__(self, key: str) -> Any:
        return self._done[key]

    def save(self, key: str, data: Any) -> Any:
        """Keep ``data`` under ``key`` and write the checkpoint at once; return ``data`` as stored."""
        self._done[key] = data
        self._run.save_checkpoint({"finished": self._done})
        return data
