"""Metrics of DNPU classifiers against hand counts, brute force and an independent optimiser."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from inmaterio.errors import ConfigError
from inmaterio.training.metrics import (
    accuracy,
    best_threshold_accuracy,
    confusion_matrix,
    fit_logistic_threshold,
    oriented_separation_na,
    paired_accuracy_difference,
    repeat_mean_separation_na,
    separation_na,
    separation_with_stderr_na,
    threshold_accuracy,
)

SEPARABLE_OUTPUT_NA = torch.tensor([10.0, 12.0, 30.0, 11.0, 33.0, 29.0])
SEPARABLE_TARGET = torch.tensor([0, 0, 1, 0, 1, 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_separable_data_is_classified_perfectly(dtype):
    output = SEPARABLE_OUTPUT_NA.to(dtype)
    fit = fit_logistic_threshold(output, SEPARABLE_TARGET)
    assert 12.0 < fit.threshold_na.item() < 29.0
    assert fit.w.item() > 0  # class 1 has the higher current
    assert fit.predict(output).tolist() == SEPARABLE_TARGET.tolist()
    assert fit.predict(output).dtype == torch.int64
    assert fit.predict_proba(fit.threshold_na.reshape(1)).item() == pytest.approx(0.5, abs=1e-5)
    acc = threshold_accuracy(output, SEPARABLE_TARGET)
    assert acc.dtype == dtype and acc.item() == 1.0
    assert best_threshold_accuracy(output, SEPARABLE_TARGET).item() == 1.0


def test_inverted_orientation_is_classified_perfectly():
    target = 1 - SEPARABLE_TARGET  # class 1 now has the lower current
    fit = fit_logistic_threshold(SEPARABLE_OUTPUT_NA, target)
    assert fit.w.item() < 0
    assert 12.0 < fit.threshold_na.item() < 29.0
    assert threshold_accuracy(SEPARABLE_OUTPUT_NA, target).item() == 1.0
    assert best_threshold_accuracy(SEPARABLE_OUTPUT_NA, target).item() == 1.0


def test_best_threshold_accuracy_hand_example_with_one_overlap():
    output = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    target = torch.tensor([0, 0, 1, 0, 1, 1])
    # the class-0 point at 4 nA sits among class 1: any threshold misclassifies one point of six
    assert best_threshold_accuracy(output, target).item() == pytest.approx(5 / 6)
    assert best_threshold_accuracy(output, 1 - target).item() == pytest.approx(5 / 6)


def test_best_threshold_accuracy_cannot_split_equal_currents():
    # cuts at 1|2 give 2 of 4 either way; a cut between the two 1 nA points would be 3 of 4 but is impossible
    output = torch.tensor([1.0, 1.0, 2.0, 2.0])
    target = torch.tensor([0, 1, 0, 1])
    assert best_threshold_accuracy(output, target).item() == 0.5


def _brute_force_best(values, labels):
    """Best accuracy over thresholds at every midpoint and beyond the ends, both orientations."""
    points = sorted(set(values))
    cuts = [points[0] - 1] + [(a + b) / 2 for a, b in zip(points, points[1:])] + [points[-1] + 1]
    best = 0
    for cut in cuts:
        correct = sum((v > cut) == bool(label) for v, label in zip(values, labels))
        best = max(best, correct, len(values) - correct)
    return best / len(values)


def test_best_threshold_accuracy_equals_brute_force_on_random_rows():
    generator = torch.Generator().manual_seed(4)
    output = torch.randint(0, 8, (20, 15), generator=generator).double()  # integers: many ties
    target = torch.randint(0, 2, (20, 15), generator=generator)
    result = best_threshold_accuracy(output, target)
    expected = [_brute_force_best(row.tolist(), labels.tolist()) for row, labels in zip(output, target)]
    assert result.tolist() == pytest.approx(expected)


def test_logistic_fit_matches_an_independent_optimiser():
    generator = torch.Generator().manual_seed(5)
    target = torch.arange(40) % 2
    output = torch.randn(40, generator=generator, dtype=torch.float64) * 4 + 3 * target
    fit = fit_logistic_threshold(output, target, l2=1e-3)
    z = ((output - output.mean()) / output.std(unbiased=False)).numpy()
    t = target.double().numpy()

    def objective(params):
        w, b = params
        a = w * z + b
        return np.mean(np.logaddexp(0, a) - t * a) + 0.5e-3 * w * w

    reference = minimize(objective, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14})
    assert [fit.w.item(), fit.b.item()] == pytest.approx(reference.x, abs=1e-6)


def test_threshold_accuracy_is_at_most_the_best_threshold_accuracy():
    generator = torch.Generator().manual_seed(6)
    target = torch.randint(0, 2, (30,), generator=generator)
    shift = torch.linspace(-2, 2, 50).unsqueeze(-1)  # from inverted to well separated
    output = torch.randn(50, 30, generator=generator) + shift * target
    fitted = threshold_accuracy(output, target)
    best = best_threshold_accuracy(output, target)
    assert fitted.shape == best.shape == (50,)
    assert (fitted <= best).all()
    assert (best >= 0.5).all() and (fitted >= 0).all()


def test_vectorised_equals_loop_over_rows():
    generator = torch.Generator().manual_seed(7)
    target = torch.randint(0, 2, (25,), generator=generator)
    output = torch.randn(3, 4, 25, generator=generator, dtype=torch.float64) * 5 + 10 * target
    rows = output.reshape(12, 25)
    fit = fit_logistic_threshold(output, target)
    assert fit.w.shape == fit.b.shape == fit.mean.shape == fit.std.shape == (3, 4)
    for i, row in enumerate(rows):
        single = fit_logistic_threshold(row, target)
        assert fit.w.reshape(12)[i].item() == pytest.approx(single.w.item(), rel=1e-10)
        assert fit.b.reshape(12)[i].item() == pytest.approx(single.b.item(), rel=1e-10, abs=1e-12)
    loop_fitted = torch.stack([threshold_accuracy(row, target) for row in rows]).reshape(3, 4)
    loop_best = torch.stack([best_threshold_accuracy(row, target) for row in rows]).reshape(3, 4)
    torch.testing.assert_close(threshold_accuracy(output, target), loop_fitted)
    torch.testing.assert_close(best_threshold_accuracy(output, target), loop_best)


def test_metrics_reject_non_binary_targets():
    with pytest.raises(ConfigError, match=r"threshold_accuracy needs binary targets"):
        threshold_accuracy(torch.zeros(3), torch.tensor([0, 1, 3]))


def test_multiclass_accuracy_hand_example():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 0.1], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([0, 1, 1, 2])  # argmax 0, 1, 2, 0: two of four right
    assert accuracy(logits, target).item() == 0.5
    perfect = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    assert accuracy(torch.stack([logits, perfect]), target).tolist() == [0.5, 1.0]


def test_confusion_matrix_hand_example():
    target = torch.tensor([0, 0, 1, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    expected = [[1, 1, 0], [0, 2, 1], [1, 0, 0]]  # rows: true class
    result = confusion_matrix(pred, target, 3)
    assert result.dtype == torch.int64 and result.tolist() == expected


def test_confusion_matrix_validation():
    with pytest.raises(ConfigError, match=r"pred has class indices \[3\] outside \[0, 2\]"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ConfigError, match=r"got \(2,\) and \(3,\)"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1, 2]), 3)


def test_separation_na_by_hand_in_both_orientations():
    out = torch.tensor([[1.0, 2.0, 6.0, 9.0], [9.0, 6.0, 2.0, 1.0], [1.0, 5.0, 3.0, 9.0]])
    target = torch.tensor([0.0, 0.0, 1.0, 1.0])
    # row 0: min(6, 9) - max(1, 2) = 4; row 1: class 1 lower, min(9, 6) - max(2, 1) = 4;
    # row 2: classes overlap: max(3 - 5, 1 - 9) = -2
    assert separation_na(out, target).tolist() == [4.0, 4.0, -2.0]
    margin, high = oriented_separation_na(out, target)
    assert margin.tolist() == [4.0, 4.0, -2.0]
    assert high.tolist() == [1, 0, 1]  # row 2: class 1 above by -2 beats class 0 above by -8


def test_repeat_mean_separation_by_hand():
    target = torch.tensor([0.0, 0.0, 1.0, 1.0])
    # three repeats; per-point means 1, 2, 7, 9 (class 1 on top): gap 7 - 2 = 5, while the worst single repeat
    # (row 1: 5 - 3) keeps only 2
    outputs = torch.tensor([[1.0, 1.0, 8.0, 9.0], [1.0, 3.0, 5.0, 9.0], [1.0, 2.0, 8.0, 9.0]])
    gap, stderr = repeat_mean_separation_na(outputs, target)
    assert gap == pytest.approx(5.0)
    assert float(separation_na(outputs, target).min()) == pytest.approx(2.0)
    # the gap is set by points 2 (values 8, 5, 8: sample std sqrt(3)) and 1 (1, 3, 2: std 1); each over sqrt(3)
    assert stderr == pytest.approx(np.hypot(np.sqrt(3.0), 1.0) / np.sqrt(3.0))
    # class 0 on top: the same by symmetry
    gap_flipped, stderr_flipped = repeat_mean_separation_na(-outputs, target)
    assert (gap_flipped, stderr_flipped) == pytest.approx((5.0, stderr))
    # one repeat: the plain gap, no standard error
    assert repeat_mean_separation_na(outputs[:1], target) == (pytest.approx(7.0), None)
    # the mean of noisy repeats converges to the noise-free gap; the worst repeat stays below it
    rng = torch.Generator().manual_seed(0)
    clean = torch.tensor([0.0, 1.0, 6.0, 7.0])
    noisy = clean + 0.5 * torch.randn(400, 4, generator=rng)
    gap, stderr = repeat_mean_separation_na(noisy, target)
    assert abs(gap - 5.0) < 4 * stderr and stderr == pytest.approx(np.hypot(0.5, 0.5) / 20, rel=0.2)
    assert float(separation_na(noisy, target).min()) < 5.0 - 1.0
    with pytest.raises(ConfigError, match=r"\(repeats, batch\)"):
        repeat_mean_separation_na(torch.zeros(4), target)
    with pytest.raises(ConfigError, match="both classes"):
        repeat_mean_separation_na(outputs, torch.zeros(4))


def test_separation_with_stderr_by_hand():
    # class 1 on top: gap 7 - 2 = 5, set by point 2 (stderr 0.3) and point 1 (0.2); class 0 on top: the same
    output, stderr, target = torch.tensor([1.0, 2.0, 7.0, 9.0]), torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0, 0, 1, 1])
    assert separation_with_stderr_na(output, stderr, target) == pytest.approx((5.0, np.hypot(0.3, 0.2)))
    assert separation_with_stderr_na(-output, stderr, target) == pytest.approx((5.0, np.hypot(0.3, 0.2)))
    with pytest.raises(ConfigError, match=r"got \(4,\) and \(3,\)"):
        separation_with_stderr_na(output, stderr[:3], target)


def test_paired_difference_of_identical_and_opposite_classifiers():
    correct = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1])
    same = paired_accuracy_difference(correct, correct)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)
    flipped = paired_accuracy_difference(torch.ones(50), torch.zeros(50))
    assert (flipped.difference, flipped.low, flipped.high, flipped.points) == (1.0, 1.0, 1.0, 50)


def test_paired_difference_averages_repeats_per_point_by_hand():
    # a: point 0 right in 1 of 2 repeats, point 1 in 2 of 2 -> per point 0.5, 1.0; b: 0, 1 -> d = 0.5, 0 -> mean 0.25
    a = torch.tensor([[1, 1], [0, 1]])
    b = torch.tensor([0, 1])
    assert paired_accuracy_difference(a, b).difference == pytest.approx(0.25)


def test_paired_bootstrap_interval_matches_the_normal_approximation():
    # independent truth: for many points the bootstrap interval of a mean is mean +- 1.96 s / sqrt(n)
    g = torch.Generator().manual_seed(3)
    a = (torch.rand(4000, generator=g) < 0.95).int()
    b = torch.where(torch.rand(4000, generator=g) < 0.8, a, 1 - a)  # paired: b agrees with a on 80% of the points
    r = paired_accuracy_difference(a, b, resamples=4000, seed=1)
    d = (a - b).double()
    half = 1.959964 * d.std().item() / d.numel() ** 0.5
    assert r.difference == pytest.approx(d.mean().item())
    assert r.low == pytest.approx(r.difference - half, abs=0.15 * half)
    assert r.high == pytest.approx(r.difference + half, abs=0.15 * half)
    assert "95% CI" in str(r) and "4000 paired points" in str(r)


def test_paired_difference_is_reproducible_by_seed():
    a, b = torch.tensor([1, 0, 1, 1, 1, 0, 1, 1]), torch.tensor([0, 0, 1, 1, 0, 1, 1, 0])
    assert paired_accuracy_difference(a, b, seed=5) == paired_accuracy_difference(a, b, seed=5)


@pytest.mark.parametrize(
    "a, b, kwargs, message",
    [
        (torch.ones(5), torch.ones(6), {}, "same points; got 5 and 6"),
        (torch.tensor([1.0, 0.5]), torch.ones(2), {}, "only 0 and 1"),
        (torch.ones(2, 2, 2), torch.ones(2), {}, "shape (points,) or (repeats, points)"),
        (torch.ones(3), torch.ones(3), {"level": 1.0}, "level must lie in (0, 1); got 1.0"),
        (torch.ones(3), torch.ones(3), {"resamples": 10}, "resamples must be >= 100; got 10"),
    ],
)
def test_paired_difference_rejects_bad_input(a, b, kwargs, message):
    with pytest.raises(ConfigError) as err:
        paired_accuracy_difference(a, b, **kwargs)
    assert message in str(err.value)
