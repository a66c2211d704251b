r"""Low-rank decomposition of a batch gradient and its transfer to crossbar devices as pulse counts.

A mini-batch of ``N`` rows (samples; patches of a convolution) with inputs ``x_b (n_in,)`` and output
gradients ``delta_b (n_out,)`` has the weight gradient

.. math::

    G = \sum_{b=1}^{N} \delta_b\, x_b^T = D^T X \qquad (n_{out} \times n_{in}),

with ``X (N, n_in)`` and ``D (N, n_out)`` the rows stacked. Mini-batch GD on a crossbar (Zhao et al.,
"Gradient decomposition methods for training neural networks with non-ideal synaptic devices",
Front. Neurosci. 15:749811, 2021) applies :math:`\Delta W = -\eta G` as pulse counts
(:func:`~inmaterio.crossbars.updates.quantized_counts`); to keep the periphery's memory at
:math:`O(k (n_{out} + n_{in}))` instead of :math:`O(n_{out} n_{in})` it replaces ``G`` by a rank-``k``
approximation :math:`G \approx U V^T = \sum_{r=1}^{k} u_r v_r^T` (``U (n_out, k)``, ``V (n_in, k)``), found
by one of two decompositions, and transfers it to the devices in one of two ways.

Streaming batch PCA (SBPCA; Huang, Hoskins, Daniels, Stiles & Adam, "Low-rank gradient descent for
memory-efficient training of deep in-memory arrays", ACM JETC 2023; after the streaming batch eigenupdates
of Hoskins et al., Front. Neurosci. 13:793, 2019), :class:`StreamingPCA`, two modes:

``mode="power"`` (stochastic power iteration, warm-started from batch to batch)
    The tracker holds orthonormal bases :math:`Q_d (n_{out}, k)` and :math:`Q_x (n_{in}, k)` (random at
    the start, then carried over from the previous batch). While the rows stream in, it accumulates

    .. math::

        Y_d = \sum_b \delta_b (x_b^T Q_x) = G Q_x, \qquad Y_x = \sum_b x_b (\delta_b^T Q_d) = G^T Q_d

    (one matrix product per block of rows: :math:`Y_d \mathrel{+}= D^T (X Q_x)`, exact in any block size).
    The batch's rank-``k`` gradient is the projection of ``G`` on the right subspace,
    :math:`\hat G = G Q_x Q_x^T = Y_d Q_x^T`, written in ordered components through the thin SVD
    :math:`Y_d = P S W^T`: :math:`U = P S`, :math:`V = Q_x W` (``u_r`` orthogonal, ``v_r`` orthonormal,
    :math:`\|u_1\| \ge \|u_2\| \ge \dots`). At the end of the batch (:meth:`StreamingPCA.reset`) the bases
    take one power step, :math:`Q_d \leftarrow \mathrm{qr}(Y_d)`, :math:`Q_x \leftarrow \mathrm{qr}(Y_x)`,
    so that over batches :math:`Q_x \leftarrow \mathrm{orth}(G^T G\, Q_x)` every two batches (block power /
    orthogonal iteration): for a stationary gradient subspace, ``Q_x`` converges to the top-``k`` right
    singular subspace at the rate :math:`(\sigma_{k+1}/\sigma_k)^2` per two batches and
    :math:`\hat G` to the truncated SVD (Eckart-Young: :math:`\|G - \hat G\|_F^2 \to \sum_{r>k} \sigma_r^2`).
    If the gradient has rank :math:`\le k` and the same row space each batch, :math:`\hat G = G` from the
    second batch on.
``mode="incremental"`` (the eigenupdate: incremental truncated SVD within the batch)
    The tracker holds the rank-``k`` SVD :math:`\hat G_t = U_t S_t V_t^T` of the rows seen so far. A block of
    ``m`` rows adds :math:`D_B^T X_B`; with the QR factorisations :math:`[U_t S_t,\ D_B^T] = Q_a R_a` and
    :math:`[V_t,\ X_B^T] = Q_b R_b` the sum is :math:`Q_a (R_a R_b^T) Q_b^T`, whose exact SVD comes from the
    small :math:`(k+m) \times (k+m)` core :math:`R_a R_b^T = \tilde U \tilde S \tilde V^T`; it is truncated to the
    top ``k``: :math:`U_{t+1} = Q_a \tilde U_{:, :k}`, :math:`S_{t+1} = \tilde S_{:k}`,
    :math:`V_{t+1} = Q_b \tilde V_{:, :k}`. Exact (:math:`\hat G = G`) whenever ``G`` has rank :math:`\le k`;
    otherwise each truncation drops the smallest directions of the running sum, so the error is close to,
    and never below, the Eckart-Young bound. :meth:`StreamingPCA.reset` starts the next batch from zero.

Non-negative matrix factorisation (NMF), :func:`nmf_hals` and :func:`signed_nmf`
    ``G`` is signed, so it is split into its parts :math:`G = G^+ - G^-`, :math:`G^\pm = \max(\pm G, 0)`
    (the potentiating and depressing halves of the update), and each part gets a rank-``k`` NMF
    :math:`G^\pm \approx W^\pm H^{\pm T}`, :math:`W^\pm \ge 0`, :math:`H^\pm \ge 0`; then
    :math:`U = [W^+, -W^-]`, :math:`V = [H^+, H^-]` (``2k`` components). Each NMF minimises
    :math:`\|A - W H^T\|_F^2` by hierarchical alternating least squares (HALS; Cichocki & Phan, IEICE Trans.
    Fundamentals E92-A:708, 2009): for ``r = 1..k`` in turn, the exact minimiser over one column,

    .. math::

        w_r \leftarrow \Big[ w_r + \frac{(A H)_{:r} - W (H^T H)_{:r}}{(H^T H)_{rr}} \Big]_+ , \qquad
        h_r \leftarrow \Big[ h_r + \frac{(A^T W)_{:r} - H (W^T W)_{:r}}{(W^T W)_{rr}} \Big]_+ ,

    all ``w_r`` then all ``h_r`` per iteration. Each column step is an exact block-coordinate minimisation
    of a convex problem, so the residual :math:`\|A - W H^T\|_F` never increases. NMF needs the batch's
    gradient matrix itself: :class:`LowRankGradient` accumulates ``G = D^T X`` (a dense
    ``(n_out, n_in)`` buffer, which the periphery would have to hold) and factorises it at the end of the batch.

Transfer to the devices (Zhao et al. 2021), :func:`rank_sum_counts`, :func:`rank_seq_counts`
    ``rank-sum`` (reconstruction outside the array): one update
    :math:`n = Q(-\eta \sum_r u_r v_r^T / \delta w)`; ``rank-seq`` (reconstruction in the array): the
    components one after the other, each its own pulse counts :math:`n_r = Q(-\eta\, u_r v_r^T / \delta w)`,
    applied in order so that each sees the device states the previous one left. ``Q`` is
    :func:`~inmaterio.crossbars.updates.quantized_counts` (nearest or stochastic rounding, optional clip).
    With nearest rounding and no clip, :math:`|\sum_r n_r - n| \le (K + 1)/2` per device for ``K``
    components; with stochastic rounding both have the same expectation.

The sign and scale of ``G`` are the caller's: rows recorded by a tile during the backward pass give the
gradient of the loss as the loss defines it (a mean over the batch already carries its ``1/N`` in ``delta``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from inmaterio.config import StrictModel
from inmaterio.crossbars.updates import quantized_counts

__all__ = [
    "LowRankConfig",
    "LowRankGradient",
    "StreamingPCA",
    "nmf_hals",
    "signed_nmf",
    "rank_sum_counts",
    "rank_seq_counts",
    "transfer_counts",
]


class LowRankConfig(StrictModel):
    """Low-rank gradient decomposition settings (module docstring).

    method : ``sbpca`` (streaming batch PCA) or ``nmf`` (HALS NMF of the positive and negative parts).
    rank : the rank ``k`` (>= 1 and at most ``min(n_out, n_in)`` of each tile; NMF gives ``2k`` components).
    transfer : ``sum`` (one pulse-count matrix of the reconstruction) or ``seq`` (one per component, in order).
    pca_mode : ``power`` (power iteration warm-started across batches) or ``incremental`` (incremental SVD).
    block_rows : rows per vectorised block of the incremental SVD (the core is ``(k + block_rows)`` square).
    nmf_iterations : HALS iterations per batch (each updates every column of both factors once).
    """

    method: Literal["sbpca", "nmf"] = "sbpca"
    rank: int = Field(1, ge=1)
    transfer: Literal["sum", "seq"] = "sum"
    pca_mode: Literal["power", "incremental"] = "power"
    block_rows: int = Field(32, ge=1, le=4096)
    nmf_iterations: int = Field(50, ge=1, le=100000)


def _check_rank(rank: int, n_out: int, n_in: int) -> None:
    for name, n in (("n_out", n_out), ("n_in", n_in)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} = {n!r} must be an integer >= 1")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(n_out, n_in):
        raise ValueError(f"rank = {rank!r} must be an integer in [1, min(n_out, n_in) = {min(n_out, n_in)}]")


def _check_matrix(name: str, t: torch.Tensor, shape: tuple[int | None, int | None]) -> None:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D floating-point tensor, got {type(t).__name__} {tuple(getattr(t, 'shape', ()))}")
    for axis, want in enumerate(shape):
        if want is not None and t.shape[axis] != want:
            raise ValueError(f"{name} has shape {tuple(t.shape)}; axis {axis} must have size {want}")
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise ValueError(f"{name} holds NaN or infinite values (first at index {tuple(bad)}: {t[tuple(bad)].item()})")


def _check_rows(x_rows: torch.Tensor, delta_rows: torch.Tensor, n_out: int, n_in: int) -> None:
    _check_matrix("x_rows", x_rows, (None, n_in))
    _check_matrix("delta_rows", delta_rows, (None, n_out))
    if x_rows.shape[0] != delta_rows.shape[0]:
        raise ValueError(f"x_rows has {x_rows.shape[0]} rows and delta_rows {delta_rows.shape[0]}; they must match")


def _orthonormal(n: int, k: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    g = torch.randn((n, k), generator=generator, device=generator.device, dtype=dtype).to(device)
    return torch.linalg.qr(g).Q


class StreamingPCA:
    """Streaming rank-``k`` approximation ``G ~= U V^T`` of a batch gradient ``G = sum_b delta_b x_b^T``.

    Parameters
    ----------
    n_out, n_in : the gradient's shape ``(n_out, n_in)``.
    rank : ``k``, in ``[1, min(n_out, n_in)]``.
    mode : ``power`` (warm-started power iteration; the module docstring) or ``incremental`` (incremental SVD).
    generator : draws the initial random bases of ``power`` (a ``(n, k)`` standard normal each, QR-orthonormalised).
    block_rows : rows per block of the ``incremental`` mode (``power`` takes any block at once: it is linear).
    dtype, device : of the state.
    """

    def __init__(
        self,
        n_out: int,
        n_in: int,
        rank: int,
        *,
        mode: Literal["power", "incremental"] = "power",
        generator: torch.Generator | None = None,
        block_rows: int = 32,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        _check_rank(rank, n_out, n_in)
        if mode not in ("power", "incremental"):
            raise ValueError(f"mode = {mode!r}; allowed: 'power', 'incremental'")
        if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
            raise ValueError(f"block_rows = {block_rows!r} must be an integer >= 1")
        if mode == "power" and not isinstance(generator, torch.Generator):
            raise ValueError("mode 'power' needs a torch.Generator for its initial bases")
        self.n_out, self.n_in, self.rank, self.mode, self.block_rows = n_out, n_in, rank, mode, block_rows
        self.dtype, self.device = dtype, torch.device(device)
        self.generator = generator
        self.rows_seen = 0
        if mode == "power":
            self.q_d = _orthonormal(n_out, rank, generator, dtype, self.device)
            self.q_x = _orthonormal(n_in, rank, generator, dtype, self.device)
        self._clear()

    def _clear(self) -> None:
        k, kw = self.rank, {"dtype": self.dtype, "device": self.device}
        self.rows_seen = 0
        if self.mode == "power":
            self.y_d = torch.zeros((self.n_out, k), **kw)
            self.y_x = torch.zeros((self.n_in, k), **kw)
        else:
            self.u = torch.zeros((self.n_out, k), **kw)
            self.s = torch.zeros((k,), **kw)
            self.v = torch.zeros((self.n_in, k), **kw)

    def update(self, x_rows: torch.Tensor, delta_rows: torch.Tensor) -> None:
        """Add the rows ``x_rows (N, n_in)``, ``delta_rows (N, n_out)`` (the terms ``delta_b x_b^T``) to the batch."""
        _check_rows(x_rows, delta_rows, self.n_out, self.n_in)
        x = x_rows.detach().to(self.device, self.dtype)
        d = delta_rows.detach().to(self.device, self.dtype)
        self.rows_seen += x.shape[0]
        if self.mode == "power":
            self.y_d += d.t() @ (x @ self.q_x)
            self.y_x += x.t() @ (d @ self.q_d)
            return
        k = self.rank
        for start in range(0, x.shape[0], self.block_rows):
            xb, db = x[start : start + self.block_rows], d[start : start + self.block_rows]
            qa, ra = torch.linalg.qr(torch.cat([self.u * self.s, db.t()], dim=1))
            qb, rb = torch.linalg.qr(torch.cat([self.v, xb.t()], dim=1))
            uc, sc, vch = torch.linalg.svd(ra @ rb.t())
            m = min(k, sc.numel())
            self.u = torch.zeros_like(self.u)
            self.v = torch.zeros_like(self.v)
            self.s = torch.zeros_like(self.s)
            self.u[:, :m] = qa @ uc[:, :m]
            self.v[:, :m] = qb @ vch[:m].t()
            self.s[:m] = sc[:m]

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U (n_out, k), V (n_in, k))`` with ``G ~= U V^T``, components ordered by decreasing ``|u_r| |v_r|``.

        ``power``: ``U = P S``, ``V = Q_x W`` from the thin SVD ``Y_d = P S W^T`` (``v_r`` orthonormal);
        ``incremental``: ``U = U_t S_t``, ``V = V_t``. Zero factors before any row.
        """
        if self.mode == "power":
            p, s, wh = torch.linalg.svd(self.y_d, full_matrices=False)
            return p * s, self.q_x @ wh.t()
        return self.u * self.s, self.v.clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors that carry over between batches (``power``: the bases ``q_d``, ``q_x``), for a checkpoint."""
        return {"q_d": self.q_d.clone(), "q_x": self.q_x.clone()} if self.mode == "power" else {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` (the batch's sums are cleared)."""
        if self.mode == "power":
            for name, shape in (("q_d", (self.n_out, self.rank)), ("q_x", (self.n_in, self.rank))):
                t = state.get(name)
                if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
                    raise ValueError(f"state entry {name!r} must be a tensor of shape {shape}, got {t!r:.80}")
            self.q_d = state["q_d"].to(self.device, self.dtype).clone()
            self.q_x = state["q_x"].to(self.device, self.dtype).clone()
        self._clear()

    def reset(self, keep_basis: bool = True) -> None:
        """End the batch: forget its rows. ``power``: the bases first take the batch's power step
        (``Q_d = qr(Y_d)``, ``Q_x = qr(Y_x)``; kept if the batch had no rows), unless ``keep_basis`` is False,
        which draws new random bases."""
        if self.mode == "power":
            if not keep_basis:
                self.q_d = _orthonormal(self.n_out, self.rank, self.generator, self.dtype, self.device)
                self.q_x = _orthonormal(self.n_in, self.rank, self.generator, self.dtype, self.device)
            elif self.rows_seen > 0:
                if bool(self.y_d.abs().max() > 0):
                    self.q_d = torch.linalg.qr(self.y_d).Q
                if bool(self.y_x.abs().max() > 0):
                    self.q_x = torch.linalg.qr(self.y_x).Q
        self._clear()


