"""The DNPU layer: many dopant-network nodes evaluated in one vectorised call.

A node is one DNPU. Of its ``n_activation`` activation electrodes, the
``n_inputs`` listed in ``input_electrodes`` take data, the others take
learnable *control voltages*. For data ``x`` in ``data_range = (d_lo, d_hi)``
an input electrode with voltage range ``[v_lo, v_hi]`` receives::

    v = v_lo + (x - d_lo) * (v_hi - v_lo) / (d_hi - d_lo)      (then clamped to [v_lo, v_hi])

so the data range fills each input electrode's own range, whatever electrode
it is and in whatever order the inputs are listed. Data outside ``data_range``
saturates at the range ends (zero gradient there).

Control voltages are one parameter ``controls (n_nodes, n_controls)`` V,
initialised uniformly inside their ranges. :meth:`DNPU.regularizer` penalises
leaving the ranges (``sum(relu(low - c) + relu(c - high))`` V) and
:meth:`DNPU.constrain` clamps them back; the gradient trainer calls both.

All nodes (and, for the genetic algorithm, all genomes of a population) are
one batch dimension of one processor call. ``multiplex=True`` evaluates the
nodes one after the other instead, as one physical device would have to; the
result is the same.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from inmaterio.errors import ConfigError
from inmaterio.processors import Processor, check_interchangeable

__all__ = ["DNPU"]


class DNPU(nn.Module):
    """A layer of ``n_nodes`` DNPUs sharing one processor (surrogate or device).

    Parameters
    ----------
    processor : the back end (:class:`~inmaterio.processors.SurrogateProcessor`
        or :class:`~inmaterio.processors.DeviceProcessor`). It is not a
        sub-module: the layer's state dict holds only what the layer learns.
    n_nodes : number of nodes (>= 1).
    input_electrodes : the activation electrodes (indices or names) that take
        data; one sequence for every node, or one sequence per node (all of
        the same length). The others are control electrodes, in ascending order
        (none when every activation electrode takes data: a fixed node).
    data_range : ``(low, high)`` of the data for every input, or one
        ``(low, high)`` per input position.
    seed : seed of the uniform initialisation of the controls (None: torch's global generator).
    multiplex : evaluate node after node (time multiplexing one device).

    Shapes
    ------
    ``forward(x)`` accepts ``x`` as ``(batch, n_inputs)`` (every node gets the
    same inputs), ``(batch, n_nodes, n_inputs)`` or ``(batch, n_nodes * n_inputs)``
    (node k takes inputs ``k * n_inputs .. (k + 1) * n_inputs - 1``) and returns
    ``(batch, n_nodes)`` nA. With ``controls (population, n_nodes, n_controls)``
    it returns ``(population, batch, n_nodes)``: one output per genome.
    """

    def __init__(
        self,
        processor: Processor,
        n_nodes: int = 1,
        input_electrodes: Sequence[int | str] | Sequence[Sequence[int | str]] = (0, 1),
        data_range: tuple[float, float] | Sequence[tuple[float, float]] = (-1.0, 1.0),
        *,
        seed: int | None = None,
        multiplex: bool = False,
    ) -> None:
        super().__init__()
        if n_nodes < 1:
            raise ConfigError(f"n_nodes must be >= 1, got {n_nodes}")
        self.n_nodes = int(n_nodes)
        self.multiplex = multiplex
        info = processor.info
        n_act = info.n_activation
        per_node = _per_node_electrodes(input_electrodes, self.n_nodes, info.electrode_names)
        self.n_inputs = len(per_node[0])
        self.n_controls = n_act - self.n_inputs
        if self.n_inputs == 0:
            raise ConfigError(f"a node needs at least one input electrode of {info.electrode_names}")
        ranges = torch.as_tensor(info.ranges_array(), dtype=torch.float64)
        dtype = torch.get_default_dtype()
        input_index = torch.tensor(per_node, dtype=torch.long)  # (nodes, n_inputs)
        control_index = torch.tensor(
            [[e for e in range(n_act) if e not in node] for node in per_node], dtype=torch.long
        )  # (nodes, n_controls)
        order = torch.cat([input_index, control_index], dim=1)  # column j of [inputs, controls] is electrode order[j]
        self.register_buffer("input_index", input_index)
        self.register_buffer("control_index", control_index)
        self.register_buffer("gather_index", torch.argsort(order, dim=1))  # electrode e <- column gather_index[e]

        # the affine map is computed in float64 and stored in the default dtype (one rounding only)
        d = _data_ranges(data_range, self.n_inputs)  # (n_inputs, 2) float64
        v_lo, v_hi = ranges[input_index, 0], ranges[input_index, 1]  # (nodes, n_inputs)
        scale = (v_hi - v_lo) / (d[:, 1] - d[:, 0])
        self.register_buffer("input_scale", scale.to(dtype))
        self.register_buffer("input_offset", (v_lo - d[:, 0] * scale).to(dtype))
        self.register_buffer("input_low", v_lo.to(dtype))
        self.register_buffer("input_high", v_hi.to(dtype))
        self.register_buffer("control_low", ranges[control_index, 0].to(dtype))
        self.register_buffer("control_high", ranges[control_index, 1].to(dtype))
        self.data_range = [tuple(map(float, r)) for r in d.tolist()]

        generator = None if seed is None else torch.Generator().manual_seed(seed)
        u = torch.rand(self.n_nodes, self.n_controls, generator=generator, dtype=dtype)
        c = self.control_low + u * (self.control_high - self.control_low)
        # rounding of low + u * (high - low) may land one ulp above high: clamp so the start is inside
        self.controls = nn.Parameter(torch.maximum(torch.minimum(c, self.control_high), self.control_low))
        self._set_processor(processor)

    # -- back end -------------------------------------------------------------------------------
    @property
    def processor(self) -> Processor:
        """The back end evaluating the nodes."""
        return self._processor

    def _set_processor(self, processor: Processor) -> None:
        object.__setattr__(self, "_processor", processor)  # not a sub-module: kept out of state_dict/parameters

    def set_processor(self, processor: Processor) -> Processor:
        """Switch the back end (e.g. surrogate -> device); returns the previous one.

        The new back end must have as many activation electrodes, and the
        layer's voltages must fit its ranges (else :class:`ConfigError`).
        """
        old = self._processor
        check_interchangeable(
            processor.info, old.info, new_name="the new processor", old_name="the layer was built for",
            old_short="the layer", hint="build the layer for the new device instead",
        )  # fmt: skip
        self._set_processor(processor)
        return old

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - torch's signature; .to()/.double() also move the processor
        self._processor._apply(fn)
        return super()._apply(fn, recurse)

    # -- voltages -------------------------------------------------------------------------------
    def input_voltages(self, x: torch.Tensor) -> torch.Tensor:
        """Map data ``x`` (any accepted shape) to input voltages ``(batch, n_nodes, n_inputs)`` V."""
        x = self._node_inputs(x)
        v = x * self.input_scale + self.input_offset
        return torch.maximum(torch.minimum(v, self.input_high), self.input_low)

    def voltages(self, x: torch.Tensor, controls: torch.Tensor | None = None) -> torch.Tensor:
        """All activation voltages ``(batch, n_nodes, n_activation)`` V (or ``(pop, batch, ...)``)."""
        v_in = self.input_voltages(x)
        c = self.controls if controls is None else self._check_population(controls)
        if c.ndim == 2:
            c = c.unsqueeze(0).expand(v_in.shape[0], -1, -1)  # (batch, nodes, n_controls)
        else:
            v_in = v_in.unsqueeze(0).expand(c.shape[0], -1, -1, -1)
            c = c.unsqueeze(1).expand(-1, v_in.shape[1], -1, -1)  # (pop, batch, nodes, n_controls)
        both = torch.cat([v_in, c.to(v_in.dtype)], dim=-1)
        return torch.gather(both, -1, self.gather_index.expand_as(both))

    def forward(self, x: torch.Tensor, controls: torch.Tensor | None = None) -> torch.Tensor:
        evaluate = self._processor
        if controls is not None and controls.ndim == 3 and not x.requires_grad:
            x, evaluate = self._distinct_rows(x)
        v = self.voltages(x, controls)
        if not self.multiplex:
            return evaluate(v)
        return torch.stack([evaluate(v[..., k, :]) for k in range(self.n_nodes)], dim=-1)

    def _distinct_rows(self, x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """For a population on data whose rows repeat (waveform plateaus, repeated gates): the
        distinct rows of ``x`` and how to evaluate their voltages back to every sample.

        The distinct rows are found once (a sort of ``batch`` short rows) and
        :meth:`Processor.forward_repeated` expands them along the batch
        dimension (dim 1 of the ``(pop, batch, ...)`` voltages), so a surrogate
        evaluates ``pop x distinct`` operating points instead of ``pop x batch``
        with the same result, noise drawn per sample included.
        """
        rows = self._node_inputs(x).reshape(x.shape[0], -1)
        distinct, index = torch.unique(rows, dim=0, return_inverse=True)
        if len(distinct) == len(rows):
            return x, self._processor
        distinct = distinct.reshape(len(distinct), self.n_nodes, self.n_inputs)
        return distinct, lambda volts: self._processor.forward_repeated(volts, index, dim=1)

    # -- control voltages -----------------------------------------------------------------------
    def regularizer(self) -> torch.Tensor:
        """Total distance (V) of the controls outside their ranges; 0 when all are inside."""
        c = self.controls
        return (torch.relu(self.control_low - c) + torch.relu(c - self.control_high)).sum()

    @torch.no_grad()
    def constrain(self) -> None:
        """Clamp the controls into their ranges (in place)."""
        self.controls.copy_(torch.maximum(torch.minimum(self.controls, self.control_high), self.control_low))

    @torch.no_grad()
    def keep_controls_within(self, radius_v: float) -> None:
        """Shrink the control ranges to ``radius_v`` (V) around the present controls (a trust region, in place)."""
        self.control_low.copy_(torch.maximum(self.control_low, self.controls - radius_v))
        self.control_high.copy_(torch.minimum(self.control_high, self.controls + radius_v))

    def control_bounds(self) -> torch.Tensor:
        """``(n_nodes * n_controls, 2)`` [low, high] V: the genes of the genetic algorithm, node-major."""
        return torch.stack([self.control_low.reshape(-1), self.control_high.reshape(-1)], dim=1)

    def control_table(self) -> list[dict[str, float]]:
        """The control voltages per node as ``{electrode name: volts}`` (for results files).

        Values are clipped to the exact (float64) electrode ranges, so a
        control sitting at a range end in float32 (e.g. -1.2000000477) is
        written as the range end a device accepts.
        """
        info = self._processor.info
        names, ranges = info.electrode_names, info.voltage_ranges_v
        return [
            {names[int(e)]: min(max(float(v), ranges[int(e)][0]), ranges[int(e)][1]) for e, v in zip(idx, row)}
            for idx, row in zip(self.control_index, self.controls.detach().cpu())
        ]

    def extra_repr(self) -> str:
        names = self._processor.info.electrode_names
        inputs = [[names[int(e)] for e in row] for row in self.input_index]
        shown = inputs[0] if all(i == inputs[0] for i in inputs) else inputs
        return f"n_nodes={self.n_nodes}, inputs={shown}, data_range={self.data_range}, multiplex={self.multiplex}"

    # -- helpers --------------------------------------------------------------------------------
    def _node_inputs(self, x: torch.Tensor) -> torch.Tensor:
        k, m = self.n_nodes, self.n_inputs
        if x.ndim == 2 and x.shape[1] == m:
            return x.unsqueeze(1).expand(-1, k, -1)
        if x.ndim == 2 and x.shape[1] == k * m:
            return x.reshape(x.shape[0], k, m)
        if x.ndim == 3 and x.shape[1:] == (k, m):
            return x
        raise ConfigError(
            f"DNPU layer with {k} node(s) of {m} input(s) takes x of shape (batch, {m}), (batch, {k}, {m}) "
            f"or (batch, {k * m}); got {tuple(x.shape)}"
        )

    def _check_population(self, controls: torch.Tensor) -> torch.Tensor:
        want = (self.n_nodes, self.n_controls)
        if controls.ndim == 2 and tuple(controls.shape) == want:
            return controls
        if controls.ndim == 3 and tuple(controls.shape[1:]) == want:
            return controls
        raise ConfigError(f"controls must have shape {want} or (population, {want[0]}, {want[1]}); got {tuple(controls.shape)}")


def _per_node_electrodes(
    spec: Sequence[int | str] | Sequence[Sequence[int | str]], n_nodes: int, names: list[str]
) -> list[list[int]]:
    """Resolve names/indices to a validated ``n_nodes x n_inputs`` list of electrode indices."""
    spec = list(spec)
    if not spec:
        raise ConfigError("input_electrodes is empty; give at least one input electrode")
    # one row per node if the first entry is itself a sequence (list, tuple, 1-D array or tensor)
    nested = not isinstance(spec[0], str) and isinstance(spec[0], Iterable) and getattr(spec[0], "ndim", 1) != 0
    try:
        rows = [list(r) for r in spec] if nested else [spec] * n_nodes
    except TypeError:
        raise ConfigError(f"input_electrodes mixes rows and single electrodes: {spec}") from None
    if len(rows) != n_nodes:
        raise ConfigError(f"input_electrodes lists {len(rows)} nodes, the layer has n_nodes={n_nodes}")
    out = []
    for k, row in enumerate(rows):
        idx = []
        for e in row:
            if isinstance(e, str):
                if e not in names:
                    raise ConfigError(f"node {k}: unknown input electrode '{e}'; activation electrodes are {names}")
                idx.append(names.index(e))
            elif (i := _as_index(e)) is not None and 0 <= i < len(names):
                idx.append(i)
            else:
                raise ConfigError(f"node {k}: input electrode {e!r} is not an index in 0..{len(names) - 1} or a name in {names}")
        if len(set(idx)) != len(idx):
            raise ConfigError(f"node {k}: input electrodes {row} repeat an electrode")
        if len(idx) != len(out[0] if out else idx):
            raise ConfigError(
                f"node {k} has {len(idx)} input electrodes, node 0 has {len(out[0])}; all nodes need the same number"
            )
        out.append(idx)
    return out


def _as_index(e: object) -> int | None:
    """``e`` as an int if it is an integer (Python, numpy or torch; not bool), else None."""
    if isinstance(e, bool) or getattr(e, "ndim", 0) != 0:
        return None
    try:
        return operator.index(e)
    except TypeError:
        return None


def _data_ranges(data_range: tuple[float, float] | Sequence[tuple[float, float]], n_inputs: int) -> torch.Tensor:
    """``(n_inputs, 2)`` data ranges from one ``(low, high)`` or one per input."""
    r = torch.as_tensor(data_range, dtype=torch.float64)
    if r.shape == (2,):
        r = r.expand(n_inputs, 2)
    if r.shape != (n_inputs, 2):
        raise ConfigError(f"data_range must be (low, high) or {n_inputs} pairs (one per input), got {data_range}")
    if not bool(torch.isfinite(r).all()) or bool((r[:, 0] >= r[:, 1]).any()):
        raise ConfigError(f"data_range entries must be finite with low < high, got {r.tolist()}")
    return r
