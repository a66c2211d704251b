"""Low-rank gradient decomposition (SBPCA, HALS NMF) and its pulse-count transfer, against the SVD and closed forms."""

from __future__ import annotations

import pydantic
import pytest
import torch

from inmaterio.crossbars.low_rank import (
    LowRankConfig,
    LowRankGradient,
    StreamingPCA,
    nmf_hals,
    rank_seq_counts,
    rank_sum_counts,
    signed_nmf,
    transfer_counts,
)
from inmaterio.crossbars.updates import quantized_counts

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny matrices: one thread, immune to busy cores

N_OUT, N_IN, K = 12, 20, 3
F64 = torch.float64


def _orth(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64)).Q


def _rows_of(gradient: torch.Tensor, n_rows: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rows ``X (n_rows, n_in)`` and ``D`` with ``D^T X == gradient`` exactly (``D^T = G X^+``, X full column rank)."""
    x = torch.randn(n_rows, gradient.shape[1], generator=g, dtype=F64)
    return x, (gradient @ torch.linalg.pinv(x)).t()


def _truncated_svd(gradient: torch.Tensor, k: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(gradient, full_matrices=False)
    return (u[:, :k] * s[:k]) @ vh[:k]


def _pca(mode: str, seed: int = 1, block_rows: int = 4) -> StreamingPCA:
    return StreamingPCA(
        N_OUT, N_IN, K, mode=mode, generator=torch.Generator().manual_seed(seed), block_rows=block_rows, dtype=F64
    )


@pytest.mark.parametrize("mode", ["power", "incremental"])
def test_sbpca_recovers_an_exact_rank_k_gradient_stream_as_the_truncated_svd(mode):
    g = torch.Generator().manual_seed(0)
    a, b = _orth(N_OUT, K, g), _orth(N_IN, K, g)  # the stationary subspaces; each batch has its own core
    pca = _pca(mode)
    for batch in range(4):
        n_rows = 25
        x = torch.randn(n_rows, K, generator=g, dtype=F64) @ b.t()
        d = torch.randn(n_rows, K, generator=g, dtype=F64) @ a.t()
        noise = 1e-6 * torch.randn(n_rows, N_OUT, generator=g, dtype=F64)
        x_rows, delta_rows = x, d + noise
        gradient = delta_rows.t() @ x_rows
        pca.update(x_rows, delta_rows)
        u, v = pca.factors()
        assert u.shape == (N_OUT, K) and v.shape == (N_IN, K)
        approx, best = u @ v.t(), _truncated_svd(gradient, K)
        relative = float(torch.linalg.norm(approx - best) / torch.linalg.norm(best))
        if mode == "incremental" or batch >= 1:  # power: one warm-start batch brings the basis onto the row space
            assert relative < 1e-5, (batch, relative)
            # the left subspace is the SVD's: the projectors agree
            top = torch.linalg.svd(gradient)[0][:, :K]
            basis = torch.linalg.qr(u).Q
            assert torch.linalg.norm(basis @ basis.t() - top @ top.t()) < 1e-5
        pca.reset()


@pytest.mark.parametrize("mode", ["power", "incremental"])
def test_sbpca_error_approaches_the_eckart_young_bound_for_a_higher_rank_gradient(mode):
    g = torch.Generator().manual_seed(3)
    sigma = 5.0 * 0.6 ** torch.arange(N_OUT, dtype=F64)
    gradient = _orth(N_OUT, N_OUT, g) @ torch.diag(sigma) @ _orth(N_IN, N_OUT, g).t()
    bound = float(sigma[K:].pow(2).sum().sqrt())  # ||G - G_k||_F of the best rank-k approximation
    pca = _pca(mode, seed=5)
    ratios = []
    for _ in range(24):
        pca.update(*_rows_of(gradient, 2 * N_IN, g))
        u, v = pca.factors()
        ratios.append(float(torch.linalg.norm(gradient - u @ v.t())) / bound)
        pca.reset()
    assert min(ratios) >= 1 - 1e-9  # nothing of rank k beats Eckart-Young
    if mode == "power":  # block power iteration: converges to the truncated SVD itself
        assert ratios[0] > 1.5 and ratios[-1] < 1 + 1e-6
    else:  # one pass with truncation after each block: close to the bound from the first batch
        assert max(ratios) < 1.15


def test_sbpca_power_is_linear_in_the_rows_so_block_size_does_not_matter():
    g = torch.Generator().manual_seed(4)
    x, d = torch.randn(30, N_IN, generator=g, dtype=F64), torch.randn(30, N_OUT, generator=g, dtype=F64)
    whole, split = _pca("power"), _pca("power")
    whole.update(x, d)
    for start in range(0, 30, 7):
        split.update(x[start : start + 7], d[start : start + 7])
    for a, b in zip(whole.factors(), split.factors()):
        assert torch.allclose(a, b, atol=1e-12)
    assert torch.allclose(whole.y_d, d.t() @ x @ whole.q_x, atol=1e-12)  # Y_d = G Q_x


def test_sbpca_factors_are_zero_before_rows_and_reset_without_basis_redraws():
    pca = _pca("power")
    u, v = pca.factors()
    assert float(u.abs().max()) == 0.0
    before = pca.q_x.clone()
    pca.reset()  # no rows: the basis stays
    assert torch.equal(pca.q_x, before)
    saved = pca.state_dict()
    pca.reset(keep_basis=False)
    assert not torch.allclose(pca.q_x, before)
    pca.load_state_dict(saved)  # a checkpoint restores the warm start
    assert torch.equal(pca.q_x, before)
    with pytest.raises(ValueError, match=r"'q_x' must be a tensor of shape \(20, 3\)"):
        pca.load_state_dict({"q_d": saved["q_d"], "q_x": saved["q_x"][:5]})
    pca.reset(keep_basis=False)
    assert torch.allclose(pca.q_x.t() @ pca.q_x, torch.eye(K, dtype=F64), atol=1e-12)


def test_nmf_hals_is_non_negative_monotone_and_recovers_a_non_negative_low_rank_matrix():
    g = torch.Generator().manual_seed(7)
    a = torch.rand(20, K, generator=g, dtype=F64) @ torch.rand(15, K, generator=g, dtype=F64).t()
    w, h, history = nmf_hals(a, K, 600, torch.Generator().manual_seed(8))
    assert w.shape == (20, K) and h.shape == (15, K)
    assert (w >= 0).all() and (h >= 0).all()
    assert history.shape == (601,)
    assert (history.diff() <= 1e-12 * history[0]).all()  # HALS: exact block-coordinate steps never increase it
    assert torch.isclose(history[-1], torch.linalg.norm(a - w @ h.t()))
    assert float(history[-1] / torch.linalg.norm(a)) < 2e-3
    assert float(history[-1]) < 0.01 * float(history[0])


def test_signed_nmf_splits_the_gradient_into_positive_and_negative_parts():
    g = torch.Generator().manual_seed(9)
    w = torch.rand(N_OUT, K, generator=g, dtype=F64)
    h = torch.rand(N_IN, K, generator=g, dtype=F64)
    top = torch.arange(N_OUT) < N_OUT // 2  # the positive part lives on the top rows, the negative on the bottom
    gradient = (w * top.unsqueeze(1)) @ h.t() - (w * ~top.unsqueeze(1)) @ h.flip(0).t()
    u, v, history = signed_nmf(gradient, K, 600, torch.Generator().manual_seed(10))
    assert u.shape == (N_OUT, 2 * K) and v.shape == (N_IN, 2 * K)
    assert (u[:, :K] >= 0).all() and (u[:, K:] <= 0).all() and (v >= 0).all()
    assert (history.diff() <= 1e-12 * history[0]).all()
    assert float(torch.linalg.norm(gradient - u @ v.t()) / torch.linalg.norm(gradient)) < 5e-3


def test_rank_sum_of_a_rank_one_factorisation_is_the_quantised_outer_product():
    g = torch.Generator().manual_seed(11)
    u, v = torch.randn(N_OUT, 1, generator=g, dtype=F64), torch.randn(N_IN, 1, generator=g, dtype=F64)
    lr, dw_min = 0.3, 0.01
    expected = quantized_counts(-lr * torch.outer(u[:, 0], v[:, 0]), dw_min, "nearest", max_pulses=20)
    assert torch.equal(rank_sum_counts(u, v, lr, dw_min, "nearest", max_pulses=20), expected)
    a = rank_sum_counts(u, v, lr, dw_min, "stochastic", torch.Generator().manual_seed(3))
    b = quantized_counts(-lr * torch.outer(u[:, 0], v[:, 0]), dw_min, "stochastic", torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    seq = rank_seq_counts(u, v, lr, dw_min, "nearest")
    assert len(seq) == 1 and torch.equal(seq[0], rank_sum_counts(u, v, lr, dw_min, "nearest"))


def test_rank_seq_counts_sum_to_rank_sum_within_rounding_and_in_expectation():
    g = torch.Generator().manual_seed(12)
    u, v = torch.randn(N_OUT, K, generator=g, dtype=F64), torch.randn(N_IN, K, generator=g, dtype=F64)
    lr, dw_min = 0.2, 0.01
    seq = rank_seq_counts(u, v, lr, dw_min, "nearest")
    total = rank_sum_counts(u, v, lr, dw_min, "nearest")
    assert len(seq) == K and all(c.dtype == torch.int64 and c.shape == (N_OUT, N_IN) for c in seq)
    for r, c in enumerate(seq):  # each is its own component's quantised outer product
        assert torch.equal(c, quantized_counts(-lr * torch.outer(u[:, r], v[:, r]), dw_min, "nearest"))
    assert (torch.stack(seq).sum(0) - total).abs().max() <= (K + 1) / 2
    exact = -lr * (u @ v.t()) / dw_min
    draws = torch.stack([torch.stack(rank_seq_counts(u, v, lr, dw_min, "stochastic", g)).sum(0) for _ in range(1500)])
    se = (K * 0.25 / draws.shape[0]) ** 0.5  # each component's rounding has variance <= 1/4
    assert ((draws.double().mean(0) - exact).abs() <= 5 * se).all()


def test_transfer_counts_follow_the_config():
    g = torch.Generator().manual_seed(13)
    u, v = torch.randn(N_OUT, K, generator=g), torch.randn(N_IN, K, generator=g)
    assert len(transfer_counts(LowRankConfig(rank=K, transfer="sum"), u, v, 0.1, 0.01, "nearest")) == 1
    assert len(transfer_counts(LowRankConfig(rank=K, transfer="seq"), u, v, 0.1, 0.01, "nearest")) == K


@pytest.mark.parametrize("method", ["sbpca", "nmf"])
def test_low_rank_gradient_tracks_a_tile(method):
    g = torch.Generator().manual_seed(14)
    config = LowRankConfig(method=method, rank=K, nmf_iterations=300)
    tracker = LowRankGradient(config, N_OUT, N_IN, torch.Generator().manual_seed(15), dtype=F64)
    a, b = _orth(N_OUT, K, g), _orth(N_IN, K, g)
    for batch in range(3):
        x = torch.randn(16, K, generator=g, dtype=F64) @ b.t()
        d = torch.randn(16, K, generator=g, dtype=F64) @ a.t()
        tracker.update(x[:9], d[:9])
        tracker.update(x[9:], d[9:])
        gradient = d.t() @ x
        u, v = tracker.factors()
        error = float(torch.linalg.norm(gradient - u @ v.t()) / torch.linalg.norm(gradient))
        if method == "sbpca":
            assert u.shape == (N_OUT, K)
            assert batch == 0 or error < 1e-8  # the warm start carries over the reset
        else:
            assert u.shape == (N_OUT, 2 * K)
            assert torch.allclose(tracker.g, gradient, atol=1e-12)
            assert (tracker.history.diff() <= 1e-12 * tracker.history[0]).all()
            assert error < 0.5  # the parts of a signed rank-k matrix are not rank k: only an approximation
        tracker.reset()
    if method == "nmf":
        assert float(tracker.g.abs().max()) == 0.0


def test_bad_inputs_raise_errors_naming_the_value():
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="rank = 0"):
        StreamingPCA(N_OUT, N_IN, 0, generator=gen)
    with pytest.raises(ValueError, match=r"rank = 13 .*min\(n_out, n_in\) = 12"):
        StreamingPCA(N_OUT, N_IN, 13, generator=gen)
    with pytest.raises(ValueError, match="mode = 'svd'"):
        StreamingPCA(N_OUT, N_IN, K, mode="svd", generator=gen)
    with pytest.raises(ValueError, match="needs a torch.Generator"):
        StreamingPCA(N_OUT, N_IN, K)
    pca = StreamingPCA(N_OUT, N_IN, K, generator=gen)
    x, d = torch.randn(5, N_IN), torch.randn(5, N_OUT)
    with pytest.raises(ValueError, match=r"x_rows has shape \(5, 7\); axis 1 must have size 20"):
        pca.update(torch.randn(5, 7), d)
    with pytest.raises(ValueError, match="x_rows has 4 rows and delta_rows 5"):
        pca.update(x[:4], d)
    with pytest.raises(ValueError, match="delta_rows must be a 2-D floating-point tensor"):
        pca.update(x, d[0])
    bad = d.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"delta_rows holds NaN .*\(2, 3\): nan"):
        pca.update(x, bad)
    with pytest.raises(ValueError, match="minimum is -1.0"):
        nmf_hals(-torch.ones(4, 4), 2, 10, gen)
    with pytest.raises(ValueError, match="rank = 5"):
        nmf_hals(torch.ones(4, 6), 5, 10, gen)
    with pytest.raises(ValueError, match="iterations = 0"):
        nmf_hals(torch.ones(4, 6), 2, 0, gen)
    with pytest.raises(ValueError, match=r"V has shape \(20, 2\); axis 1 must have size 3"):
        rank_sum_counts(torch.ones(N_OUT, 3), torch.ones(N_IN, 2), 0.1, 0.01, "nearest")
    with pytest.raises(pydantic.ValidationError, match="rank"):
        LowRankConfig(rank=0)
    with pytest.raises(pydantic.ValidationError, match="method"):
        LowRankConfig(method="svd")
    with pytest.raises(ValueError, match=r"rank = 4 .*= 3"):
        LowRankGradient(LowRankConfig(rank=4), 3, 8, gen)
