"""Analog in-memory crossbars: device models, tiles with their periphery, torch layers, PCM inference, training.

A weight matrix is stored as the conductances of non-ideal devices and read through DAC/ADC
periphery; ``pulsed`` holds the pulsed-update device models and their presets, ``pcm`` the PCM
programming-noise, drift and read-noise statistics, ``tile`` one array with its periphery,
``layers`` the torch layers built from tiles and the converter, ``inference`` programming and
evaluation over time with drift compensation
(``inference.program``, ``inference.set_time``, ``inference.reset``).

Training on pulsed devices: ``updates`` turns gradients into pulse counts (stochastic pulse trains,
pulse-count quantisation), ``analog_sgd`` is the optimizer whose tiles change only by pulses (rules
``pulse_train``, ``mbgd``, ``low_rank``), ``low_rank`` the streaming gradient decompositions,
``tiki_taka`` Tiki-Taka v1/v2, ``shd`` Stochastic Hamiltonian Descent, ``extraction`` reading weights out
of a tile by regression over random mat-vecs.
"""

from inmaterio.crossbars.analog_sgd import AnalogSGD, AnalogSGDConfig
from inmaterio.crossbars.extraction import MatVecAccumulator, extract_weights, one_hot_weights
from inmaterio.crossbars.inference import InferenceConfig, accuracy_over_time, hwa_tile_config, hwa_weight_noise
from inmaterio.crossbars.layers import AnalogConv2d, AnalogLinear, analog_tiles, convert_to_analog, convert_to_digital
from inmaterio.crossbars.low_rank import LowRankConfig
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
from inmaterio.crossbars.shd import SHDConfig, sgd_step, shd_step
from inmaterio.crossbars.tiki_taka import TikiTaka, TikiTakaConfig
from inmaterio.crossbars.tile import AnalogTile, IOConfig, TileConfig, ideal_tile, realistic_tile
from inmaterio.crossbars.updates import PulseTrainConfig

__all__ = [
    "AnalogConv2d",
    "AnalogLinear",
    "AnalogSGD",
    "AnalogSGDConfig",
    "AnalogTile",
    "ConstantStepDevice",
    "ExpStepDevice",
    "IOConfig",
    "InferenceConfig",
    "LowRankConfig",
    "MatVecAccumulator",
    "PCMNoiseModel",
    "PCM_PRESETS",
    "PRESETS",
    "PowStepDevice",
    "PulseTrainConfig",
    "PulsedArray",
    "PulsedDevice",
    "SHDConfig",
    "SoftBoundsDevice",
    "TikiTaka",
    "TikiTakaConfig",
    "TileConfig",
    "accuracy_over_time",
    "analog_tiles",
    "conductances_to_weights",
    "convert_to_analog",
    "convert_to_digital",
    "extract_weights",
    "hwa_tile_config",
    "hwa_weight_noise",
    "ideal_tile",
    "one_hot_weights",
    "pcm_preset",
    "preset",
    "pulse",
    "realistic_tile",
    "sample_devices",
    "sgd_step",
    "shd_step",
    "symmetry_point",
    "weights_to_conductances",
]
