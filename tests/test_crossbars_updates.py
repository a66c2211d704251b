"""Pulse-count update rules: stochastic pulse trains and pulse-count quantisation, against their closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from inmaterio.crossbars.updates import PulseTrainConfig, pulse_probabilities, pulse_train_counts, quantized_counts


def _draws(x, d, lr, dw_min, config, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([pulse_train_counts(x, d, lr, dw_min, config, g) for _ in range(n)]).double()


@pytest.mark.parametrize("update_management", [False, True])
def test_pulse_train_counts_have_the_sgd_expectation_and_binomial_variance(update_management):
    x = torch.tensor([0.9, -0.4, 0.0, 0.2], dtype=torch.float64)
    d = torch.tensor([0.3, -0.8, 0.05], dtype=torch.float64)
    lr, dw_min = 0.01, 0.001
    config = PulseTrainConfig(bl=10, update_management=update_management)
    counts = _draws(x, d, lr, dw_min, config, 4000)
    expected = lr * torch.outer(d, x) / dw_min
    p, q, _ = pulse_probabilities(x, d, lr, dw_min, config)
    assert float(p.max()) < 1 and float(q.max()) < 1  # no clipping: the expectation is exact
    pq = torch.outer(q, p)
    variance = 10 * pq * (1 - pq)  # a sum of BL independent +-Bernoulli(p q) slots
    se = (variance / len(counts)).sqrt().clamp(min=1e-12)
    assert ((counts.mean(0) - expected).abs() <= 4.5 * se + 1e-12).all()
    assert torch.allclose(counts.var(0), variance, rtol=0.15, atol=1e-9)
    assert (counts[:, :, 2] == 0).all()  # a zero input never pulses


def test_pulse_train_counts_are_bounded_by_the_bit_length_and_follow_the_sign():
    x = torch.tensor([1.0, -1.0, 0.5])
    d = torch.tensor([-1.0, 0.7])
    counts = _draws(x, d, 0.5, 0.01, PulseTrainConfig(bl=4), 300)
    assert counts.abs().max() <= 4
    sign = torch.sign(torch.outer(d, x))
    assert ((counts * sign) >= 0).all()
    assert counts.abs().max() == 4  # probabilities clip at 1: every slot coincides for the largest entries


def test_update_management_balances_the_two_trains():
    x, d = torch.tensor([0.5, 0.25]), torch.tensor([0.002, -0.001])
    lr, dw_min, bl = 0.1, 0.001, 5
    p, q, _ = pulse_probabilities(x, d, lr, dw_min, PulseTrainConfig(bl=bl, update_management=True))
    assert float(p.max()) == pytest.approx(float(q.max()), rel=1e-6)  # m = sqrt(max|d| / max|x|)
    assert torch.allclose(torch.outer(q, p) * bl, lr * torch.outer(d, x).abs() / dw_min, rtol=1e-6)
    assert float(p.max()) < 1
    # without it the row train (C |x| = 2.2) clips at 1 and the update falls short of lr d x^T
    p0, q0, _ = pulse_probabilities(x, d, lr, dw_min, PulseTrainConfig(bl=bl, update_management=False))
    assert float(p0.max()) == 1.0
    assert float(q0[0] * p0[0]) < 0.5 * float(q[0] * p[0])


def test_bit_length_management_uses_the_smallest_bit_length_without_clipping():
    x, d = torch.tensor([1.0, -0.3]), torch.tensor([0.6, 0.2])
    lr, dw_min = 0.05, 0.001  # needs lr max|x| max|d| / dw_min = 30 slots
    config = PulseTrainConfig(bl=10, bl_management=True, max_bl=100)
    p, q, bl = pulse_probabilities(x, d, lr, dw_min, config)
    assert bl == 30
    assert float(p.max()) == pytest.approx(1.0) and float(q.max()) == pytest.approx(1.0)
    _, _, capped = pulse_probabilities(x, d, lr, dw_min, config.model_copy(update={"max_bl": 20}))
    assert capped == 20


def test_quantized_counts_round_to_nearest_and_clip():
    change = torch.tensor([0.0014, -0.0026, 0.0005, 0.0301])
    n = quantized_counts(change, 0.001, "nearest")
    assert n.dtype == torch.int64
    assert n.tolist() == [1, -3, 0, 30]  # 0.5 ties to even
    assert quantized_counts(change, 0.001, "nearest", max_pulses=5).tolist() == [1, -3, 0, 5]


def test_stochastic_rounding_is_unbiased_and_lands_on_the_two_neighbours():
    change = torch.tensor([0.0003, -0.0017, 0.0025], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    draws = torch.stack([quantized_counts(change, 0.001, "stochastic", g) for _ in range(6000)]).double()
    v = change / 0.001
    floor = torch.floor(v)
    assert ((draws == floor) | (draws == floor + 1)).all()
    frac = v - floor
    se = (frac * (1 - frac) / len(draws)).sqrt()
    assert ((draws.mean(0) - v).abs() <= 4.5 * se).all()


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: quantized_counts(torch.tensor([float("nan")]), 0.001, "nearest"), "NaN"),
        (lambda: quantized_counts(torch.tensor([0.1]), 0.0, "nearest"), "dw_min = 0.0"),
        (lambda: quantized_counts(torch.tensor([0.1]), 0.001, "up"), "rounding = 'up'"),
        (lambda: quantized_counts(torch.tensor([0.1]), 0.001, "stochastic"), "needs a torch.Generator"),
        (lambda: quantized_counts(torch.tensor([0.1]), 0.001, "nearest", max_pulses=0), "max_pulses = 0"),
        (lambda: pulse_probabilities(torch.ones(2, 2), torch.ones(2), 0.1, 0.001, PulseTrainConfig()), "1-D"),
        (lambda: pulse_probabilities(torch.ones(2), torch.ones(2), -1.0, 0.001, PulseTrainConfig()), "learning_rate = -1.0"),
        (lambda: pulse_probabilities(torch.ones(2), torch.tensor([math.inf, 0]), 0.1, 0.001, PulseTrainConfig()), "infinite"),
    ],
)
def test_bad_inputs_name_the_value(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_bad_pulse_train_configs_are_refused():
    with pytest.raises(ValueError, match="bl"):
        PulseTrainConfig(bl=0)
    with pytest.raises(ValueError, match="bits"):
        PulseTrainConfig(bits=3)


def test_the_pulsed_block_holds_every_coincidence_of_the_full_slot_matrices():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(40, generator=g) * 2 - 1
    d = (torch.rand(30, generator=g) * 2 - 1) * 0.05
    config = PulseTrainConfig(bl=8)
    p, q, bl = pulse_probabilities(x, d, 0.02, 0.001, config)
    state = torch.Generator().manual_seed(11)
    rows = (torch.rand((bl, 40), generator=state) < p).float() * torch.sign(x)
    cols = (torch.rand((bl, 30), generator=state) < q).float() * torch.sign(d)
    full = torch.round(cols.t() @ rows).long()  # every slot of every line, no block
    counts = pulse_train_counts(x, d, 0.02, 0.001, config, torch.Generator().manual_seed(11))
    assert torch.equal(counts, full)
    assert 0 < int((full != 0).sum()) < full.numel()