def nmf_hals(
    a: torch.Tensor, rank: int, iterations: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-negative factorisation ``a ~= W H^T`` by HALS (module docstring).

    a : ``(m, n)`` non-negative matrix; rank : ``k`` in ``[1, min(m, n)]``; iterations : HALS sweeps (>= 1);
    generator : draws the initial factors, uniform in ``[0, 1)`` scaled by ``sqrt(mean(a) / k)``.

    Returns ``(W (m, k), H (n, k), history (iterations + 1,))``: non-negative factors and the residual
    ``||a - W H^T||_F`` before the first sweep and after each one (non-increasing up to round-off).
    """
    _check_matrix("a", a, (None, None))
    if bool((a < 0).any()):
        raise ValueError(f"a must be non-negative; its minimum is {a.min().item()} (split a signed matrix: signed_nmf)")
    m, n = a.shape
    _check_rank(rank, m, n)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations = {iterations!r} must be an integer >= 1")
    if not isinstance(generator, torch.Generator):
        raise ValueError("nmf_hals needs a torch.Generator for its initial factors")
    scale = math.sqrt(max(float(a.mean()), 0.0) / rank)

    def uniform(rows: int) -> torch.Tensor:
        return torch.rand((rows, rank), generator=generator, device=generator.device, dtype=a.dtype).to(a.device) * scale

    w, h = uniform(m), uniform(n)
    tiny = torch.finfo(a.dtype).tiny
    history = [torch.linalg.norm(a - w @ h.t())]
    for _ in range(iterations):
        for x, y, target in ((w, h, a), (h, w, a.t())):  # update x (the columns of W, then of H) with y fixed
            ty = target @ y
            yty = y.t() @ y
            for r in range(rank):
                step = (ty[:, r] - x @ yty[:, r]) / yty[r, r].clamp(min=tiny)
                x[:, r] = (x[:, r] + step).clamp_(min=0.0)
        history.append(torch.linalg.norm(a - w @ h.t()))
    return w, h, torch.stack(history)


def signed_nmf(
    g: torch.Tensor, rank: int, iterations: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NMF of a signed ``g (n_out, n_in)`` through its parts ``g = g+ - g-`` (module docstring).

    Returns ``(U (n_out, 2k), V (n_in, 2k), history (iterations + 1,))`` with ``g ~= U V^T``,
    ``U = [W+, -W-]``, ``V = [H+, H-]`` (``V >= 0``; the first ``k`` columns of ``U`` >= 0, the last ``k`` <= 0),
    and the parts' residual ``sqrt(||g+ - W+ H+^T||^2 + ||g- - W- H-^T||^2)`` per sweep (non-increasing).
    The positive part is factorised first (its initial factors are the generator's first draws).
    """
    _check_matrix("g", g, (None, None))
    w_pos, h_pos, hist_pos = nmf_hals(g.clamp(min=0.0), rank, iterations, generator)
    w_neg, h_neg, hist_neg = nmf_hals((-g).clamp(min=0.0), rank, iterations, generator)
    history = torch.sqrt(hist_pos**2 + hist_neg**2)
    return torch.cat([w_pos, -w_neg], dim=1), torch.cat([h_pos, h_neg], dim=1), history


def _check_factors(u: torch.Tensor, v: torch.Tensor) -> None:
    _check_matrix("U", u, (None, None))
    _check_matrix("V", v, (None, u.shape[1]))


def rank_sum_counts(
    u: torch.Tensor,
    v: torch.Tensor,
    learning_rate: float,
    dw_min: float,
    rounding: Literal["nearest", "stochastic"],
    generator: torch.Generator | None = None,
    max_pulses: int | None = None,
) -> torch.Tensor:
    """``rank-sum``: the pulse counts ``(n_out, n_in)`` of ``-learning_rate * U V^T`` (one update).

    u : ``(n_out, K)``; v : ``(n_in, K)``; the rest as in :func:`~inmaterio.crossbars.updates.quantized_counts`.
    """
    _check_factors(u, v)
    return quantized_counts(-learning_rate * (u @ v.t()), dw_min, rounding, generator, max_pulses)


def rank_seq_counts(
    u: torch.Tensor,
    v: torch.Tensor,
    learning_rate: float,
    dw_min: float,
    rounding: Literal["nearest", "stochastic"],
    generator: torch.Generator | None = None,
    max_pulses: int | None = None,
) -> list[torch.Tensor]:
    """``rank-seq``: a list of ``K`` pulse-count matrices ``(n_out, n_in)``, the ``r``-th of
    ``-learning_rate * u_r v_r^T``, to be applied in order (stochastic rounding draws them in that order)."""
    _check_factors(u, v)
    outer = -learning_rate * (u.t().unsqueeze(2) * v.t().unsqueeze(1))  # (K, n_out, n_in), all at once
    counts = quantized_counts(outer, dw_min, rounding, generator, max_pulses)
    return list(counts.unbind(0))


def transfer_counts(
    config: LowRankConfig,
    u: torch.Tensor,
    v: torch.Tensor,
    learning_rate: float,
    dw_min: float,
    rounding: Literal["nearest", "stochastic"],
    generator: torch.Generator | None = None,
    max_pulses: int | None = None,
) -> list[torch.Tensor]:
    """The pulse-count matrices of ``config.transfer``: ``[rank_sum_counts(...)]`` or ``rank_seq_counts(...)``."""
    fn = rank_sum_counts if config.transfer == "sum" else rank_seq_counts
    out = fn(u, v, learning_rate, dw_min, rounding, generator, max_pulses)
    return [out] if isinstance(out, torch.Tensor) else out


class LowRankGradient:
    """One tile's low-rank gradient tracker for :class:`LowRankConfig` (``sbpca`` or ``nmf``).

    ``update(x_rows, delta_rows)`` during the batch, ``factors()`` at its end, then ``reset()``.
    ``nmf`` accumulates ``G = D^T X`` densely and factorises it in :meth:`factors` with ``generator``.
    """

    def __init__(
        self,
        config: LowRankConfig,
        n_out: int,
        n_in: int,
        generator: torch.Generator,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(config, LowRankConfig):
            raise ValueError(f"config must be a LowRankConfig, got {type(config).__name__}")
        _check_rank(config.rank, n_out, n_in)
        if not isinstance(generator, torch.Generator):
            raise ValueError("LowRankGradient needs a torch.Generator")
        self.config, self.n_out, self.n_in, self.generator = config, n_out, n_in, generator
        self.history: torch.Tensor | None = None
        if config.method == "sbpca":
            self.pca: StreamingPCA | None = StreamingPCA(
                n_out,
                n_in,
                config.rank,
                mode=config.pca_mode,
                generator=generator,
                block_rows=config.block_rows,
                dtype=dtype,
                device=device,
            )
        else:
            self.pca = None
            self.g = torch.zeros((n_out, n_in), dtype=dtype, device=device)

    def update(self, x_rows: torch.Tensor, delta_rows: torch.Tensor) -> None:
        """Add rows ``x_rows (N, n_in)``, ``delta_rows (N, n_out)`` to the batch."""
        if self.pca is not None:
            self.pca.update(x_rows, delta_rows)
            return
        _check_rows(x_rows, delta_rows, self.n_out, self.n_in)
        self.g += delta_rows.detach().to(self.g).t() @ x_rows.detach().to(self.g)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, V)`` with ``G ~= U V^T`` (``k`` components for ``sbpca``, ``2k`` for ``nmf``; NMF's residual
        history is left in ``self.history``)."""
        if self.pca is not None:
            return self.pca.factors()
        u, v, self.history = signed_nmf(self.g, self.config.rank, self.config.nmf_iterations, self.generator)
        return u, v

    def reset(self) -> None:
        """End the batch (``sbpca power`` keeps its warm-started bases)."""
        if self.pca is not None:
            self.pca.reset()
        else:
            self.g.zero_()
