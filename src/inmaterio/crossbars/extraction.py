"""Reading the weights out of an analog tile by regression over random mat-vecs (Gokmen 2021, Eq. 4).

An analog array cannot be read cell by cell; what it offers is the forward read ``y = W x + noise``
through its periphery. With ``n`` reads of random inputs ``x_k`` the least-squares estimate of the
weights is::

    W_est = M_yx M_xx^-1,    M_xx = sum_k x_k x_k^T  (in, in),    M_yx = sum_k y_k x_k^T  (out, in)

(Gokmen, "Enabling training of neural networks on noisy hardware", Front. Artif. Intell. 4, 2021,
Eq. 4; Tiki-Taka v2 reads its final weights this way, accumulating ``M_xx`` and ``M_yx`` as it goes).
Both sums are streamed (:class:`MatVecAccumulator`), so ``n`` is limited by time, not memory.

Error of the estimate. With independent output noise of std ``sigma`` (weight units) per read and
inputs uniform in ``[-1, 1]`` (``E[x^2] = 1/3``), ``M_xx ~ n/3 I`` and each entry of ``W_est`` has the
variance ``sigma^2 [M_xx^-1]_jj ~ 3 sigma^2 / n``: error std ``sigma sqrt(3 / n)`` for ``n >> in``
(``sigma sqrt(3 / (n - in - 1))`` is the inverse-Wishart value of Gaussian inputs, a better guide
when ``n`` is a few times ``in``), independent of ``in`` -- every read informs all the weights of
every row at once. Reading column by column with unit vectors (:func:`one_hot_weights`) has error
std ``sigma / sqrt(repeats)`` after ``repeats * in`` reads, ``sqrt(in / 3)`` times worse at the same
number of reads. DAC and ADC quantisation act as extra noise (the DAC's rounding of ``x`` enters
as ``W (x_q - x)``, output-referred), and ADC saturation biases the estimate (outputs past the
bound are clipped): keep ``|W x|`` well inside the output bound.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from inmaterio.crossbars.tile import AnalogTile

__all__ = ["MatVecAccumulator", "extract_weights", "one_hot_weights", "closed_form_error_std"]


class MatVecAccumulator:
    """Streaming sums ``M_xx = sum x x^T`` and ``M_yx = sum y x^T`` of forward reads, in float64.

    Parameters
    ----------
    in_features, out_features : the sizes of ``x`` and ``y`` (>= 1).
    device : where the sums live (default CPU).

    Attributes
    ----------
    m_xx : ``(in_features, in_features)`` float64.
    m_yx : ``(out_features, in_features)`` float64.
    n_reads : the number of ``(x, y)`` pairs added.
    """

    def __init__(self, in_features: int, out_features: int, *, device: torch.device | str | None = None) -> None:
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MatVecAccumulator {name} = {value!r} must be an integer >= 1")
        self.in_features = in_features
        self.out_features = out_features
        self.m_xx = torch.zeros(in_features, in_features, dtype=torch.float64, device=device)
        self.m_yx = torch.zeros(out_features, in_features, dtype=torch.float64, device=device)
        self.n_reads = 0

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of reads: inputs ``x: (batch, in_features)`` and outputs ``y: (batch, out_features)``.

        Raises ValueError for wrong shapes, a batch-size mismatch or NaN / infinite entries (nothing is added).
        """
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"inputs must have shape (batch, {self.in_features}), got {tuple(x.shape)}")
        if y.ndim != 2 or y.shape[1] != self.out_features:
            raise ValueError(f"outputs must have shape (batch, {self.out_features}), got {tuple(y.shape)}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} outputs")
        for name, t in (("inputs", x), ("outputs", y)):
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise ValueError(f"{name} have {bad} NaN or infinite entries of {t.numel()}")
        x = x.to(device=self.m_xx.device, dtype=torch.float64)
        y = y.to(device=self.m_xx.device, dtype=torch.float64)
        self.m_xx.addmm_(x.t(), x)
        self.m_yx.addmm_(y.t(), x)
        self.n_reads += x.shape[0]

    def estimate(self) -> torch.Tensor:
        """The least-squares weights ``M_yx M_xx^-1``: ``(out_features, in_features)`` float64.

        Solved through the Cholesky factor of ``M_xx`` (symmetric positive definite once the inputs span
        every direction). Raises ValueError when the reads cannot determine the weights: fewer reads than
        inputs, or inputs that do not span ``in_features`` dimensions (the rank is named).
        """
        if self.n_reads < self.in_features:
            raise ValueError(
                f"{self.n_reads} reads cannot determine {self.in_features} weights per output; "
                f"need at least in_features = {self.in_features} reads"
            )
        factor, info = torch.linalg.cholesky_ex(self.m_xx)
        if int(info) != 0:
            rank = int(torch.linalg.matrix_rank(self.m_xx))
            raise ValueError(
                f"the {self.n_reads} inputs span only {rank} of {self.in_features} dimensions (M_xx is singular); "
                "the weights are under-determined"
            )
        # W M_xx = M_yx  <=>  M_xx W^T = M_yx^T (M_xx symmetric)
        return torch.cholesky_solve(self.m_yx.t(), factor).t()


def _sizes(module: nn.Module) -> tuple[int, int]:
    sizes = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if not all(isinstance(s, int) and s >= 1 for s in sizes):
        raise ValueError(
            f"{type(module).__name__} has no integer in_features / out_features; weights can be extracted from an "
            "AnalogTile, an AnalogLinear or any module exposing them"
        )
    return sizes  # type: ignore[return-value]


