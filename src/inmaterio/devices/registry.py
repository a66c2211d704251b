"""The one place where a config's ``type:`` string becomes a device class.

A device spec is a mapping with a ``type`` key and that device's parameters,
e.g. ``{type: hopping, seed: 0, n_acceptors: 200}`` or ``{type: analytic}``.
:data:`DeviceSpec` is the pydantic union used inside other configs;
:func:`build_device` turns a validated spec into a :class:`Device`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from inmaterio.config import StrictModel
from inmaterio.devices.base import Device
from inmaterio.devices.hopping.config import HoppingConfig
from inmaterio.errors import ConfigError

__all__ = ["AnalyticDeviceConfig", "HoppingDeviceConfig", "DeviceSpec", "DeviceFile", "build_device", "device_config_from_description"]


class AnalyticDeviceConfig(StrictModel):
    """Parameters of :class:`~inmaterio.devices.AnalyticDevice` (see there)."""

    type: Literal["analytic"] = "analytic"
    n_activation: int = Field(7, ge=2)
    low_v: float = -1.2
    high_v: float = 0.6
    amplitude_na: float = Field(100.0, gt=0)
    noise_na: float = Field(0.0, ge=0)
    seed: int = 0


class HoppingDeviceConfig(HoppingConfig):
    """Parameters of :class:`~inmaterio.devices.HoppingDevice` (see :class:`HoppingConfig`)."""

    type: Literal["hopping"] = "hopping"


DeviceSpec = Annotated[Union[HoppingDeviceConfig, AnalyticDeviceConfig], Field(discriminator="type")]


def build_device(spec: AnalyticDeviceConfig | HoppingDeviceConfig) -> Device:
    """Instantiate the device a validated spec describes."""
    if isinstance(spec, AnalyticDeviceConfig):
        from inmaterio.devices.analytic import AnalyticDevice

        return AnalyticDevice(**spec.model_dump(exclude={"type"}))
    if isinstance(spec, HoppingDeviceConfig):
        from inmaterio.devices.hopping import HoppingDevice

        return HoppingDevice(HoppingConfig(**spec.model_dump(exclude={"type"})))
    raise TypeError(f"unknown device spec {type(spec).__name__}")


class DeviceFile(StrictModel):
    """A YAML file that names one device: ``device: {type: hopping, seed: 3}``."""

    device: DeviceSpec


def device_config_from_description(description: dict) -> HoppingConfig:
    """Rebuild the :class:`HoppingConfig` recorded by ``HoppingDevice.describe()`` (e.g. in a model's provenance)."""
    from inmaterio.config import validate_config

    if description.get("type") != "HoppingDevice":
        raise ConfigError(f"device description is of type {description.get('type')!r}, expected 'HoppingDevice'")
    fields = {k: v for k, v in description.items() if k not in ("type", "package_version")}
    return validate_config(HoppingConfig, fields, source="the recorded device description")
