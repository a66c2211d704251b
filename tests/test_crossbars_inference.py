"""PCM inference over time (crossbars/inference.py): programming, drift, read, global drift compensation.

The independent truths: the exact weights of a noiseless programming (outputs of the digital
layer); the drift power law per device, evaluated in numpy from the stored exponents; the mean
of the drift factor ``r^-|X|`` of a folded normal exponent (its closed-form moment-generating
function) for the decay of the uncompensated output; the moments of a normal clipped at 0 for the
programming noise of both devices of a pair, to which repeated programmings agree within 3
standard errors; the read-noise level of the published model for the compensated output; and
the accuracy of a hand-built classifier whose decision threshold moves by the closed-form drift
factor.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import stats
from torch import nn

from inmaterio.config import validate_config
from inmaterio.crossbars.inference import (
    InferenceConfig,
    ProgrammedModel,
    accuracy_over_time,
    calibration_read,
    hwa_tile_config,
    hwa_weight_noise,
    program,
    reset,
    set_time,
    summarize_accuracy,
)
from inmaterio.crossbars.layers import AnalogLinear, analog_tiles, convert_to_analog
from inmaterio.crossbars.pcm import PCMNoiseModel, pcm_preset
from inmaterio.crossbars.tile import AnalogTile, IOConfig, TileConfig, ideal_tile, realistic_tile
from inmaterio.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
MONTH_S = 2592000.0
DRIFT_ONLY = PCMNoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0)
PROG_ONLY = PCMNoiseModel(read_noise_scale=0.0, drift_scale=0.0)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _nu_mean(g_rel):
    return np.clip(-0.0155 * np.log(np.maximum(g_rel, 1e-300)) + 0.0244, 0.049, 0.1)


def _nu_std(g_rel):
    return np.clip(-0.0125 * np.log(np.maximum(g_rel, 1e-300)) - 0.0059, 0.008, 0.045)


def _folded_mgf(m, s, lam):
    """E[exp(-lam |X|)], X ~ N(m, s): the mean drift factor r^-nu with lam = ln r."""
    return np.exp(-m * lam + (s * lam) ** 2 / 2) * stats.norm.cdf(m / s - s * lam) + np.exp(
        m * lam + (s * lam) ** 2 / 2
    ) * stats.norm.cdf(-m / s - s * lam)


def _clipped_normal_moments(m, s):
    """Mean and variance of max(X, 0), X ~ N(m, s)."""
    a = m / s
    cdf, pdf = stats.norm.cdf(a), stats.norm.pdf(a)
    mean = m * cdf + s * pdf
    second = (m**2 + s**2) * cdf + m * s * pdf
    return mean, second - mean**2


def _sigma_prog_us(g_rel, gamma=1.0, g_max_us=25.0):
    return gamma * np.maximum(-1.1731 * g_rel**2 + 1.9650 * g_rel + 0.26348, 0.0) * g_max_us / 25.0


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)  # nn.Linear's initialisation only
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).to(F64)


# --------------------------------------------------------------------- exactness and drift


def _cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 4)).to(F64)


@pytest.mark.parametrize(("make", "shape"), [(_mlp, (40, 6)), (_cnn, (6, 2, 5, 5))], ids=["mlp", "cnn"])
def test_noiseless_programming_gives_the_digital_outputs_at_any_time(make, shape):
    net = make()
    analog = convert_to_analog(net, ideal_tile(), seed=1)
    x = torch.randn(*shape, generator=_gen(1), dtype=F64)
    programmed = program(analog, "noiseless", _gen(2))
    assert isinstance(programmed, ProgrammedModel) and len(programmed.tiles) == len(list(analog_tiles(analog))) == 2
    for t_s in (0.0, 1.0, 3600.0, MONTH_S):
        for compensate in (False, True):
            set_time(analog, programmed, t_s, _gen(3), compensate=compensate)
            for tile in analog_tiles(analog):
                torch.testing.assert_close(tile.effective_weight, tile.weight.detach(), rtol=1e-14, atol=0)
                assert float(tile.compensation) == pytest.approx(1.0, abs=1e-14)
            with torch.no_grad():
                torch.testing.assert_close(analog(x), net(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t0_s", [20.0, 2.0])
def test_drift_only_follows_the_power_law_of_each_device(t0_s):
    noise = DRIFT_ONLY.model_copy(update={"t0_s": t0_s})
    layer = AnalogLinear(24, 10, tile_config=ideal_tile(), seed=3, dtype=F64)
    programmed = program(layer, noise, _gen(4))
    state = programmed.tiles[0]
    torch.testing.assert_close(state.g_prog_us, state.g_target_us, rtol=0, atol=0)  # no programming noise
    w = layer.get_weight().numpy()
    nu = state.nu.numpy()
    nu_active = np.where(w > 0, nu[0], nu[1])  # the device that holds the weight; the other is at 0 µS
    for t_s in (0.0, 1.0, 86400.0, MONTH_S):
        set_time(layer, programmed, t_s, _gen(5), compensate=False)
        expected = w * ((t0_s + t_s) / 20.0) ** (-nu_active)
        np.testing.assert_allclose(layer.tiles[0].effective_weight.numpy(), expected, rtol=1e-12, atol=1e-15)


def _spread_weights(n_out: int, n_in: int, seed: int) -> torch.Tensor:
    """|w| uniform in [0.05, 1] with random signs, one weight exactly 1 (so w_max = 1)."""
    g = _gen(seed)
    magnitude = 0.05 + 0.95 * torch.rand(n_out, n_in, generator=g, dtype=F64)
    w = magnitude * (torch.randint(0, 2, (n_out, n_in), generator=g) * 2 - 1)
    w[0, 0] = 1.0
    return w


def test_without_compensation_the_mean_output_decays_as_the_closed_form_and_compensation_undoes_it():
    layer = AnalogLinear(128, 128, bias=False, tile_config=ideal_tile(), seed=0, dtype=F64)
    layer.set_weight(_spread_weights(128, 128, seed=6))
    tile = layer.tiles[0]
    w_abs = layer.get_weight().abs().numpy()
    g_rel = w_abs  # w_max = 1 -> g / g_max = |w|
    m, s = _nu_mean(g_rel), _nu_std(g_rel)
    programmed = program(layer, DRIFT_ONLY, _gen(7))
    reference = float(programmed.tiles[0].reference)
    assert reference == pytest.approx(w_abs.sum(), rel=1e-12)  # one-hot reads of the ideal tile at t = 0
    eye = torch.eye(128, dtype=F64)
    for t_s in (3600.0, 86400.0, MONTH_S):
        lam = math.log((20.0 + t_s) / 20.0)
        mean_factor = _folded_mgf(m, s, lam)  # E[r^-nu] per device
        var_factor = _folded_mgf(m, s, 2 * lam) - mean_factor**2
        predicted = (w_abs * mean_factor).sum() / w_abs.sum()
        se = math.sqrt((w_abs**2 * var_factor).sum()) / w_abs.sum()
        set_time(layer, programmed, t_s, _gen(8), compensate=False)
        with torch.no_grad():
            measured = float(layer(eye).abs().sum()) / w_abs.sum()  # mean |column output| / its ideal value
        assert abs(measured - predicted) < 3 * se, (t_s, measured, predicted, se)
        assert predicted < 0.8  # a real decay (0.56 at one month)
        set_time(layer, programmed, t_s, _gen(8), compensate=True)
        assert float(tile.compensation) == pytest.approx(1 / measured, rel=1e-12)
        with torch.no_grad():
            assert float(layer(eye).abs().sum()) == pytest.approx(reference, rel=1e-12)


@pytest.mark.parametrize("tile_config", [ideal_tile(), realistic_tile()], ids=["ideal", "realistic"])
def test_compensation_restores_the_mean_output_within_the_read_noise_level(tile_config):
    noise = pcm_preset("spoon2021")
    layer = AnalogLinear(256, 64, bias=False, tile_config=tile_config, seed=0)
    layer.set_weight(torch.randn(64, 256, generator=_gen(9)) * 0.05)
    x = torch.randn(512, 256, generator=_gen(10))
    programmed = program(layer, noise, _gen(11))  # leaves the t_s = 0 state
    with torch.no_grad():
        y0 = layer(x).abs().mean()
    one = torch.tensor(noise.g_max_us, dtype=F64)
    for t_s in (86400.0, MONTH_S):
        level = float(noise.read_noise_std_us(one, t_s, one) / one)  # 1/f noise of a full-scale device: 4.8 % at 1 month
        set_time(layer, programmed, t_s, _gen(12), compensate=False)
        with torch.no_grad():
            plain = float(layer(x).abs().mean() / y0)
        set_time(layer, programmed, t_s, _gen(12), compensate=True)
        with torch.no_grad():
            restored = float(layer(x).abs().mean() / y0)
        assert abs(restored - 1) < level, (t_s, restored, level)
        assert plain < 1 - 5 * level  # the drift it undid is much larger than the noise


def test_calibration_reads_one_hot_vectors_through_the_periphery():
    bits, bound = 5, 1.0
    config = TileConfig(io=IOConfig(adc_bits=bits, output_bound=bound))
    tile = AnalogTile(12, 7, config, seed=0, dtype=F64)
    w = tile.weight.detach()
    scale = w.abs().max()
    step = bound / (2 ** (bits - 1) - 1)
    expected = (torch.round(w / scale / step) * step).abs().sum() * scale  # each one-hot read: one quantised row
    with torch.no_grad():
        tile.output_scale.fill_(3.0)
        tile.output_offset.fill_(0.5)
        tile.compensation.fill_(2.0)
    tile.train()
    assert float(calibration_read(tile)) == pytest.approx(float(expected), rel=1e-12)
    assert float(tile.compensation) == 2.0 and float(tile.output_offset[0]) == 0.5 and float(tile.output_scale[0]) == 3.0
    assert tile.training  # mode restored


# --------------------------------------------------------------------- programming noise


def test_repeated_programmings_give_the_programming_noise_std():
    levels = np.array([1.0, 0.6, 0.3, -0.6, 0.0])  # weight / w_max, one per block of 4 rows
    w = torch.tensor(np.repeat(levels, 4)[:, None] * np.ones((1, 16)), dtype=F64)
    layer = AnalogLinear(16, 20, bias=False, tile_config=ideal_tile(), seed=0, dtype=F64)
    layer.set_weight(w)
    repeats = 150
    samples = []
    plus = []
    for r in range(repeats):
        programmed = program(layer, PROG_ONLY, _gen(100 + r))
        samples.append(layer.tiles[0].effective_weight.clone())
        plus.append(programmed.tiles[0].g_prog_us[0, :4].clone())  # plus devices of the full-scale weights
    samples = torch.stack(samples).numpy()  # (repeats, 20, 16), weight units (w_max = 1)
    g_max = 25.0
    sigma_zero = _sigma_prog_us(0.0)
    m_off, v_off = _clipped_normal_moments(0.0, sigma_zero)  # the device at target 0: max(sigma(0) xi, 0)
    for k, level in enumerate(levels):
        x = samples[:, 4 * k : 4 * k + 4, :].ravel()
        g_t = abs(level) * g_max
        if level == 0:
            mean_us, var_us = 0.0, 2 * v_off  # both devices at 0
        else:
            m_on, v_on = _clipped_normal_moments(g_t, _sigma_prog_us(abs(level)))
            mean_us, var_us = math.copysign(m_on - m_off, level), v_on + v_off
        mean_w, var_w = mean_us / g_max, var_us / g_max**2  # back to weight units (w_max / g_max = 1 / 25)
        n = x.size
        se_mean = math.sqrt(var_w / n)
        centred = x - x.mean()
        se_var = math.sqrt((np.mean(centred**4) - np.var(centred) ** 2) / n)
        assert abs(x.mean() - mean_w) < 3 * se_mean, (level, x.mean(), mean_w)
        assert abs(x.var() - var_w) < 3 * se_var, (level, x.std(), math.sqrt(var_w))
    # the hardware-aware noise is the relative std of a full-scale device
    g_plus = torch.stack(plus).numpy().ravel() / g_max
    assert abs(g_plus.std() - hwa_weight_noise(PROG_ONLY)) < 3 * g_plus.std() / math.sqrt(2 * (g_plus.size - 1))


def test_hwa_weight_noise_is_sigma_prog_at_g_max_over_g_max():
    full = (-1.1731 + 1.9650 + 0.26348) / 25.0
    assert hwa_weight_noise("spoon2021") == pytest.approx(full, rel=1e-12)
    assert hwa_weight_noise(pcm_preset("spoon2021_gamma_half")) == pytest.approx(full / 2, rel=1e-12)
    assert hwa_weight_noise(PCMNoiseModel(g_max_us=10.0)) == pytest.approx(full, rel=1e-12)  # relative: g_max-free
    assert hwa_weight_noise("noiseless") == 0.0
    config = hwa_tile_config("spoon2021", realistic_tile())
    assert config.io.forward_weight_noise == pytest.approx(full) and config.backward == "ideal"
    assert config.io.adc_bits == realistic_tile().io.adc_bits


# --------------------------------------------------------------------- state handling


def test_reset_restores_the_ideal_model():
    net = _mlp()
    analog = convert_to_analog(net, ideal_tile(), seed=1)
    x = torch.randn(8, 6, generator=_gen(1), dtype=F64)
    programmed = program(analog, "spoon2021", _gen(2))
    set_time(analog, programmed, MONTH_S, _gen(3), compensate=True)
    assert not torch.allclose(analog(x), net(x))
    reset(analog)
    for tile in analog_tiles(analog):
        assert tile.effective_weight is None and float(tile.compensation) == 1.0
    torch.testing.assert_close(analog(x), net(x), rtol=1e-12, atol=1e-12)


def test_the_same_generator_gives_the_same_state():
    layer = AnalogLinear(30, 9, tile_config=realistic_tile(), seed=0)
    x = torch.randn(16, 30, generator=_gen(1))

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        programmed = program(layer, "spoon2021", _gen(seed))
        set_time(layer, programmed, 86400.0, _gen(seed + 1), compensate=True)
        with torch.no_grad():
            return layer.tiles[0].effective_weight.clone(), layer(x), float(layer.tiles[0].compensation)

    a, b, c = run(5), run(5), run(6)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)  # the periphery noise too (tile generators reseeded)
    assert a[2] == b[2] and a[2] != 1.0
    assert not torch.equal(a[0], c[0])


# --------------------------------------------------------------------- the experiment


def _threshold_classifier() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """logit_1 - logit_0 = (x0 + x1) - 1: class 1 iff x0 + x1 > 1, exactly, with weights 0 or +-w_max."""
    net = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1, 0, 0], [-1, -1, 0, 0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[0.0, 0], [1, -1]]))
        net[2].bias.copy_(torch.tensor([0.0, -1]))
    x = torch.randn(4000, 4, generator=_gen(20))
    return net, x, ((x[:, 0] + x[:, 1]) > 1).long()


def test_accuracy_over_time_rows_decay_and_compensation():
    net, x, y = _threshold_classifier()
    analog = convert_to_analog(net, ideal_tile(), seed=0)
    analog.train()

    def evaluate(model: nn.Module) -> float:
        assert not model.training
        with torch.no_grad():
            return 100.0 * float((model(x).argmax(dim=1) == y).double().mean())

    times = (1.0, 3600.0, MONTH_S)
    config = InferenceConfig(noise="spoon2021", times_s=times, repeats=4)
    rows = accuracy_over_time(analog, evaluate, config, _gen(21))
    assert len(rows) == 1 + 4 * len(times) * 2 and all(set(r) == {"t_s", "repeat", "compensated", "accuracy"} for r in rows)
    assert rows[0] == {"t_s": None, "repeat": 0, "compensated": False, "accuracy": 100.0}
    assert [(r["repeat"], r["t_s"], r["compensated"]) for r in rows[1:]] == [
        (k, t, c) for k in range(4) for t in times for c in (False, True)
    ]
    assert analog.training and all(t.effective_weight is None and float(t.compensation) == 1 for t in analog_tiles(analog))
    table = {(s["t_s"], s["compensated"]): s["mean"] for s in summarize_accuracy(rows)}
    # Closed form: every weight is 0 or +-w_max, so each layer's gain falls by E[r^-nu] at g = g_max
    # (nu ~ N(0.049, 0.008)); the decision threshold on x0 + x1 ~ N(0, 2) moves from 1 to 1 / gain^2.
    gain = float(_folded_mgf(0.049, 0.008, math.log((20 + MONTH_S) / 20)))
    predicted = 100 * (1 - (stats.norm.sf(1 / math.sqrt(2)) - stats.norm.sf(1 / gain**2 / math.sqrt(2))))
    assert abs(table[(MONTH_S, False)] - predicted) < 3, (table, predicted)  # ~77 %
    assert table[(1.0, False)] > 95 and table[(1.0, True)] > 95  # programming noise only costs the samples at the threshold
    assert table[(MONTH_S, True)] > 95 and table[(MONTH_S, True)] > table[(MONTH_S, False)] + 15
    # keyed streams: the same rows without compensation and with fewer times or repeats
    fewer = accuracy_over_time(
        analog, evaluate, config.model_copy(update={"times_s": (MONTH_S,), "repeats": 2, "drift_compensation": False}), _gen(21)
    )
    assert fewer[1:] == [r for r in rows[1:] if r["t_s"] == MONTH_S and r["repeat"] < 2 and not r["compensated"]]
    assert accuracy_over_time(analog, evaluate, config, _gen(21)) == rows


# --------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"times_s": [10.0, 1.0]}, "times_s"),
        ({"times_s": [1.0, 1.0]}, "times_s"),
        ({"times_s": [-1.0, 1.0]}, "times_s"),
        ({"times_s": []}, "times_s"),
        ({"times_s": ["1"]}, "times_s"),
        ({"times_s": [1.0, float("inf")]}, "times_s"),
        ({"repeats": 0}, "repeats"),
        ({"repeats": 2.5}, "repeats"),
        ({"noise": "spoon2022"}, "noise"),
        ({"noise": {"g_max_us": -1.0}}, "noise"),
        ({"drift": True}, "drift"),
    ],
)
def test_bad_configs_name_the_field(data, field):
    with pytest.raises(ConfigError, match=field):
        validate_config(InferenceConfig, data)
    with pytest.raises(ValidationError, match=field):
        InferenceConfig(**data)


def test_unknown_preset_lists_the_known_ones_and_presets_resolve():
    with pytest.raises(ConfigError, match="spoon2021_gamma_half"):
        validate_config(InferenceConfig, {"noise": "nope"})
    assert InferenceConfig().noise_model() == pcm_preset("spoon2021")
    assert InferenceConfig(noise="noiseless").noise_model().drift_scale == 0
    custom = PCMNoiseModel(prog_noise_scale=0.3)
    assert InferenceConfig(noise=custom).noise_model() is custom
    assert validate_config(InferenceConfig, {"noise": {"prog_noise_scale": 0.3}}).noise_model() == custom
    config = InferenceConfig(noise=custom, times_s=[1, 60])  # a YAML round trip keeps a custom model
    assert validate_config(InferenceConfig, config.model_dump(mode="json")) == config and config.times_s == (1.0, 60.0)
    with pytest.raises(ConfigError, match="unknown PCM preset 'nope'"):
        program(AnalogLinear(3, 2, seed=0), "nope", _gen())


def test_bad_calls_name_the_argument():
    net = _mlp()
    with pytest.raises(ConfigError, match="no AnalogTile"):
        program(net, "spoon2021", _gen())
    with pytest.raises(ConfigError, match="no AnalogTile"):
        accuracy_over_time(net, lambda m: 0.0, InferenceConfig(repeats=1), _gen())
    with pytest.raises(ConfigError, match="no AnalogTile"):
        reset(net)
    analog = convert_to_analog(net, seed=0)
    programmed = program(analog, "spoon2021", _gen())
    with pytest.raises(ConfigError, match="t_s"):
        set_time(analog, programmed, -1.0, _gen(), compensate=False)
    with pytest.raises(ConfigError, match="2 tiles but the model has 1"):
        set_time(AnalogLinear(6, 5, seed=0), programmed, 1.0, _gen(), compensate=False)
    with pytest.raises(ConfigError, match="shape"):
        set_time(
            convert_to_analog(nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 3)), seed=0), programmed, 1.0, _gen(), compensate=False
        )
    with pytest.raises(TypeError, match="torch.Generator"):
        program(analog, "spoon2021", 0)
    with pytest.raises(ConfigError, match="repeats"):
        accuracy_over_time(analog, lambda m: 0.0, {"repeats": 0}, _gen())
