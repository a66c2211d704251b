"""Devices: the common interface, the virtual DNPU and test devices."""

from inmaterio.devices.analytic import AnalyticDevice
from inmaterio.devices.base import Device, Electrode, Measurement, check_voltages
from inmaterio.devices.conformance import DeviceConformanceError, check_device

__all__ = [
    "Device", "Electrode", "Measurement", "check_voltages", "check_device", "DeviceConformanceError", "AnalyticDevice",
    "HoppingDevice", "InstrumentDevice",
]  # fmt: skip


def __getattr__(name: str):
    # HoppingDevice pulls in numba; import it on first use only.
    if name == "HoppingDevice":
        from inmaterio.devices.hopping import HoppingDevice

        return HoppingDevice
    if name == "InstrumentDevice":  # a device on a lab instrument (simulated DAQ or NI-DAQmx)
        from inmaterio.devices.instruments import InstrumentDevice

        return InstrumentDevice
    raise AttributeError(name)
