"""Analog in-memory crossbars: device models, tiles with their periphery, torch layers, PCM inference.

A weight matrix is stored as the conductances of non-ideal devices and read through DAC/ADC
periphery; ``pulsed`` holds the pulsed-update device models and their presets, ``pcm`` the PCM
programming-noise, drift and read-noise statistics, ``tile`` one array with its periphery,
``layers`` the torch layers built from tiles and the converter, ``inference`` programming and
evaluation over time with drift compensation
(``inference.program``, ``inference.set_time``, ``inference.reset``).
"""

from inmaterio.crossbars.inference import InferenceConfig, accuracy_over_time, hwa_tile_config, hwa_weight_noise
from inmaterio.crossbars.layers import AnalogConv2d, AnalogLinear, analog_tiles, convert_to_analog, convert_to_digital
from inmaterio.crossbars.pcm import (
    PCM_PRESETS,
    PCMNoiseModel,
    conductances_to_weights,
    pcm_preset,
    weights_to_conductances,
)
from inmaterio.crossbars.pulsed import (
    PRESETS,
    ConstantStepDevice,
    ExpStepDevice,
    PowStepDevice,
    PulsedArray,
    PulsedDevice,
    SoftBoundsDevice,
    preset,
    pulse,
    sample_devices,
    symmetry_point,
)
from inmaterio.crossbars.tile import AnalogTile, IOConfig, TileConfig, ideal_tile, realistic_tile

__all__ = [
    "AnalogConv2d",
    "AnalogLinear",
    "AnalogTile",
    "ConstantStepDevice",
    "ExpStepDevice",
    "IOConfig",
    "InferenceConfig",
    "PCMNoiseModel",
    "PCM_PRESETS",
    "PRESETS",
    "PowStepDevice",
    "PulsedArray",
    "PulsedDevice",
    "SoftBoundsDevice",
    "TileConfig",
    "accuracy_over_time",
    "analog_tiles",
    "conductances_to_weights",
    "convert_to_analog",
    "convert_to_digital",
    "hwa_tile_config",
    "hwa_weight_noise",
    "ideal_tile",
    "pcm_preset",
    "preset",
    "pulse",
    "realistic_tile",
    "sample_devices",
    "symmetry_point",
    "weights_to_conductances",
]
