"""The one place where a config's ``type:`` string becomes a device class.

A device spec is a mapping with a ``type`` key and that device's parameters,
e.g. ``{type: hopping, seed: 0, n_acceptors: 200}`` or ``{type: analytic}``.
:data:`DeviceSpec` is the pydantic union used inside other configs;
:func:`build_device` turns a validated spec into a :class:`Device`.

Every device describes itself (:meth:`Device.describe`) as its spec plus the
package version that made it, so a description stored as provenance (in a
model folder, a dataset, a run folder) rebuilds an identical device::

    device = device_from_description(json.loads(text)["device"])

Descriptions written before the registry names were used
(``"type": "HoppingDevice"``, ``"type": "AnalyticDevice"`` with ``range_v``)
are read as well.

Registering a new device (an instrument, ...) means: a spec class with a
``type: Literal[...]`` field, an entry in :data:`DEVICE_TYPES`, a member of
:data:`DeviceSpec`, a ``describe()`` that returns its spec, and a fast
example in ``tests/test_device_conformance.py``, whose
:func:`~inmaterio.devices.conformance.check_device` it must pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import Field

from inmaterio.config import StrictModel, validate_config
from inmaterio.devices.analytic import AnalyticDeviceConfig
from inmaterio.devices.base import Device
from inmaterio.devices.hopping.config import HoppingConfig
from inmaterio.devices.instruments.config import InstrumentDeviceConfig
from inmaterio.errors import ConfigError

__all__ = [
    "AnalyticDeviceConfig",
    "HoppingDeviceConfig",
    "DeviceSpec",
    "DeviceFile",
    "DEVICE_TYPES",
    "build_device",
    "device_spec_from_description",
    "device_from_description",
    "device_config_from_description",
]


class HoppingDeviceConfig(HoppingConfig):
    """Parameters of :class:`~inmaterio.devices.HoppingDevice` (see :class:`HoppingConfig`)."""

    type: Literal["hopping"] = "hopping"


DeviceSpec = Annotated[Union[HoppingDeviceConfig, AnalyticDeviceConfig, InstrumentDeviceConfig], Field(discriminator="type")]


def _build_analytic(spec: AnalyticDeviceConfig) -> Device:
    from inmaterio.devices.analytic import AnalyticDevice

    return AnalyticDevice(**spec.model_dump(exclude={"type"}))


def _build_instrument(spec: InstrumentDeviceConfig) -> Device:
    from inmaterio.devices.instruments.device import InstrumentDevice

    return InstrumentDevice(spec)


def _build_hopping(spec: HoppingDeviceConfig) -> Device:
    from inmaterio.devices.hopping import HoppingDevice  # numba: imported on first use

    return HoppingDevice(HoppingConfig(**spec.model_dump(exclude={"type"})))


@dataclass(frozen=True)
class DeviceType:
    """A registered device: its spec class and the function that builds it from a validated spec."""

    spec: type[StrictModel]
    build: Callable[[Any], Device]
    what: str


#: Every registered device, by the ``type`` name its specs and descriptions carry.
DEVICE_TYPES: dict[str, DeviceType] = {
    "hopping": DeviceType(HoppingDeviceConfig, _build_hopping, "the kinetic Monte Carlo virtual DNPU"),
    "analytic": DeviceType(AnalyticDeviceConfig, _build_analytic, "the closed-form test device"),
    "instrument": DeviceType(InstrumentDeviceConfig, _build_instrument, "a device on a (simulated or NI-DAQmx) instrument"),
}

# the type names of descriptions written before the registry's names were used
_LEGACY_TYPES = {"HoppingDevice": "hopping", "AnalyticDevice": "analytic"}


class DeviceFile(StrictModel):
    """A YAML file that names one device: ``device: {type: hopping, seed: 3}``."""

    device: DeviceSpec


def build_device(spec: HoppingDeviceConfig | AnalyticDeviceConfig) -> Device:
    """Instantiate the device a validated spec describes."""
    entry = DEVICE_TYPES.get(getattr(spec, "type", None))
    if entry is None or not isinstance(spec, entry.spec):
        raise ConfigError(f"{type(spec).__name__} is not a registered device spec; registered types: {sorted(DEVICE_TYPES)}")
    return entry.build(spec)


def device_spec_from_description(
    description: Any, source: str = "the recorded device description"
) -> HoppingDeviceConfig | AnalyticDeviceConfig:
    """The validated spec of a description written by :meth:`Device.describe` (old type names included).

    ``package_version`` is provenance, not a parameter, and is dropped.

    Raises
    ------
    ConfigError
        If ``description`` is not a mapping, names no registered type, or its parameters do not validate
        (the message names the field, its value and the rule).
    """
    if not isinstance(description, Mapping):
        raise ConfigError(f"{source} must be a mapping with a 'type' key, got {type(description).__name__} {description!r:.80}")
    fields = {k: v for k, v in description.items() if k != "package_version"}
    kind = fields.get("type")
    if kind in _LEGACY_TYPES:
        fields["type"] = kind = _LEGACY_TYPES[kind]
        if kind == "analytic" and "range_v" in fields:  # old analytic descriptions: range_v = [low, high]
            range_v = fields.pop("range_v")
            if not (isinstance(range_v, list | tuple) and len(range_v) == 2):
                raise ConfigError(f"invalid configuration in {source}: field 'range_v' = {range_v!r} must be [low, high] V")
            fields["low_v"], fields["high_v"] = range_v
    if kind not in DEVICE_TYPES:
        raise ConfigError(f"{source} has type {kind!r}; registered device types: {sorted(DEVICE_TYPES)}")
    return validate_config(DeviceFile, {"device": fields}, source=source).device


def device_from_description(description: Any, source: str = "the recorded device description") -> Device:
    """Rebuild the device a :meth:`Device.describe` description records (see :func:`device_spec_from_description`)."""
    return build_device(device_spec_from_description(description, source))


def device_config_from_description(description: Any) -> HoppingConfig:
    """The :class:`HoppingConfig` of a virtual DNPU's description (e.g. a surrogate's provenance).

    Raises
    ------
    ConfigError
        If the description is not of a hopping device or does not validate.
    """
    spec = device_spec_from_description(description)
    if not isinstance(spec, HoppingDeviceConfig):
        raise ConfigError(f"the recorded device is of type '{spec.type}', not a virtual DNPU (type 'hopping')")
    return HoppingConfig(**spec.model_dump(exclude={"type"}))
