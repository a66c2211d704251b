"""Dataset files, cleaning and splitting against hand-built data."""

import numpy as np
import pytest

from inmaterio.errors import ModelFileError
from inmaterio.smg.config import PostprocessConfig
from inmaterio.smg.dataset import Dataset, load_dataset, noise_floor_na, postprocess, save_dataset, split


def hand_built():
    """20 points: currents 0..19 nA except the marked ones."""
    current = np.arange(20, dtype=float)
    voltages = np.zeros((20, 3))
    current[3] = np.nan  # non-finite current
    voltages[4, 1] = np.inf  # non-finite voltage
    current[5] = -50.0  # at the lower rail -> clipped
    current[6] = 60.0  # beyond the upper rail -> clipped
    current[7] = 45.0  # inside the rails but an outlier
    return Dataset(voltages, current, np.full(20, 0.5), {"note": "hand-built"})


def test_postprocess_counts():
    ds = hand_built()
    clean, report = postprocess(ds, PostprocessConfig(clip_na=(-50.0, 50.0), outlier_sigma=5.0))
    assert report == {"n_input": 20, "n_nonfinite": 2, "n_clipped": 2, "n_outliers": 1, "n_kept": 15}
    kept = sorted(set(range(20)) - {3, 4, 5, 6, 7})
    np.testing.assert_array_equal(clean.current_na, np.array(kept, dtype=float))
    assert clean.metadata["postprocess"] == report and clean.metadata["note"] == "hand-built"


def test_postprocess_defaults_only_drop_nonfinite():
    clean, report = postprocess(hand_built(), PostprocessConfig())
    assert report == {"n_input": 20, "n_nonfinite": 2, "n_clipped": 0, "n_outliers": 0, "n_kept": 18}


def test_split_sizes_and_disjointness():
    ds = Dataset(np.arange(1000.0)[:, None], np.arange(1000.0), np.zeros(1000))
    train, val, test = split(ds, (0.7, 0.2, 0.1), seed=4)
    assert (len(train), len(val), len(test)) == (700, 200, 100)
    ids = [set(part.current_na.astype(int).tolist()) for part in (train, val, test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert ids[0] | ids[1] | ids[2] == set(range(1000))
    again = split(ds, (0.7, 0.2, 0.1), seed=4)
    np.testing.assert_array_equal(again[0].current_na, train.current_na)
    np.testing.assert_array_equal(train.voltages_v[:, 0], train.current_na)  # rows stay together


def test_noise_floor_is_rms_stderr():
    ds = Dataset(np.zeros((4, 2)), np.zeros(4), np.array([1.0, 1.0, 3.0, 3.0]))
    assert noise_floor_na(ds) == pytest.approx(np.sqrt(5.0))


def test_save_load_roundtrip(tmp_path):
    ds = Dataset(np.random.default_rng(0).normal(size=(30, 4)), np.arange(30.0), np.ones(30), {"a": [1, 2]})
    save_dataset(ds, tmp_path / "d")
    back = load_dataset(tmp_path / "d")
    np.testing.assert_array_equal(back.voltages_v, ds.voltages_v)
    np.testing.assert_array_equal(back.current_na, ds.current_na)
    assert back.metadata == {"a": [1, 2]}
    with pytest.raises(ModelFileError, match="already holds a dataset"):
        save_dataset(ds, tmp_path / "d")


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_dataset(tmp_path / "missing")
    ds = Dataset(np.zeros((3, 2)), np.zeros(3), np.zeros(3))
    save_dataset(ds, tmp_path / "d")
    (tmp_path / "d" / "data.npz").write_bytes(b"not a zip file")
    with pytest.raises(ModelFileError, match="data.npz"):
        load_dataset(tmp_path / "d")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "dataset.json").write_text('{"format": "something-else"}')
    with pytest.raises(ModelFileError, match="not an inmaterio dataset"):
        load_dataset(tmp_path / "e")
    (tmp_path / "e" / "dataset.json").write_text("{broken")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_dataset(tmp_path / "e")
