"""The surrogate-model generator on the real virtual DNPU (slow: minutes of Monte Carlo)."""

import numpy as np
import pytest

from inmaterio.config import validate_config
from inmaterio.smg import SMGConfig, run_smg
from inmaterio.surrogate import load_surrogate


@pytest.mark.slow
def test_smg_pipeline_on_the_hopping_device(tmp_path):
    config = validate_config(
        SMGConfig,
        {
            "device": {"type": "hopping", "equilibration_hops": 3000, "block_hops": 3000, "min_blocks": 3, "max_blocks": 3},
            "sampling": {"kind": "lhs", "n_samples": 3000, "seed": 0},
            "test_sampling": {"kind": "uniform", "n_samples": 300, "seed": 1},
            "acquisition": {"batch_size": 500, "progress": False},
            "training": {"hidden_sizes": [64, 64, 64], "max_epochs": 60, "lr_schedule": "cosine", "learning_rate": 0.003},
            "consistency_repeats": 1,
            "consistency_points": 100,
            "iv_points": 11,
        },
    )
    summary = run_smg(config, tmp_path, progress=False)
    metrics = summary["test_metrics"]
    # a small model on little data: it must still explain most of the variance and stay within a few
    # noise floors; the consistency check must find no drift in the device
    assert metrics["correlation"] > 0.97
    assert metrics["rmse_over_noise_floor"] < 3.0
    assert summary["consistency"]["consistent"]
    model = load_surrogate(tmp_path / "model")
    assert model.info.noise_na == pytest.approx(metrics["rmse_na"])
    assert model.info.provenance["device"]["type"] == "hopping"
    assert np.isfinite(model.predict(np.zeros((1, 7)))).all()
