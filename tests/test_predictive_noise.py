"""Noise-aware training with an ensemble's predictive spread: the differentiable spread, the per-point output noise
of a :class:`SurrogateProcessor`, its statistics against the closed form, and the task config that asks for it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inmaterio.config import validate_config
from inmaterio.errors import ConfigError
from inmaterio.processors import SurrogateProcessor
from inmaterio.surrogate import SpreadCalibration, SurrogateModel, save_surrogate
from inmaterio.surrogate.ensemble import SurrogateEnsemble
from inmaterio.surrogate.io import ENSEMBLE_DIR
from inmaterio.tasks.config import RunConfig, SurrogateBackend
from inmaterio.tasks.run import backends_identity, build_surrogate_processor, run_task
from test_surrogate_ensemble import INFO, constant_model

#: members 1, 2, 6 nA: mean 3 nA, raw spread sqrt(((1-3)^2 + (2-3)^2 + (6-3)^2) / 2) = sqrt(7) nA
CONSTANTS = (1.0, 2.0, 6.0)
CALIBRATION = SpreadCalibration(scale=2.0, floor_na=1.0)  # calibrated spread sqrt(4 * 7 + 1) = sqrt(29) nA


def random_ensemble(calibration: SpreadCalibration | None = None) -> SurrogateEnsemble:
    torch.manual_seed(0)
    return SurrogateEnsemble([SurrogateModel(INFO, hidden_sizes=(8, 8)) for _ in range(3)], calibration)


def test_mean_and_spread_is_the_differentiable_twin_of_predict_with_std():
    ensemble = random_ensemble(CALIBRATION)
    v = torch.rand(50, 3) * 1.8 - 1.2
    mean, spread = ensemble.mean_and_spread(v)
    np_mean, np_spread = ensemble.predict_with_std(v.numpy())
    np.testing.assert_allclose(mean.detach().numpy(), np_mean, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(spread.detach().numpy(), np_spread, rtol=1e-4, atol=1e-4)
    same = SurrogateEnsemble([constant_model(2.0), constant_model(2.0)])  # members that agree exactly
    x = torch.zeros(4, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(same.mean_and_spread(x)[1].sum(), x)
    assert torch.isfinite(grad).all()
    assert same.metadata is same.members[0].metadata


@pytest.mark.parametrize("amplification", [1.0, -2.0])
def test_predictive_noise_has_the_variance_of_the_formula(amplification):
    """Output variance at one point = noise_std^2 + (|a| * calibrated spread)^2; mean = a * members' mean."""
    ensemble = SurrogateEnsemble([constant_model(c) for c in CONSTANTS], CALIBRATION)
    processor = SurrogateProcessor(
        ensemble, amplification=amplification, noise=True, noise_std_na=3.0, predictive_noise=True, clipping_na=None
    )
    torch.manual_seed(1)
    n = 200_000
    out = processor(torch.zeros(n, 3)).double()
    expected_var = 3.0**2 + amplification**2 * 29.0
    # sample variance of n Gaussian draws: relative standard error sqrt(2 / (n - 1)); 5 of them
    assert abs(out.var().item() / expected_var - 1) < 5 * math.sqrt(2 / (n - 1))
    assert abs(out.mean().item() - 3.0 * amplification) < 5 * math.sqrt(expected_var / n)
    repeated = processor.forward_repeated(torch.zeros(1, 3), torch.zeros(n, dtype=torch.long), 0).double()
    assert abs(repeated.var().item() / expected_var - 1) < 5 * math.sqrt(2 / (n - 1))  # noise per sample, not per point
    with processor.noise_off():
        torch.testing.assert_close(processor(torch.zeros(5, 3)), torch.full((5,), 3.0 * amplification))
    assert processor.predictive_noise and processor.noise_std_na == 3.0  # restored after noise_off
    assert processor.describe()["predictive_noise"] is True


def test_the_gradient_reaches_the_voltages_through_the_spread():
    """out = mean(v) + sqrt(n^2 + sigma(v)^2) * eps, the same eps drawn again: same values and gradients."""
    ensemble = random_ensemble(CALIBRATION)
    processor = SurrogateProcessor(ensemble, noise=True, noise_std_na=0.5, predictive_noise=True, clipping_na=None)
    v = (torch.rand(20, 3) * 1.8 - 1.2).requires_grad_()
    torch.manual_seed(7)
    out = processor(v)
    (grad,) = torch.autograd.grad(out.sum(), v)
    torch.manual_seed(7)
    mean, spread = ensemble.mean_and_spread(v)
    by_hand = mean + torch.sqrt(0.5**2 + spread**2) * torch.randn_like(mean)
    (grad_by_hand,) = torch.autograd.grad(by_hand.sum(), v)
    torch.testing.assert_close(out, by_hand)
    torch.testing.assert_close(grad, grad_by_hand)
    torch.manual_seed(7)  # with the spread's gradient cut, the gradient differs: the spread does reach the voltages
    mean, spread = ensemble.mean_and_spread(v)
    (grad_mean_only,) = torch.autograd.grad((mean + torch.sqrt(0.5**2 + spread.detach() ** 2) * torch.randn_like(mean)).sum(), v)
    assert not torch.allclose(grad, grad_mean_only)