def _to_array_units(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``y (batch, out)`` without the module's digital offset and gains: the array's own ``W x``, weight units.

    AnalogTile: ``(y - output_offset) / (compensation * output_scale)``; another module: ``y - bias`` when it
    has a ``bias`` of shape ``(out,)`` (its tiles' digital gains stay in the estimate).
    """
    if isinstance(module, AnalogTile):
        gain = (module.compensation * module.output_scale).detach().to(torch.float64)
        zero = (gain == 0).nonzero().flatten()
        if zero.numel():
            raise ValueError(f"output column {int(zero[0])} has a zero digital gain (compensation x output_scale)")
        return (y - module.output_offset.detach().to(torch.float64)) / gain
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor) and bias.shape == (y.shape[-1],):
        return y - bias.detach().to(torch.float64)
    return y


def _reads(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` in eval mode without gradients, as float64 array-unit outputs (the mode is restored)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            y = module(x).to(torch.float64)
    finally:
        module.train(was_training)
    return _to_array_units(module, y)


def _factory(module: nn.Module) -> dict:
    p = next(iter(module.parameters()), None)
    return {"device": p.device, "dtype": p.dtype} if p is not None else {"device": None, "dtype": torch.get_default_dtype()}


def extract_weights(
    module: nn.Module,
    n_reads: int,
    generator: torch.Generator,
    *,
    batch: int = 4096,
    accumulator: MatVecAccumulator | None = None,
) -> torch.Tensor:
    """Estimate the weights of an analog tile (or layer) from ``n_reads`` forward reads of uniform random inputs.

    Parameters
    ----------
    module : an :class:`~inmaterio.crossbars.tile.AnalogTile`, an ``AnalogLinear``, or any module with
        ``in_features`` / ``out_features`` mapping ``(batch, in)`` to ``(batch, out)``. It is read through its own
        forward (periphery, noise) in eval mode, without gradients; its train/eval mode is restored.
    n_reads : number of mat-vecs, >= ``in_features``.
    generator : draws the inputs, ``x ~ U[-1, 1]^in`` (on the module's device; the read noise comes from the
        tile's own generator).
    batch : reads per forward call (>= 1; memory only, the result is the same for any batch).
    accumulator : add to this :class:`MatVecAccumulator` (e.g. to continue an earlier extraction) instead of a
        fresh one.

    Returns
    -------
    ``(out_features, in_features)`` float64, in weight units: for an AnalogTile the array's own weights (the
    digital ``output_offset`` subtracted and ``compensation * output_scale`` divided out, so it compares with
    ``tile.weight`` / ``tile.effective_weight``); for another module its linear map with its digital ``bias``
    (if any) subtracted.

    Raises ValueError for ``n_reads < in_features``, a bad ``batch``, or non-finite outputs.
    """
    n_in, n_out = _sizes(module)
    if isinstance(n_reads, bool) or not isinstance(n_reads, int) or n_reads < n_in:
        raise ValueError(f"n_reads = {n_reads!r} must be an integer >= in_features = {n_in} (least squares needs it)")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch = {batch!r} must be an integer >= 1")
    factory = _factory(module)
    acc = accumulator if accumulator is not None else MatVecAccumulator(n_in, n_out, device=factory["device"])
    done = 0
    while done < n_reads:
        b = min(batch, n_reads - done)
        x = torch.rand(b, n_in, generator=generator, device=factory["device"], dtype=factory["dtype"]).mul_(2).sub_(1)
        acc.add(x, _reads(module, x))
        done += b
    return acc.estimate()


def one_hot_weights(module: nn.Module, *, repeats: int = 1) -> torch.Tensor:
    """The column-by-column baseline: read every unit input vector ``e_j`` ``repeats`` times and average.

    ``repeats * in_features`` reads; with output noise of std ``sigma`` (weight units) each entry's error std is
    ``sigma / sqrt(repeats)``. Same module conventions and units as :func:`extract_weights`.

    Returns ``(out_features, in_features)`` float64. Raises ValueError for ``repeats < 1`` or non-finite outputs.
    """
    n_in, _ = _sizes(module)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats = {repeats!r} must be an integer >= 1")
    eye = torch.eye(n_in, **_factory(module))
    total = None
    for _ in range(repeats):
        y = _reads(module, eye)  # (in, out): row j is the read of e_j
        bad = int((~torch.isfinite(y)).sum())
        if bad:
            raise ValueError(f"outputs have {bad} NaN or infinite entries of {y.numel()}")
        total = y if total is None else total + y
    return (total / repeats).t().contiguous()


def closed_form_error_std(sigma: float, n_reads: int, in_features: int | None = None) -> float:
    """Predicted error std of :func:`extract_weights` for output noise ``sigma`` (weight units), uniform inputs.

    ``sigma sqrt(3 / n)``, or with ``in_features`` the finite-sample value ``sigma sqrt(3 / (n - in - 1))``
    (exact for Gaussian inputs of the same variance; ``inf`` when ``n <= in + 1``).
    """
    if in_features is None:
        return sigma * math.sqrt(3.0 / n_reads)
    dof = n_reads - in_features - 1
    return sigma * math.sqrt(3.0 / dof) if dof > 0 else math.inf
