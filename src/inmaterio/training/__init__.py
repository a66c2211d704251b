"""Training of DNPU networks.

* :mod:`~inmaterio.training.losses` — losses and fitness functions (registry :func:`get_loss`);
* :mod:`~inmaterio.training.metrics` — logistic threshold accuracy, confusion matrix;
* :mod:`~inmaterio.training.gd` — gradient descent (:func:`train_gd`, its :class:`Callback` hooks);
* :mod:`~inmaterio.training.ga` — the genetic algorithm (:class:`GeneticAlgorithm`);
"""

from inmaterio.training.ga import GAConfig, GAResult, GeneticAlgorithm
from inmaterio.training.gd import Callback, EpochEnd, GDConfig, GDResult, StepEnd, train_gd
from inmaterio.training.losses import LOSSES, get_loss
from inmaterio.training.metrics import fit_logistic_threshold, threshold_accuracy

__all__ = [
    "Callback",
    "EpochEnd",
    "GAConfig",
    "GAResult",
    "GDConfig",
    "GDResult",
    "GeneticAlgorithm",
    "LOSSES",
    "StepEnd",
    "fit_logistic_threshold",
    "get_loss",
    "threshold_accuracy",
    "train_gd",
]
