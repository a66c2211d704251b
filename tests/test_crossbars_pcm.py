"""PCM inference statistics (crossbars/pcm.py) against closed forms, exact laws and aihwkit.

The independent truths: the published equations evaluated here in numpy float64; the exact
moments of a normal clipped at 0 (programming and read noise) and of a folded normal (drift
exponents), to which samples of 40,000 devices must agree within 3 standard errors; the power
law of drift; and, where it imports, IBM aihwkit's ``PCMLikeNoiseModel`` for equivalent
settings (deterministic parts to float rounding, sampled parts by two-sample KS tests).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import stats

from inmaterio.config import validate_config
from inmaterio.crossbars.pcm import (
    PCM_PRESETS,
    PCMNoiseModel,
    conductances_to_weights,
    pcm_preset,
    weights_to_conductances,
)
from inmaterio.errors import ConfigError

G_REL = [0.05, 0.1, 0.3, 0.6, 1.0]  # g / g_max of the test grid
TIMES_S = [1.0, 3600.0, 86400.0, 30 * 86400.0]  # 1 s, 1 h, 1 day, 1 month
N = 40_000  # devices per grid point

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # elementwise ops on ~1e5 numbers: one thread is fastest


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------- the equations, in numpy


def _sigma_prog_us(g_t_us, g_max_us=25.0, gamma=1.0):
    g = np.asarray(g_t_us, dtype=float) / g_max_us
    return gamma * np.maximum(-1.1731 * g**2 + 1.9650 * g + 0.26348, 0.0) * g_max_us / 25.0


def _nu_mean(g_us, g_max_us=25.0):
    g = np.maximum(np.asarray(g_us, dtype=float) / g_max_us, 1e-300)
    return np.clip(-0.0155 * np.log(g) + 0.0244, 0.049, 0.1)


def _nu_std(g_us, g_max_us=25.0):
    g = np.maximum(np.asarray(g_us, dtype=float) / g_max_us, 1e-300)
    return np.clip(-0.0125 * np.log(g) - 0.0059, 0.008, 0.045)


def _sigma_read_us(g_drift_us, g_state_us, t_s, g_max_us=25.0, gamma=1.0, t0_s=20.0, t_read_s=250e-9):
    g = np.asarray(g_state_us, dtype=float) / g_max_us
    with np.errstate(divide="ignore"):
        q_s = np.minimum(0.0088 / g**0.65, 0.2)
    tau = t_s + t0_s
    return gamma * np.asarray(g_drift_us, dtype=float) * q_s * math.sqrt(math.log((tau + t_read_s) / (2 * t_read_s)))


def _clipped_normal_moments(m, s):
    """Mean and std of max(X, 0), X ~ N(m, s) (s > 0)."""
    a = m / s
    cdf, pdf = stats.norm.cdf(a), stats.norm.pdf(a)
    mean = m * cdf + s * pdf
    second = (m**2 + s**2) * cdf + m * s * pdf
    return mean, np.sqrt(second - mean**2)


def _folded_normal_moments(m, s):
    """Mean and std of |X|, X ~ N(m, s)."""
    mean = s * np.sqrt(2 / np.pi) * np.exp(-(m**2) / (2 * s**2)) + m * (1 - 2 * stats.norm.cdf(-m / s))
    return mean, np.sqrt(m**2 + s**2 - mean**2)


def _assert_moments(samples: torch.Tensor, mean, std, what: str) -> None:
    """Columns of ``samples`` (n, k) have the given means and stds within 3 standard errors."""
    x = samples.double().numpy()
    n = x.shape[0]
    m_hat = x.mean(0)
    dev = x - m_hat
    m2, m4 = (dev**2).mean(0), (dev**4).mean(0)
    se_mean = np.sqrt(m2 / n)
    se_std = np.sqrt(np.maximum(m4 - m2**2, 0) / (4 * n * m2))  # delta method, any distribution
    z_mean = np.abs(m_hat - mean) / se_mean
    z_std = np.abs(np.sqrt(m2) - std) / se_std
    assert np.all(z_mean < 3), f"{what}: sample means {m_hat} vs {mean}, |z| = {z_mean}"
    assert np.all(z_std < 3), f"{what}: sample stds {np.sqrt(m2)} vs {std}, |z| = {z_std}"


# --------------------------------------------------------------------- config and presets


def test_defaults_are_the_published_model():
    m = PCMNoiseModel()
    assert (m.g_max_us, m.t_c_s, m.t0_s, m.t_read_s) == (25.0, 20.0, 20.0, 250e-9)
    assert (m.prog_noise_scale, m.read_noise_scale, m.drift_scale) == (1.0, 1.0, 1.0)


def test_presets():
    assert {"joshi2020", "spoon2021", "spoon2021_gamma_half"} <= set(PCM_PRESETS)
    assert pcm_preset("spoon2021") == pcm_preset("joshi2020") == PCMNoiseModel()
    half = pcm_preset("spoon2021_gamma_half")
    assert (half.prog_noise_scale, half.read_noise_scale, half.drift_scale) == (0.5, 0.5, 1.0)
    with pytest.raises(ConfigError, match="unknown PCM preset 'spoon2022'.*joshi2020.*spoon2021"):
        pcm_preset("spoon2022")
    with pytest.raises(ValidationError):  # frozen
        half.g_max_us = 10.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        PCM_PRESETS["mine"] = PCMNoiseModel()  # type: ignore[index]


@pytest.mark.parametrize(
    "field, value",
    [
        ("g_max_us", 0.0),
        ("g_max_us", -25.0),
        ("prog_noise_scale", -0.5),
        ("read_noise_scale", -1.0),
        ("drift_scale", -0.1),
        ("t_c_s", 0.0),
        ("t_read_s", -1e-9),
        ("t0_s", 0.0),
        ("g_max_us", float("nan")),
        ("t_c_s", "20"),
    ],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"field '{field}' = "):
        validate_config(PCMNoiseModel, {field: value})
    with pytest.raises(ValidationError, match=field):
        PCMNoiseModel(**{field: value})


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match="unknown key 'gamma'"):
        validate_config(PCMNoiseModel, {"gamma": 0.5})


# --------------------------------------------------------------------- closed forms


def test_closed_forms_match_the_equations():
    g_us = torch.tensor([0.0, 1e-6, 0.01, 0.1, 0.425, 1.25, 2.5, 5.0, 7.5, 15.0, 25.0, 30.0, 60.0], dtype=torch.float64)
    for m in (PCMNoiseModel(), PCMNoiseModel(g_max_us=40.0, prog_noise_scale=0.5, read_noise_scale=0.5, drift_scale=0.7)):
        gm = m.g_max_us
        g_scaled = g_us * gm / 25.0
        np.testing.assert_allclose(
            m.programming_noise_std_us(g_scaled).numpy(),
            _sigma_prog_us(g_scaled.numpy(), gm, m.prog_noise_scale),
            rtol=1e-13,
            atol=1e-15,
        )
        np.testing.assert_allclose(
            m.drift_exponent_mean(g_scaled).numpy(), m.drift_scale * _nu_mean(g_scaled.numpy(), gm), rtol=1e-13
        )
        np.testing.assert_allclose(
            m.drift_exponent_std(g_scaled).numpy(), m.drift_scale * _nu_std(g_scaled.numpy(), gm), rtol=1e-13
        )
        g_drift = 0.8 * g_scaled
        for t in [0.0, *TIMES_S]:
            np.testing.assert_allclose(
                m.read_noise_std_us(g_drift, t, g_prog_us=g_scaled).numpy(),
                _sigma_read_us(g_drift.numpy(), g_scaled.numpy(), t, gm, m.read_noise_scale),
                rtol=1e-13,
                atol=1e-15,
            )


def test_closed_forms_at_hand_computed_points():
    m = PCMNoiseModel()
    g = torch.tensor([0.0, 25.0], dtype=torch.float64)
    # sigma_prog(0) = 0.26348 uS; sigma_prog(g_max) = 0.26348 + 1.965 - 1.1731 = 1.05538 uS
    torch.testing.assert_close(m.programming_noise_std_us(g), torch.tensor([0.26348, 1.05538], dtype=torch.float64))
    # at g = 0 both drift fits sit at their upper clip, at g = g_max at their lower clip
    torch.testing.assert_close(m.drift_exponent_mean(g), torch.tensor([0.1, 0.049], dtype=torch.float64))
    torch.testing.assert_close(m.drift_exponent_std(g), torch.tensor([0.045, 0.008], dtype=torch.float64))
    # no drift and no read noise at g = 0; Q_s(1) = 0.0088 at g = g_max
    factor = math.sqrt(math.log((3620 + 250e-9) / 500e-9))
    torch.testing.assert_close(m.read_noise_std_us(g, 3600.0, g), torch.tensor([0.0, 25 * 0.0088 * factor], dtype=torch.float64))
    # programming noise is the fit at 25 uS scaled with g_max: same relative noise at 50 uS
    torch.testing.assert_close(PCMNoiseModel(g_max_us=50.0).programming_noise_std_us(2 * g), 2 * m.programming_noise_std_us(g))


def test_read_noise_state_defaults_to_the_drifted_conductance():
    m = PCMNoiseModel()
    g_drift = torch.tensor([2.0, 10.0], dtype=torch.float64)
    torch.testing.assert_close(m.read_noise_std_us(g_drift, 60.0), m.read_noise_std_us(g_drift, 60.0, g_prog_us=g_drift))
    # Q_s at the programmed state (higher conductance) is smaller
    assert torch.all(m.read_noise_std_us(g_drift, 60.0, g_prog_us=2 * g_drift) < m.read_noise_std_us(g_drift, 60.0))


# --------------------------------------------------------------------- sampled statistics


def test_programming_noise_statistics():
    m = PCMNoiseModel()
    g_t = torch.tensor([0.0, *G_REL], dtype=torch.float64) * m.g_max_us
    g_prog = m.program(g_t.expand(N, -1), _gen(1))
    sigma = _sigma_prog_us(g_t.numpy())
    mean, std = _clipped_normal_moments(g_t.numpy(), sigma)
    _assert_moments(g_prog, mean, std, "programmed conductance")
    assert torch.all(g_prog >= 0)
    # gamma = 0.5 halves the noise
    half = pcm_preset("spoon2021_gamma_half").program(g_t[1:].expand(N, -1), _gen(2))
    _assert_moments(half, *_clipped_normal_moments(g_t[1:].numpy(), 0.5 * sigma[1:]), "programmed conductance, gamma 0.5")


def test_drift_exponent_statistics():
    m = PCMNoiseModel()
    g = torch.tensor([0.0, 0.017, *G_REL], dtype=torch.float64) * m.g_max_us  # 0.017: largest sigma/mu
    nu = m.sample_drift_exponents(g.expand(N, -1), _gen(3))
    assert torch.all(nu >= 0)
    _assert_moments(nu, *_folded_normal_moments(_nu_mean(g.numpy()), _nu_std(g.numpy())), "drift exponent")
    scaled = PCMNoiseModel(drift_scale=2.0).sample_drift_exponents(g.expand(N, -1), _gen(4))
    _assert_moments(scaled, *_folded_normal_moments(2 * _nu_mean(g.numpy()), 2 * _nu_std(g.numpy())), "drift exponent x2")
    assert torch.equal(PCMNoiseModel(drift_scale=0.0).sample_drift_exponents(g, _gen(5)), torch.zeros_like(g))


@pytest.mark.parametrize("t_s", TIMES_S)
def test_read_noise_statistics(t_s):
    m = PCMNoiseModel()
    g_t = torch.tensor(G_REL, dtype=torch.float64) * m.g_max_us
    g_drift = g_t * (1 + t_s / 20) ** -0.06  # a drifted state below the programmed one
    g_read = m.read(g_drift.expand(N, -1), t_s, _gen(6), g_prog_us=g_t)
    sigma = _sigma_read_us(g_drift.numpy(), g_t.numpy(), t_s)
    _assert_moments(g_read, *_clipped_normal_moments(g_drift.numpy(), sigma), f"read conductance at {t_s} s")
    assert torch.all(g_read >= 0)


def test_read_noise_grows_with_time_and_reads_are_fresh():
    m = PCMNoiseModel()
    g = torch.full((5,), 10.0, dtype=torch.float64)
    stds = [m.read_noise_std_us(g, t, g)[0].item() for t in [0.0, *TIMES_S]]
    assert all(a < b for a, b in zip(stds, stds[1:]))
    gen = _gen(7)
    assert not torch.equal(m.read(g, 1.0, gen, g), m.read(g, 1.0, gen, g))


# --------------------------------------------------------------------- drift


def test_drift_is_the_power_law():
    m = PCMNoiseModel()
    g = torch.tensor([0.0, 0.3, 2.0, 12.5, 25.0], dtype=torch.float64)
    nu = torch.tensor([0.1, 0.0, 0.049, 0.07, 0.2], dtype=torch.float64)
    for t in [0.0, 0.5, *TIMES_S, 10 * 365 * 86400.0]:
        expected = g.numpy() * ((t + 20.0) / 20.0) ** -nu.numpy()
        np.testing.assert_allclose(m.drift(g, nu, t).numpy(), expected, rtol=1e-14, atol=0)
    assert torch.equal(m.drift(g, nu, 0.0), g)  # t0 = t_c: no drift when inference starts
    later = PCMNoiseModel(t0_s=5.0, t_c_s=20.0)  # inference starts 15 s before the reference time
    assert torch.equal(later.drift(g, nu, 15.0), g)
    moving = (nu > 0) & (g > 0)
    assert torch.all(later.drift(g, nu, 0.0)[moving] > g[moving])  # the power law, extrapolated back
    assert torch.all(m.drift(g, nu, 3600.0) <= g)
    # one exponent per row broadcasts over a tile
    tile = g.expand(3, -1)
    row_nu = torch.tensor([[0.05], [0.06], [0.07]], dtype=torch.float64)
    torch.testing.assert_close(m.drift(tile, row_nu, 100.0)[1], m.drift(g, torch.full_like(g, 0.06), 100.0))


def test_conductance_at_is_drift_then_read():
    m = PCMNoiseModel()
    g_prog = torch.tensor([1.0, 5.0, 20.0], dtype=torch.float64).expand(N, -1)
    nu = m.sample_drift_exponents(g_prog, _gen(8))
    a = m.conductance_at(g_prog, nu, 86400.0, _gen(9))
    b = m.read(m.drift(g_prog, nu, 86400.0), 86400.0, _gen(9), g_prog_us=g_prog)
    assert torch.equal(a, b)
    zero = pcm_preset("noiseless")
    assert torch.equal(zero.conductance_at(g_prog, zero.sample_drift_exponents(g_prog, _gen(0)), 1e6, _gen(1)), g_prog)
    assert torch.equal(zero.program(g_prog, _gen(2)), g_prog)


# --------------------------------------------------------------------- randomness, dtypes


def test_draws_depend_only_on_the_generator():
    m = PCMNoiseModel()
    g = torch.linspace(0, 25, 50)
    torch.manual_seed(123)
    a = (m.program(g, _gen(11)), m.sample_drift_exponents(g, _gen(12)), m.read(g, 60.0, _gen(13), g))
    torch.manual_seed(456)
    b = (m.program(g, _gen(11)), m.sample_drift_exponents(g, _gen(12)), m.read(g, 60.0, _gen(13), g))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(m.program(g, _gen(11)), m.program(g, _gen(14)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_shape_are_kept(dtype):
    m = PCMNoiseModel()
    g = torch.rand(4, 3, 2, generator=_gen(0), dtype=dtype) * 25
    nu = m.sample_drift_exponents(g, _gen(1))
    for out in (
        m.program(g, _gen(2)),
        nu,
        m.drift(g, nu, 10.0),
        m.read(g, 10.0, _gen(3), g),
        m.conductance_at(g, nu, 5.0, _gen(4)),
    ):
        assert out.dtype == dtype and out.shape == g.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_generator_on_cuda_tensors_gives_the_cpu_numbers():
    m = PCMNoiseModel()
    g = torch.linspace(0, 25, 100, dtype=torch.float64)
    on_gpu = m.program(g.cuda(), _gen(5))
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), m.program(g, _gen(5)))


# --------------------------------------------------------------------- weight mapping


def test_weight_mapping_round_trip_and_devices():
    w = torch.tensor([[-2.0, -1.0, -0.25, 0.0], [0.25, 0.5, 1.0, 3.0]], dtype=torch.float64)
    g_plus, g_minus = weights_to_conductances(w, 1.0, 25.0)
    torch.testing.assert_close(g_plus, torch.tensor([[0, 0, 0, 0], [6.25, 12.5, 25.0, 25.0]], dtype=torch.float64))
    torch.testing.assert_close(g_minus, torch.tensor([[25.0, 25.0, 6.25, 0], [0, 0, 0, 0]], dtype=torch.float64))
    back = conductances_to_weights(g_plus, g_minus, 1.0, 25.0)
    inside = w.abs() <= 1
    torch.testing.assert_close(back[inside], w[inside], rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(back[~inside], w[~inside].sign())  # saturated at +-w_max

    x = torch.randn(64, 32, generator=_gen(0), dtype=torch.float64)
    row_max = x.abs().amax(dim=1, keepdim=True)  # one scale per row
    g_plus, g_minus = weights_to_conductances(x, row_max, 40.0)
    assert torch.all((g_plus >= 0) & (g_plus <= 40) & (g_minus >= 0) & (g_minus <= 40))
    assert torch.all((g_plus == 0) | (g_minus == 0))  # one device of a pair at 0
    assert torch.all(g_plus[x > 0] > 0) and torch.all(g_minus[x < 0] > 0)
    # the largest |w| of each row sits at g_max
    torch.testing.assert_close(
        torch.maximum(g_plus.amax(dim=1), g_minus.amax(dim=1)), torch.full((64,), 40.0, dtype=torch.float64)
    )

    torch.testing.assert_close(conductances_to_weights(g_plus, g_minus, row_max, 40.0), x, rtol=1e-14, atol=1e-15)


def test_weight_mapping_is_differentiable():
    w = torch.tensor([-0.5, 0.2, 2.0], requires_grad=True)
    g_plus, g_minus = weights_to_conductances(w, 1.0, 25.0)
    (g_plus - g_minus).sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor([25.0, 25.0, 0.0]))


# --------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("t_s", [-1.0, float("nan"), float("inf")])
def test_bad_time_names_t_s(t_s):
    m = PCMNoiseModel()
    g = torch.ones(3)
    for call in (
        lambda: m.drift(g, torch.zeros(3), t_s),
        lambda: m.read(g, t_s, _gen()),
        lambda: m.read_noise_std_us(g, t_s),
        lambda: m.conductance_at(g, torch.zeros(3), t_s, _gen()),
    ):
        with pytest.raises(ConfigError, match=r"t_s = .* outside the allowed range \[0, inf\) s"):
            call()
    with pytest.raises(ConfigError, match="t_s must be a number"):
        m.drift(g, torch.zeros(3), "1 h")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf")])
def test_bad_conductances_name_the_argument(bad):
    m = PCMNoiseModel()
    g = torch.tensor([[1.0, 2.0], [3.0, bad]])
    ok = torch.ones(2, 2)
    calls = {
        "g_target_us": [lambda: m.program(g, _gen()), lambda: m.programming_noise_std_us(g)],
        "g_us": [lambda: m.drift_exponent_mean(g), lambda: m.drift_exponent_std(g), lambda: m.sample_drift_exponents(g, _gen())],
        "g_prog_us": [
            lambda: m.drift(g, ok, 1.0),
            lambda: m.read(ok, 1.0, _gen(), g_prog_us=g),
            lambda: m.conductance_at(g, ok, 1.0, _gen()),
        ],
        "g_drift_us": [lambda: m.read(g, 1.0, _gen()), lambda: m.read_noise_std_us(g, 1.0)],
        "g_plus_us": [lambda: conductances_to_weights(g, ok, 1.0, 25.0)],
        "g_minus_us": [lambda: conductances_to_weights(ok, g, 1.0, 25.0)],
    }
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(
                ConfigError, match=rf"{name} must be finite conductances in \[0, inf\) µS: {name}\[1, 1\] = {bad}"
            ):
                fn()


def test_other_bad_arguments():
    m = PCMNoiseModel()
    g = torch.ones(2, 3)
    with pytest.raises(ConfigError, match=r"nu must be finite: nu\[2\] = nan"):
        m.drift(g, torch.tensor([0.1, 0.1, float("nan")]), 1.0)
    with pytest.raises(ConfigError, match=r"nu of shape \(2,\) does not broadcast to g_prog_us of shape \(2, 3\)"):
        m.drift(g, torch.zeros(2), 1.0)
    with pytest.raises(ConfigError, match="g_target_us must be a floating-point tensor, got dtype torch.int64"):
        m.program(torch.tensor([1, 2]), _gen())
    with pytest.raises(ConfigError, match="g_drift_us must be a torch.Tensor, got list"):
        m.read([1.0], 1.0, _gen())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator must be a torch.Generator, got int"):
        m.program(g, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"w must be finite: w\[1\] = nan"):
        weights_to_conductances(torch.tensor([0.0, float("nan")]), 1.0, 25.0)
    for w_max in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match=r"w_max = .* outside the allowed range \(0, inf\)"):
            weights_to_conductances(torch.ones(2), w_max, 25.0)
    with pytest.raises(ConfigError, match=r"w_max must be finite and > 0: w_max\[1, 0\] = 0.0"):
        weights_to_conductances(torch.ones(2, 2), torch.tensor([[1.0], [0.0]]), 25.0)
    with pytest.raises(ConfigError, match=r"w_max of shape \(3, 1\) does not broadcast"):
        weights_to_conductances(torch.ones(2, 2), torch.ones(3, 1), 25.0)
    for g_max in (0.0, -25.0, float("inf")):
        with pytest.raises(ConfigError, match=r"g_max_us = .* outside the allowed range \(0, inf\) µS"):
            conductances_to_weights(torch.ones(2), torch.zeros(2), 1.0, g_max)


# --------------------------------------------------------------------- aihwkit as an oracle

_AIHWKIT_SETTINGS = [
    {},  # the defaults on both sides
    {"g_max": 40.0, "prog_noise_scale": 0.5, "read_noise_scale": 0.5, "drift_scale": 0.7, "t_0": 10.0, "t_read": 1e-6},
]


@pytest.fixture(scope="module")
def aihwkit_pcm():
    return pytest.importorskip(
        "aihwkit.inference.noise.pcm",
        reason="aihwkit (IBM's reference PCM model, the oracle of these tests) does not import here",
    )


def _pair(aihwkit_pcm, settings: dict):
    """aihwkit's model and ours for the same settings (aihwkit's t_0 is both our t_c and t0)."""
    s = {
        "g_max": 25.0,
        "prog_noise_scale": 1.0,
        "read_noise_scale": 1.0,
        "drift_scale": 1.0,
        "t_0": 20.0,
        "t_read": 250e-9,
    } | settings
    theirs = aihwkit_pcm.PCMLikeNoiseModel(**s)
    ours = PCMNoiseModel(
        g_max_us=s["g_max"],
        prog_noise_scale=s["prog_noise_scale"],
        read_noise_scale=s["read_noise_scale"],
        drift_scale=s["drift_scale"],
        t_c_s=s["t_0"],
        t0_s=s["t_0"],
        t_read_s=s["t_read"],
    )
    return theirs, ours


def _fix_aihwkit_normals(monkeypatch, aihwkit_pcm, value: float) -> None:
    """Make aihwkit's standard-normal draws all equal ``value`` (it draws with ``randn_like``)."""
    monkeypatch.setattr(aihwkit_pcm, "randn_like", lambda x: torch.full_like(x, value))


