"""The surrogate-model generator (SMG): from a device to a tested surrogate model.

sampling plan -> resumable acquisition -> dataset (clean, split) -> training
-> independent test set -> evaluation -> consistency check -> I-V comparison.
:func:`run_smg` runs it all from one :class:`SMGConfig`; each stage is usable alone.
"""

from inmaterio.smg.acquire import acquire
from inmaterio.smg.config import AcquisitionConfig, PostprocessConfig, SamplingConfig, SMGConfig, TrainConfig
from inmaterio.smg.consistency import consistency_check
from inmaterio.smg.dataset import Dataset, load_dataset, noise_floor_na, postprocess, save_dataset, split
from inmaterio.smg.evaluate import evaluate_surrogate
from inmaterio.smg.iv import IVCurves, iv_curves
from inmaterio.smg.pipeline import export_smg_model, run_smg
from inmaterio.smg.sampling import sample_plan
from inmaterio.smg.train import TrainingDivergedError, TrainResult, train_surrogate

__all__ = [
    "SMGConfig",
    "SamplingConfig",
    "AcquisitionConfig",
    "PostprocessConfig",
    "TrainConfig",
    "sample_plan",
    "acquire",
    "Dataset",
    "save_dataset",
    "load_dataset",
    "postprocess",
    "split",
    "noise_floor_na",
    "train_surrogate",
    "TrainResult",
    "TrainingDivergedError",
    "evaluate_surrogate",
    "consistency_check",
    "IVCurves",
    "iv_curves",
    "run_smg",
    "export_smg_model",
]
