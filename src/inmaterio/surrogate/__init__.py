"""Surrogate models: an MLP of a device, its DeviceInfo, and their files (safetensors + JSON); ensembles of them
(mean and calibrated spread) and task-aware refinement (a copy fine-tuned on device points around a solution)."""

from inmaterio.surrogate.ensemble import SpreadCalibration, SurrogateEnsemble, load_ensemble
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
from inmaterio.surrogate.refine import Refinement, fine_tune, local_plan
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
    "SurrogateEnsemble",
    "SpreadCalibration",
    "load_ensemble",
    "Refinement",
    "fine_tune",
    "local_plan",
]