@pytest.mark.parametrize("settings", _AIHWKIT_SETTINGS)
def test_aihwkit_closed_forms_agree(aihwkit_pcm, monkeypatch, settings):
    theirs, ours = _pair(aihwkit_pcm, settings)
    g_t = torch.linspace(0, 1, 201, dtype=torch.float64) * ours.g_max_us
    nu = torch.linspace(0, 0.15, 201, dtype=torch.float64)
    g_prog = g_t * 0.97 + 0.05
    tol = {"rtol": 1e-12, "atol": 1e-12}

    _fix_aihwkit_normals(monkeypatch, aihwkit_pcm, 1.0)  # a draw of +1 sigma
    torch.testing.assert_close(
        theirs.apply_programming_noise_to_conductance(g_t), g_t + ours.programming_noise_std_us(g_t), **tol
    )
    mean, std = ours.drift_exponent_mean(g_t), ours.drift_exponent_std(g_t)
    torch.testing.assert_close(theirs.generate_drift_coefficients(g_t), mean + std, **tol)
    for t in [0.0, *TIMES_S]:
        g_drift = ours.drift(g_prog, nu, t)
        expected = g_drift + ours.read_noise_std_us(g_drift, t, g_prog_us=g_prog)
        torch.testing.assert_close(theirs.apply_drift_noise_to_conductance(g_prog, nu, t), expected, **tol)

    _fix_aihwkit_normals(monkeypatch, aihwkit_pcm, 0.0)  # the mean: drift alone, exponent mean
    torch.testing.assert_close(theirs.generate_drift_coefficients(g_t), mean, **tol)
    for t in [0.0, *TIMES_S]:
        torch.testing.assert_close(theirs.apply_drift_noise_to_conductance(g_prog, nu, t), ours.drift(g_prog, nu, t), **tol)

    _fix_aihwkit_normals(monkeypatch, aihwkit_pcm, -1.0)  # -1 sigma: the fold of the exponent
    torch.testing.assert_close(theirs.generate_drift_coefficients(g_t), (mean - std).abs(), **tol)


