"""Losses of DNPU training against hand-computed values, vectorisation, gradients and input validation."""

import math
import typing

import pytest
import torch

from inmaterio.errors import ConfigError
from inmaterio.training.losses import (
    LOSSES,
    LossName,
    bce,
    corrsig,
    cross_entropy,
    fisher,
    get_loss,
    mse,
    sigmoid_distance,
)

GATE_TARGET = torch.tensor([0, 0, 1, 1])


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fisher_hand_example(dtype):
    # class 0: [1, 2] -> mean 1.5, variance 0.25; class 1: [4, 6] -> mean 5, variance 1
    output = torch.tensor([1.0, 2.0, 4.0, 6.0], dtype=dtype)
    loss = fisher(output, GATE_TARGET)
    assert loss.dtype == dtype and loss.shape == ()
    assert loss.item() == pytest.approx(-(3.5**2) / 1.25, rel=1e-6)  # -9.8


def test_fisher_mixed_order_of_classes():
    # class 1 = {3, 5} (mean 4, var 1), class 0 = {0, 0, 3} (mean 1, var 2)
    output = torch.tensor([0.0, 3.0, 0.0, 5.0, 3.0], dtype=torch.float64)
    target = torch.tensor([0, 1, 0, 1, 0])
    assert fisher(output, target).item() == pytest.approx(-9.0 / 3.0)


def test_corrsig_hand_example_separated():
    output = torch.tensor([0.0, 2.0, 10.0, 12.0], dtype=torch.float64)
    # centred output [-6, -4, 4, 6], centred target [-.5, -.5, .5, .5]
    rho = 10 / math.sqrt(104 * 1)
    delta = 10 - 2  # min of class 1 minus max of class 0, nA
    expected = (1.1 - rho) / _sigmoid((delta - 5) / 3)
    assert corrsig(output, GATE_TARGET).item() == pytest.approx(expected, rel=1e-9)


def test_corrsig_hand_example_overlapping_with_custom_sigmoid():
    output = torch.tensor([0.0, 5.0, 3.0, 8.0], dtype=torch.float64)
    # mean 4; centred [-4, 1, -1, 4]; cov sum = 2 - 0.5 - 0.5 + 2 = 3; sum of squares 34
    rho = 3 / math.sqrt(34 * 1)
    delta = 3 - 5
    expected = (1.1 - rho) / _sigmoid((delta - 1) / 2)
    loss = corrsig(output, GATE_TARGET, separation_offset_na=1.0, separation_scale_na=2.0)
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_corrsig_constant_output_is_finite_with_zero_correlation():
    output = torch.full((4,), 3.0, dtype=torch.float64, requires_grad=True)
    loss = corrsig(output, GATE_TARGET)
    assert loss.item() == pytest.approx(1.1 / _sigmoid(-5 / 3))
    loss.backward()
    assert torch.isfinite(output.grad).all()


def test_sigmoid_distance_hand_example():
    # sorted [0, 1, 3, 7]: gaps 1, 2, 4 -> nearest-neighbour distances 1, 1, 2, 4
    output = torch.tensor([3.0, 7.0, 0.0, 1.0], dtype=torch.float64)
    expected = -sum(2 * _sigmoid(d) - 1 for d in (1, 1, 2, 4)) / 4
    assert sigmoid_distance(output).item() == pytest.approx(expected, rel=1e-12)
    # scale: distances in units of 2 nA
    expected_scaled = -sum(2 * _sigmoid(d / 2) - 1 for d in (1, 1, 2, 4)) / 4
    assert sigmoid_distance(output, GATE_TARGET, scale_na=2.0).item() == pytest.approx(expected_scaled)


def test_sigmoid_distance_bounds():
    assert sigmoid_distance(torch.full((5,), 2.0)).item() == 0.0
    far = torch.arange(5, dtype=torch.float64) * 100
    assert sigmoid_distance(far).item() == pytest.approx(-1.0)


def test_bce_hand_example():
    output = torch.tensor([0.0, 2.0], dtype=torch.float64)
    target = torch.tensor([1, 0])
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2
    assert bce(output, target).item() == pytest.approx(expected, rel=1e-12)


def test_mse_hand_example():
    output = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    target = torch.tensor([1.0, 0.0, 1.0])
    assert mse(output, target).tolist() == pytest.approx([(0 + 4 + 4) / 3, 2 / 3])


def test_cross_entropy_hand_example():
    logits = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([0, 1])
    # row 1: -log(1/2); row 2: log(e + 1) - 0
    expected = (math.log(2) + math.log(math.e + 1)) / 2
    assert cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-12)


def _loop_over_rows(loss, output, target):
    return torch.stack([loss(row, target) for row in output])


