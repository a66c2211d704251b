"""The surrogate-model generator (SMG): from a device to a tested surrogate model.

sampling plan -> resumable acquisition -> [adaptive rounds: measure where an ensemble
disagrees] -> dataset (clean, split) -> training -> independent test set -> evaluation
-> consistency check -> I-V comparison [-> ensemble and its calibrated spread].
:func:`run_smg` runs it all from one :class:`SMGConfig`; each stage is usable alone.
"""

from inmaterio.smg.acquire import acquire
from inmaterio.smg.adaptive import candidate_pool, select_spread
from inmaterio.smg.config import (
    AcquisitionConfig,
    AdaptiveConfig,
    PostprocessConfig,
    SamplingConfig,
    SMGConfig,
    TrainConfig,
)
from inmaterio.smg.consistency import consistency_check
from inmaterio.smg.dataset import Dataset, load_dataset, noise_floor_na, postprocess, save_dataset, split
from inmaterio.smg.evaluate import evaluate_surrogate, fit_spread_calibration
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
    "AdaptiveConfig",
    "sample_plan",
    "candidate_pool",
    "select_spread",
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
    "fit_spread_calibration",
    "consistency_check",
    "IVCurves",
    "iv_curves",
    "run_smg",
    "export_smg_model",
]
