"""Surrogate models: an MLP of a device, its DeviceInfo, and their files (safetensors + JSON)."""

from inmaterio.surrogate.info import DeviceInfo
from inmaterio.surrogate.io import (
    check_plausible,
    default_model_dir,
    export_surrogate,
    load_brainspy_checkpoint,
    load_default_surrogate,
    load_surrogate,
    save_surrogate,
)
from inmaterio.surrogate.model import SurrogateModel
from inmaterio.surrogate.sensitivity import electrode_sensitivity

__all__ = [
    "DeviceInfo",
    "SurrogateModel",
    "save_surrogate",
    "export_surrogate",
    "load_surrogate",
    "check_plausible",
    "load_brainspy_checkpoint",
    "load_default_surrogate",
    "default_model_dir",
    "electrode_sensitivity",
]