@pytest.mark.parametrize("name", ["fisher", "corrsig", "sigmoid_distance", "bce", "mse"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vectorised_equals_loop_over_rows(name, dtype):
    generator = torch.Generator().manual_seed(1)
    output = torch.randn(7, 12, generator=generator, dtype=dtype) * 10
    target = torch.tensor([0, 1] * 6)
    loss = get_loss(name)
    batched = loss(output, target)
    assert batched.shape == (7,) and batched.dtype == dtype
    torch.testing.assert_close(batched, _loop_over_rows(loss, output, target))
    nested = loss(output.reshape(7, 1, 12), target)
    assert nested.shape == (7, 1)


def test_cross_entropy_vectorised_equals_loop():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, 4, generator=generator)
    target = torch.tensor([0, 3, 1, 2, 3])
    torch.testing.assert_close(cross_entropy(logits, target), _loop_over_rows(cross_entropy, logits, target))


def test_per_row_targets_broadcast():
    output = torch.tensor([[1.0, 2.0, 4.0, 6.0], [4.0, 6.0, 1.0, 2.0]], dtype=torch.float64)
    target = torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0]])
    assert fisher(output, target).tolist() == pytest.approx([-9.8, -9.8])


@pytest.mark.parametrize("name", ["fisher", "corrsig", "sigmoid_distance", "bce", "mse"])
def test_gradients_match_finite_differences(name):
    # distinct, well separated values so the min/max/sort in corrsig and sigmoid_distance are smooth here
    output = torch.tensor([[0.3, 1.9, 4.2, 7.5, 2.8, 9.1], [5.0, -1.0, 2.5, 3.3, 8.0, 0.7]], dtype=torch.float64)
    target = torch.tensor([0, 0, 1, 1, 0, 1])
    loss = get_loss(name)
    assert torch.autograd.gradcheck(lambda y: loss(y, target), output.requires_grad_())


def test_gradient_of_cross_entropy():
    logits = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 0, 3])
    assert torch.autograd.gradcheck(lambda y: cross_entropy(y, target), logits.requires_grad_())


def test_registry_and_literal_agree():
    assert set(typing.get_args(LossName)) == set(LOSSES)
    assert get_loss("corrsig") is corrsig


def test_unknown_loss_lists_the_choices():
    with pytest.raises(ConfigError, match=r"unknown loss 'foo'; choose one of: bce, corrsig, cross_entropy, fisher"):
        get_loss("foo")


@pytest.mark.parametrize("loss", [fisher, corrsig, bce])
def test_binary_losses_reject_non_binary_targets(loss):
    with pytest.raises(ConfigError, match=r"needs binary targets \(0 or 1\); got values such as \[2"):
        loss(torch.zeros(4), torch.tensor([0, 1, 2, 1]))


@pytest.mark.parametrize("loss", [fisher, corrsig])
def test_fisher_and_corrsig_need_both_classes(loss):
    name = loss.__name__
    with pytest.raises(ConfigError, match=rf"^{name} needs both classes in target; got only 1$"):
        loss(torch.arange(4.0), torch.ones(4))
    with pytest.raises(ConfigError, match=r"got only 0 \(row 1 of the target\)"):
        loss(torch.zeros(2, 4), torch.tensor([[0, 1, 0, 1], [0, 0, 0, 0]]))


@pytest.mark.parametrize("name", ["fisher", "corrsig", "bce", "mse"])
def test_shape_mismatch_names_both_shapes(name):
    with pytest.raises(ConfigError, match=r"target shape \(3,\) does not broadcast to output shape \(2, 4\)"):
        get_loss(name)(torch.zeros(2, 4), torch.tensor([0, 1, 0]))


def test_target_may_not_grow_the_output():
    with pytest.raises(ConfigError, match=r"target shape \(2, 4\) does not broadcast to output shape \(4,\)"):
        mse(torch.zeros(4), torch.zeros(2, 4))


def test_cross_entropy_validation():
    logits = torch.zeros(3, 2)
    with pytest.raises(ConfigError, match=r"class indices \[2\] outside \[0, 1\]"):
        cross_entropy(logits, torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError, match="integer class indices"):
        cross_entropy(logits, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ConfigError, match=r"batch, classes\); got shape \(3,\)"):
        cross_entropy(torch.zeros(3), torch.tensor([0, 1, 1]))


def test_sigmoid_distance_needs_two_points():
    with pytest.raises(ConfigError, match="at least 2 points"):
        sigmoid_distance(torch.zeros(3, 1))


def test_corrsig_gradient_stays_finite_when_classes_overlap_by_hundreds_of_na():
    """Outputs whose classes overlap by 400 nA (z = -135) give a finite float32 loss and gradient."""
    output = torch.tensor([[200.0, 150.0, -200.0, -180.0]], requires_grad=True)
    target = torch.tensor([0.0, 0.0, 1.0, 1.0])
    loss = corrsig(output, target)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(output.grad).all()
    y, t = [200.0, 150.0, -200.0, -180.0], [0.0, 0.0, 1.0, 1.0]
    my, mt = sum(y) / 4, sum(t) / 4
    rho = sum((a - my) * (b - mt) for a, b in zip(y, t)) / math.sqrt(
        sum((a - my) ** 2 for a in y) * sum((b - mt) ** 2 for b in t)
    )
    assert float(loss.detach()) == pytest.approx((1.1 - rho) * (1 + math.exp(80)), rel=1e-5)  # z floored at -80
