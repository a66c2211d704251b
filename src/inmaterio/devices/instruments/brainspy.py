"""brains-py hardware configuration files (YAML) as :class:`InstrumentDeviceConfig` objects.

A brains-py hardware processor is configured by a mapping like::

    processor_type: cdaq_to_cdaq            # or cdaq_to_nidaq
    max_ramping_time_seconds: 0.03          # time to ramp from 0 V to the largest range end
    driver:
      tasks_driver_type: local
      sampling_frequency: 1000              # Hz
      amplification: 28.5                  # nA per V read (one number, or one per readout channel)
      output_clipping_range: [-4, 4]        # V at the ADC
      instruments_setup:
        device_no: single                   # or multiple: one sub-mapping per device (A, B, ...)
        activation_instrument: cDAQ1Mod3
        activation_channels: [8, 10, 13, 11, 7, 12, 14]
        min_activation_voltages: [-1.2, -1.2, -1.2, -1.2, -1.2, -0.7, -0.7]
        max_activation_voltages: [0.6, 0.6, 0.6, 0.6, 0.6, 0.3, 0.3]
        readout_instrument: cDAQ1Mod4
        readout_channels: [2]
        trigger_source: cDAQ1/segment1
    data:
      waveform: {plateau_length: 3, slope_length: 0.15}

How each key maps: ``processor_type`` -> ``backend.setup``; channels ->
``cDAQ1Mod3/ao8`` ... with the ranges of the same position, electrodes named
``e0 .. e{n-1}``, readouts ``e{n}``, ``e{n+1}`` ...; ``amplification`` ->
``gain_na_per_v``; ``output_clipping_range`` -> the readout's ADC range;
``sampling_frequency`` -> ``sample_rate_hz``; ``trigger_source: X`` -> the
output task starts on ``/X/ai/StartTrigger``; ``max_ramping_time_seconds: t``
-> ``safety.max_ramp_v_per_s`` = (largest absolute range end) / t;
``offset`` (samples the read lags) -> ``calibration.latency_samples``;
``data.waveform.plateau_length`` (samples) -> ``average_samples``.

Accepted and not needed: ``auto_start`` (the outputs are always armed and start
on the inputs' trigger), ``data.waveform.slope_length`` (ramps follow the ramp
limit), ``torch_model_dict`` (brains-py's simulation debugging),
``tasks_driver_type: local``, ``real_time_rack: false``.

Refused with a :class:`~inmaterio.errors.ConfigError` naming the key and
value: any other key, ``max_ramping_time_seconds: 0`` (brains-py's switch that
disables the ramp check; inmaterio never does), remote or real-time rack
drivers, set channel masks, ``device_no: multiple`` without ``device=``, and
``cdaq_to_nidaq`` without ``trigger_export`` / ``trigger_source`` (brains-py
aligns those setups with a spike on extra channels; inmaterio uses a wired
start trigger and the calibrated latency).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inmaterio.config import read_yaml, validate_config
from inmaterio.devices.instruments.config import InstrumentDeviceConfig
from inmaterio.errors import ConfigError

__all__ = ["config_from_brainspy"]

_TOP = {"processor_type", "max_ramping_time_seconds", "driver", "data", "offset", "auto_start"}
_DRIVER = {
    "tasks_driver_type", "sampling_frequency", "amplification", "output_clipping_range", "instruments_setup",
    "torch_model_dict", "real_time_rack",
}  # fmt: skip
_SETUP = {
    "device_no", "activation_instrument", "activation_channels", "min_activation_voltages", "max_activation_voltages",
    "readout_instrument", "readout_channels", "trigger_source", "activation_channel_mask",
}  # fmt: skip


def _unknown(mapping: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(mapping) - known)
    if extra:
        raise ConfigError(
            f"brains-py key(s) {[f'{where}{k}' for k in extra]} not supported by the importer (value "
            f"{mapping[extra[0]]!r}); supported here: {sorted(known)}"
        )


def _need(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"brains-py config has no '{where}{key}'; the importer needs it")
    return mapping[key]


def config_from_brainspy(
    source: str | Path | dict[str, Any],
    *,
    device: str | None = None,
    trigger_source: str | None = None,
    trigger_export: str | None = None,
    hard_limit_v: float | None = None,
) -> InstrumentDeviceConfig:
    """Convert a brains-py hardware config (a YAML path or its mapping) to an :class:`InstrumentDeviceConfig`.

    Parameters
    ----------
    source : the YAML file or the mapping it holds.
    device : with ``device_no: multiple``, the key of the device to use (``A``, ``B``, ...).
    trigger_source, trigger_export : the wired start trigger of a ``cdaq_to_nidaq`` setup (see :class:`NIDAQConfig`);
        ``trigger_source`` also overrides a ``cdaq_to_cdaq`` file's trigger.
    hard_limit_v : the absolute output limit; default the larger of 1.5 V and the largest range end.

    Raises
    ------
    ConfigError
        For anything the importer does not support (see the module docstring), naming the key and value.
    """
    data = read_yaml(source) if isinstance(source, str | Path) else source
    if not isinstance(data, dict):
        raise ConfigError(f"a brains-py hardware config must be a mapping, got {type(data).__name__}")
    _unknown(data, _TOP, "")
    kind = _need(data, "processor_type", "")
    if kind not in ("cdaq_to_cdaq", "cdaq_to_nidaq"):
        raise ConfigError(
            f"brains-py processor_type {kind!r} is not supported; the importer reads hardware setups 'cdaq_to_cdaq' and "
            "'cdaq_to_nidaq' (a simulation is a SimulatedDAQConfig)"
        )
    driver = _need(data, "driver", "")
    _unknown(driver, _DRIVER, "driver.")
    if driver.get("tasks_driver_type", "local") != "local" or driver.get("real_time_rack", False):
        raise ConfigError(
            f"brains-py driver.tasks_driver_type {driver.get('tasks_driver_type')!r} / real_time_rack "
            f"{driver.get('real_time_rack')!r}: remote (real-time rack) drivers are not supported, only 'local'"
        )
    setup = _need(driver, "instruments_setup", "driver.")
    if setup.get("device_no", "single") == "multiple":
        others = sorted(k for k in setup if k not in _SETUP)
        if device is None or device not in setup:
            raise ConfigError(f"brains-py device_no: multiple: give device= one of {others} (got {device!r})")
        shared = {k: v for k, v in setup.items() if k in ("trigger_source",)}
        setup = {**shared, **setup[device]}
        where = f"driver.instruments_setup.{device}."
    else:
        where = "driver.instruments_setup."
    _unknown(setup, _SETUP, where)
    mask = setup.get("activation_channel_mask")
    if mask is not None and any(mask):
        raise ConfigError(f"brains-py {where}activation_channel_mask {mask} is not supported (only all zeros)")
    channels = list(_need(setup, "activation_channels", where))
    lows = list(_need(setup, "min_activation_voltages", where))
    highs = list(_need(setup, "max_activation_voltages", where))
    if not len(channels) == len(lows) == len(highs):
        raise ConfigError(
            f"brains-py {where}activation_channels ({len(channels)}), min_activation_voltages ({len(lows)}) and "
            f"max_activation_voltages ({len(highs)}) must have the same length"
        )
    out_instrument = _need(setup, "activation_instrument", where)
    in_instrument = _need(setup, "readout_instrument", where)
    readouts = list(_need(setup, "readout_channels", where))
    amplification = _need(driver, "amplification", "driver.")
    gains = list(amplification) if isinstance(amplification, list | tuple) else [amplification] * len(readouts)
    if len(gains) != len(readouts):
        raise ConfigError(f"brains-py driver.amplification has {len(gains)} values for {len(readouts)} readout channels")
    clip = driver.get("output_clipping_range", [-10.0, 10.0])
    n = len(channels)
    activation = [
        {"electrode": f"e{k}", "channel": f"{out_instrument}/ao{ch}", "low_v": float(lo), "high_v": float(hi)}
        for k, (ch, lo, hi) in enumerate(zip(channels, lows, highs))
    ]
    readout = [
        {"name": f"e{n + k}", "channel": f"{in_instrument}/ai{ch}", "gain_na_per_v": float(g), "low_v": float(clip[0]),
         "high_v": float(clip[1])}
        for k, (ch, g) in enumerate(zip(readouts, gains))
    ]  # fmt: skip
    largest = max(max(abs(float(x)) for x in lows), max(abs(float(x)) for x in highs))
    safety: dict[str, Any] = {"hard_limit_v": hard_limit_v if hard_limit_v is not None else max(1.5, largest)}
    if "max_ramping_time_seconds" in data:
        ramp_time = data["max_ramping_time_seconds"]
        if not isinstance(ramp_time, int | float) or ramp_time <= 0:
            raise ConfigError(
                f"brains-py max_ramping_time_seconds {ramp_time!r} is not supported: 0 disables brains-py's ramp check, "
                "inmaterio never does; give the time (> 0 s) to ramp from 0 V to the largest range end"
            )
        safety["max_ramp_v_per_s"] = largest / float(ramp_time)
    backend: dict[str, Any] = {
        "kind": "nidaq", "setup": kind, "sample_rate_hz": _need(driver, "sampling_frequency", "driver."),
        "activation": activation, "readout": readout,
    }  # fmt: skip
    if kind == "cdaq_to_cdaq":
        trigger = trigger_source or (
            f"/{setup['trigger_source'].strip('/')}/ai/StartTrigger" if "trigger_source" in setup else None
        )
        if trigger is not None:
            backend["trigger_source"] = trigger
    else:
        if trigger_source is None or trigger_export is None:
            raise ConfigError(
                "brains-py processor_type 'cdaq_to_nidaq' aligns its reads with a spike on extra channels, which is not "
                "supported: wire the NI-DAQ card's start trigger to the cDAQ and give trigger_export (e.g. /Dev1/PFI0) "
                "and trigger_source (e.g. /cDAQ1/PFI0)"
            )
        backend["trigger_source"], backend["trigger_export"] = trigger_source, trigger_export
    result: dict[str, Any] = {"type": "instrument", "backend": backend, "safety": safety}
    if "offset" in data:
        result["calibration"] = {"latency_samples": data["offset"]}
    waveform = (data.get("data") or {}).get("waveform") or {}
    _unknown(data.get("data") or {}, {"waveform"}, "data.")
    _unknown(waveform, {"plateau_length", "slope_length"}, "data.waveform.")
    if "plateau_length" in waveform:
        plateau = waveform["plateau_length"]
        if not isinstance(plateau, int) or plateau < 1:
            raise ConfigError(
                f"brains-py data.waveform.plateau_length {plateau!r} must be a whole number of samples >= 1 for the importer"
            )
        result["average_samples"] = plateau
    return validate_config(InstrumentDeviceConfig, result, source="the imported brains-py config")