def test_predictive_noise_needs_an_ensemble():
    with pytest.raises(ConfigError, match="predictive_noise needs an ensemble of surrogates .* got a SurrogateModel"):
        SurrogateProcessor(constant_model(1.0), predictive_noise=True)


def _ensemble_folder(path, calibration: SpreadCalibration | None = None):
    """An exported-ensemble layout: the model at ``path``, members 1 and 2 under ``ensemble/``."""
    members = random_ensemble().members
    save_surrogate(members[0], path)
    for k in (1, 2):
        save_surrogate(members[k], path / ENSEMBLE_DIR / f"member_{k}")
    if calibration is not None:
        (path / ENSEMBLE_DIR / "calibration.json").write_text(json.dumps(calibration.as_dict()))
    return path


def test_the_task_config_loads_the_ensemble_and_its_identity_covers_the_calibration(tmp_path):
    folder = _ensemble_folder(tmp_path / "ens", CALIBRATION)
    backend = SurrogateBackend(model_dir=folder, ensemble=True, noise=True, noise_std_na=2.0, predictive_noise=True)
    processor = build_surrogate_processor(backend)
    assert isinstance(processor.model, SurrogateEnsemble) and len(processor.model.members) == 3
    assert processor.predictive_noise and processor.noise_std_na == 2.0
    identity = backends_identity(processor, None)
    assert identity["surrogate_calibration"] == {"scale": 2.0, "floor_na": 1.0}
    other = build_surrogate_processor(backend.model_copy(update={"model_dir": _ensemble_folder(tmp_path / "other")}))
    assert backends_identity(other, None)["surrogate_calibration"] == {"scale": 1.0, "floor_na": 0.0}
    single = build_surrogate_processor(SurrogateBackend(model_dir=folder))
    assert "surrogate_calibration" not in backends_identity(single, None)
    assert set(SurrogateBackend().model_dump()) == {"model_dir", "noise", "noise_std_na"}  # earlier identities kept


def test_ensemble_without_a_folder_is_the_bundled_models_ensemble():
    from inmaterio.surrogate import default_model_dir, load_default_surrogate

    processor = build_surrogate_processor(SurrogateBackend(ensemble=True))
    members = processor.model.members
    assert len(members) == 5
    bundled = load_default_surrogate()
    assert all(torch.equal(a, b) for a, b in zip(members[0].state_dict().values(), bundled.state_dict().values()))
    saved = json.loads((default_model_dir() / "ensemble" / "calibration.json").read_text())
    assert processor.model.calibration.as_dict() == pytest.approx(saved)


def test_bad_ensemble_configs_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="predictive_noise: true takes the spread of an ensemble; set ensemble: true"):
        validate_config(
            RunConfig, {"task": {"type": "gates"}, "surrogate": {"model_dir": str(tmp_path), "predictive_noise": True}}
        )
    folder = _ensemble_folder(tmp_path / "ens")
    refine = validate_config(RunConfig, {
        "task": {"type": "gates", "gates": ["AND"], "refine": {}},
        "surrogate": {"model_dir": str(folder), "ensemble": True},
        "validation": {"device": {"type": "analytic", "n_activation": 3}},
    })  # fmt: skip
    with pytest.raises(ConfigError, match="task.refine fine-tunes one surrogate, and surrogate.ensemble is true"):
        run_task(refine, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("folder", ["gates_ensemble", "rings_ensemble"])
def test_the_ensemble_examples_validate_and_differ_only_in_the_noise(folder):
    from pathlib import Path

    from inmaterio.tasks.registry import load_run_config

    path = Path(__file__).resolve().parents[1] / "examples" / folder
    mean, predictive = (load_run_config(path / f"{name}.yaml") for name in ("mean", "predictive"))
    assert mean.surrogate.ensemble and not mean.surrogate.predictive_noise and predictive.surrogate.predictive_noise
    assert mean.surrogate.model_dir == predictive.surrogate.model_dir and predictive.surrogate.noise_std_na == 2.84
    assert mean.task == predictive.task and mean.validation == predictive.validation and mean.seed == predictive.seed
    if folder == "rings_ensemble":  # the network of rings_221.yaml
        assert load_run_config(path.parent / "rings_221.yaml").task == mean.task