def _ks_agree(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    """Every column of two (n, k) samples comes from the same distribution (two-sample KS, p > 0.001)."""
    for k in range(ours.shape[1]):
        p = stats.ks_2samp(ours[:, k].numpy(), theirs[:, k].numpy()).pvalue
        assert p > 1e-3, f"{what}, column {k}: KS p = {p:.2e}"


@pytest.mark.parametrize("settings", _AIHWKIT_SETTINGS)
def test_aihwkit_sampled_distributions_agree(aihwkit_pcm, settings):
    theirs, ours = _pair(aihwkit_pcm, settings)
    n = 20_000
    g_t = (torch.tensor([0.0, 0.017, *G_REL], dtype=torch.float64) * ours.g_max_us).expand(n, -1).contiguous()
    torch.manual_seed(2024)  # aihwkit draws from the global generator

    _ks_agree(ours.program(g_t, _gen(20)), theirs.apply_programming_noise_to_conductance(g_t), "programmed conductance")
    _ks_agree(ours.sample_drift_exponents(g_t, _gen(21)), theirs.generate_drift_coefficients(g_t), "drift exponent")
    for i, t in enumerate(TIMES_S):
        # the whole chain, each side from its own draws: program, draw exponents at the target, drift and read
        mine = ours.conductance_at(
            ours.program(g_t, _gen(30 + i)), ours.sample_drift_exponents(g_t, _gen(40 + i)), t, _gen(50 + i)
        )
        g_prog = theirs.apply_programming_noise_to_conductance(g_t)
        other = theirs.apply_drift_noise_to_conductance(g_prog, theirs.generate_drift_coefficients(g_t), t)
        _ks_agree(mine, other, f"conductance at {t} s")


def test_aihwkit_weight_pipeline_agrees(aihwkit_pcm):
    """aihwkit's apply_noise (its single-pair converter at w_max = max|w|) vs our mapping + model."""
    theirs, ours = _pair(aihwkit_pcm, {})
    n = 20_000
    levels = torch.tensor([-1.0, -0.3, 0.0, 0.05, 0.6], dtype=torch.float64)
    w = levels.expand(n, -1).contiguous()
    w_max = float(w.abs().max())
    t = 86400.0
    torch.manual_seed(7)
    other = theirs.apply_noise(w, t)

    g_plus, g_minus = weights_to_conductances(w, w_max, ours.g_max_us)
    read = []
    for k, g_t in enumerate((g_plus, g_minus)):
        nu = ours.sample_drift_exponents(g_t, _gen(60 + k))
        read.append(ours.conductance_at(ours.program(g_t, _gen(70 + k)), nu, t, _gen(80 + k)))
    mine = conductances_to_weights(read[0], read[1], w_max, ours.g_max_us)
    _ks_agree(mine, other, "weight after one day")
