"""Lab instruments: a real chip on a National Instruments DAQ, or any device behind a simulated DAQ.

Layers, bottom up (each testable without the ones above it):

- :mod:`~inmaterio.devices.instruments.config`: typed configs (channels, safety limits, calibration,
  the simulated and NI-DAQmx backends, the instrument device);
- :mod:`~inmaterio.devices.instruments.safety`: the checks every waveform passes before it reaches a
  channel, clipping detection, and outputs to 0 V on errors, Ctrl-C and SIGTERM;
- :mod:`~inmaterio.devices.instruments.backend`: :class:`MeasurementBackend`, a safe synchronised
  write-and-read; :class:`SimulatedDAQ` and :class:`NIDAQBackend` implement it;
- :mod:`~inmaterio.devices.instruments.device`: :class:`InstrumentDevice`, the
  :class:`~inmaterio.devices.base.Device` every task uses (registry type ``instrument``),
  :func:`calibrate` and :func:`dry_run`;
- :mod:`~inmaterio.devices.instruments.measurement_file`: appendable HDF5 files, one per run
  (:func:`measurements_in`);
- :mod:`~inmaterio.devices.instruments.xarray_export`: a measurement file as xarray Datasets
  (:func:`open_measurements`) and NetCDF files (:func:`export_netcdf`; ``pip install "inmaterio[xarray]"``);
- :mod:`~inmaterio.devices.instruments.brainspy`: brains-py hardware YAML files as configs.
"""

from inmaterio.devices.instruments.backend import MeasurementBackend
from inmaterio.devices.instruments.brainspy import config_from_brainspy
from inmaterio.devices.instruments.config import (
    ActivationChannel,
    Calibration,
    InstrumentDeviceConfig,
    NIDAQConfig,
    ReadoutChannel,
    SafetyConfig,
    SimulatedDAQConfig,
)
from inmaterio.devices.instruments.device import (
    Acquisition,
    CalibrationReport,
    DryRun,
    InstrumentDevice,
    build_backend,
    calibrate,
    dry_run,
)
from inmaterio.devices.instruments.measurement_file import (
    RUN_MEASUREMENT_FILE,
    MeasurementFile,
    measurements_in,
    run_measurement_file,
)
from inmaterio.devices.instruments.nidaq import NIDAQBackend
from inmaterio.devices.instruments.safety import InstrumentError, ReadoutClippingError, TerminatedError
from inmaterio.devices.instruments.simulated import SimulatedDAQ
from inmaterio.devices.instruments.xarray_export import export_netcdf, open_measurements

__all__ = [
    "ActivationChannel", "ReadoutChannel", "SafetyConfig", "Calibration", "SimulatedDAQConfig", "NIDAQConfig",
    "InstrumentDeviceConfig", "MeasurementBackend", "SimulatedDAQ", "NIDAQBackend", "InstrumentDevice", "Acquisition",
    "build_backend", "CalibrationReport", "calibrate", "DryRun", "dry_run", "MeasurementFile", "RUN_MEASUREMENT_FILE",
    "measurements_in", "run_measurement_file", "open_measurements", "export_netcdf", "InstrumentError",
    "ReadoutClippingError", "TerminatedError", "config_from_brainspy",
]  # fmt: skip
