"""Tabular loaders: split sizes, stratification, and scaling fitted on the training set only."""

import numpy as np
import pytest
import torch

from inmaterio.data.tabular import load_digits_split, load_iris_split, load_wine_split, scale_to_volts
from inmaterio.errors import ConfigError


@pytest.mark.parametrize(
    "loader, n_train, n_test, features, classes",
    [(load_iris_split, 105, 45, 4, 3), (load_wine_split, 124, 54, 13, 3), (load_digits_split, 1257, 540, 64, 10)],
)
def test_shapes_and_dtypes(loader, n_train, n_test, features, classes):
    d = loader(0)
    assert d.x_train.shape == (n_train, features) and d.x_test.shape == (n_test, features)
    assert d.y_train.shape == (n_train,) and d.y_test.shape == (n_test,)
    assert d.x_train.dtype == torch.float64 and d.y_train.dtype == torch.int64
    assert d.n_classes == classes and d.n_features == features
    assert sorted(d.y_train.unique().tolist()) == list(range(classes))


def test_iris_split_is_stratified_and_seeded():
    d = load_iris_split(3)
    assert torch.bincount(d.y_train).tolist() == [35, 35, 35]
    assert torch.bincount(d.y_test).tolist() == [15, 15, 15]
    again = load_iris_split(3)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_test, again.y_test)
    assert not torch.equal(d.x_train, load_iris_split(4).x_train)


def test_wine_split_keeps_class_proportions():
    d = load_wine_split(0)
    full = torch.bincount(torch.cat([d.y_train, d.y_test])).double()
    test = torch.bincount(d.y_test).double()
    assert torch.allclose(test / test.sum(), full / full.sum(), atol=0.02)


def test_scaling_uses_training_statistics_only():
    from sklearn.datasets import load_iris

    d = load_iris_split(1, low_v=-0.5, high_v=2.0)
    # the training set spans exactly the range on every feature
    assert torch.allclose(d.x_train.min(0).values, torch.full((4,), -0.5, dtype=torch.float64))
    assert torch.allclose(d.x_train.max(0).values, torch.full((4,), 2.0, dtype=torch.float64))
    assert d.x_test.min() >= -0.5 and d.x_test.max() <= 2.0
    # recover the raw training data with the stored training min/max: the map is the training one
    raw = load_iris().data
    back = d.feature_min + (d.x_train + 0.5) / 2.5 * (d.feature_max - d.feature_min)
    assert all(np.isclose(raw, row.numpy()).all(1).any() for row in back)
    # test data does not move the statistics: extreme test values change nothing in the training map
    x_tr = np.array([[0.0, 1.0], [2.0, 3.0]])
    tr, te, lo, hi = scale_to_volts(x_tr, np.array([[100.0, -100.0], [1.0, 2.0]]), low_v=-1, high_v=1)
    assert np.allclose(tr, [[-1, -1], [1, 1]]) and np.allclose(lo, [0, 1]) and np.allclose(hi, [2, 3])
    assert np.allclose(te, [[1, -1], [0, 0]])  # clipped, then the midpoint
    unclipped = scale_to_volts(x_tr, np.array([[4.0, 1.0]]), clip=False)[1]
    assert np.allclose(unclipped, [[3.0, -1.0]])


def test_constant_training_feature_maps_to_midpoint():
    tr, te, _, _ = scale_to_volts(np.array([[1.0, 0.0], [1.0, 2.0]]), np.array([[5.0, 1.0]]), low_v=0.0, high_v=1.0)
    assert np.allclose(tr[:, 0], 0.5) and np.allclose(te, [[0.5, 0.5]])
    d = load_digits_split(0)
    assert torch.isfinite(d.x_train).all() and torch.isfinite(d.x_test).all()


def test_bad_arguments():
    with pytest.raises(ConfigError, match="low_v < high_v"):
        scale_to_volts(np.zeros((2, 2)), low_v=1.0, high_v=1.0)
    with pytest.raises(ConfigError, match=r"shape \(m, 2\)"):
        scale_to_volts(np.zeros((2, 2)), np.zeros((2, 3)))
