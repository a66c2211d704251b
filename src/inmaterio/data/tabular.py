"""Small tabular classification sets bundled with scikit-learn (Iris, Wine, digits), split and scaled to volts.

Nothing is downloaded: the sets ship inside scikit-learn. Each loader makes a
stratified train/test split (``sklearn.model_selection.train_test_split``
with ``stratify=y`` and ``random_state=seed``) and scales every feature to
input voltages with statistics of the *training* set only:

.. math::  V = V_{low} + (V_{high} - V_{low}) \\frac{x - \\min_{train} x}{\\max_{train} x - \\min_{train} x}

per feature (default ``[V_low, V_high] = [-1, 1]`` V). Test values outside
the training range are clipped to ``[V_low, V_high]`` (``clip=True``, the
default) so that they stay inside the range an input layer accepts; a
feature that is constant on the training set maps to the midpoint.

Splits (train/test samples):

* :func:`load_iris_split`: 150 samples, 4 features, 3 classes -> 105/45 (EBANA's split size);
* :func:`load_wine_split`: 178 samples, 13 features, 3 classes -> 124/54 (30% test);
* :func:`load_digits_split`: 1797 8x8 images (64 features, 0..16), 10 classes -> 1257/540 (30% test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inmaterio.errors import ConfigError

__all__ = ["TabularSplit", "load_digits_split", "load_iris_split", "load_wine_split", "scale_to_volts"]


@dataclass(frozen=True)
class TabularSplit:
    """A stratified train/test split, features in volts.

    Attributes:
        x_train: ``(n_train, features)`` float64 volts.
        y_train: ``(n_train,)`` int64 class labels.
        x_test: ``(n_test, features)`` float64 volts.
        y_test: ``(n_test,)`` int64 class labels.
        feature_min: ``(features,)`` training minimum of each raw feature (data units).
        feature_max: ``(features,)`` training maximum of each raw feature.
        voltage_range_v: ``(V_low, V_high)`` the features were scaled to.
        feature_names: names of the features.
        class_names: names of the classes.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    feature_min: torch.Tensor
    feature_max: torch.Tensor
    voltage_range_v: tuple[float, float]
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


def scale_to_volts(
    x_train: np.ndarray, *others: np.ndarray, low_v: float = -1.0, high_v: float = 1.0, clip: bool = True
) -> tuple[np.ndarray, ...]:
    """Min-max scale features to ``[low_v, high_v]`` volts with the training set's per-feature min and max.

    Args:
        x_train: ``(n, features)`` raw training data; its min and max define the map.
        others: further ``(m, features)`` arrays (test data) mapped the same way.
        low_v, high_v: target interval in volts.
        clip: clip the mapped ``others`` to ``[low_v, high_v]``.

    Returns:
        ``(train_v, *others_v, feature_min, feature_max)``, float64.
    """
    if not (np.isfinite(low_v) and np.isfinite(high_v) and low_v < high_v):
        raise ConfigError(f"voltage range must be finite with low_v < high_v, got [{low_v}, {high_v}]")
    x_train = np.asarray(x_train, dtype=np.float64)
    if x_train.ndim != 2 or len(x_train) == 0:
        raise ConfigError(f"training data must have shape (n, features) with n > 0, got {x_train.shape}")
    lo, hi = x_train.min(0), x_train.max(0)
    span = hi - lo
    constant = span == 0

    def apply(x: np.ndarray, do_clip: bool) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != x_train.shape[1]:
            raise ConfigError(f"data must have shape (m, {x_train.shape[1]}), got {x.shape}")
        u = np.where(constant, 0.5, (x - lo) / np.where(constant, 1.0, span))
        v = low_v + (high_v - low_v) * u
        return np.clip(v, low_v, high_v) if do_clip else v

    return (apply(x_train, False), *(apply(o, clip) for o in others), lo, hi)


def _split(bunch, seed: int, test_size: int | float, low_v: float, high_v: float, clip: bool) -> TabularSplit:
    from sklearn.model_selection import train_test_split

    x, y = bunch.data, bunch.target
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, stratify=y, random_state=seed)
    v_tr, v_te, lo, hi = scale_to_volts(x_tr, x_te, low_v=low_v, high_v=high_v, clip=clip)
    names = getattr(bunch, "feature_names", None) or [f"pixel_{i}" for i in range(x.shape[1])]
    return TabularSplit(
        x_train=torch.from_numpy(v_tr),
        y_train=torch.from_numpy(np.asarray(y_tr, dtype=np.int64)),
        x_test=torch.from_numpy(v_te),
        y_test=torch.from_numpy(np.asarray(y_te, dtype=np.int64)),
        feature_min=torch.from_numpy(lo),
        feature_max=torch.from_numpy(hi),
        voltage_range_v=(float(low_v), float(high_v)),
        feature_names=tuple(str(n) for n in names),
        class_names=tuple(str(c) for c in bunch.target_names),
    )


def load_iris_split(
    seed: int = 0, *, test_size: int = 45, low_v: float = -1.0, high_v: float = 1.0, clip: bool = True
) -> TabularSplit:
    """Iris (150 x 4, 3 classes), stratified 105/45 train/test, features scaled to ``[low_v, high_v]`` V."""
    from sklearn.datasets import load_iris

    return _split(load_iris(), seed, test_size, low_v, high_v, clip)


def load_wine_split(
    seed: int = 0, *, test_size: int | float = 0.3, low_v: float = -1.0, high_v: float = 1.0, clip: bool = True
) -> TabularSplit:
    """Wine (178 x 13, 3 classes), stratified 124/54 train/test (30% test), scaled to ``[low_v, high_v]`` V."""
    from sklearn.datasets import load_wine

    return _split(load_wine(), seed, test_size, low_v, high_v, clip)


def load_digits_split(
    seed: int = 0, *, test_size: int | float = 0.3, low_v: float = -1.0, high_v: float = 1.0, clip: bool = True
) -> TabularSplit:
    """scikit-learn 8x8 digits (1797 x 64 pixels 0..16, 10 classes), stratified 1257/540 (30% test), scaled per pixel."""
    from sklearn.datasets import load_digits

    return _split(load_digits(), seed, test_size, low_v, high_v, clip)
