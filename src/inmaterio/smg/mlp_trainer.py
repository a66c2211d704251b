"""Adam training of a surrogate's MLP with a hand-written backward pass: the hot loop of surrogate training.

The surrogate MLP is small (7 inputs, a few layers of ~90 units), so on a
CPU a training step under autograd spends a large part of its time outside
the matrix products: building the graph, allocating every activation and
gradient, Adam's Python bookkeeping, and a slow generic mask kernel. This
module does the same maths with none of that:

- the parameters, their gradients and Adam's two moments are each ONE flat
  float32 vector, so Adam is one fused kernel call per step on one tensor;
- each layer's weights and bias are one row-major block ``[W | b]`` of
  shape ``(out, in + 1)`` in that vector, and every layer's input carries a
  last column of ones, so ONE matrix product gives a layer's output
  ``[h | 1] [W | b]^T`` and another its weights' and bias's gradient
  ``g^T [h | 1] = [dL/dW | dL/db]``: no bias is broadcast and no gradient is
  summed separately;
- activations and gradients live in buffers allocated once per batch size;
  the forward pass writes into them and applies the activation in place,
  the backward pass computes ``[dL/dW | dL/db]`` and ``dL/dh = g W`` with
  ``out=`` and multiplies by the activation's derivative written from the
  layer's OUTPUT (ReLU, tanh, ELU and leaky ReLU all have one), so no
  pre-activation is kept;
- subnormal floats are flushed to zero (the weights of units that die
  decay towards zero, and their subnormal products slow every matrix
  product on x86 CPUs; :mod:`inmaterio.denormals`).

The loss is the mean squared error of a batch, ``L = mean((mlp(x) - y)^2)``
with gradient ``2 (mlp(x) - y) / B``: the backward pass starts from
``mlp(x) - y`` and the fused Adam kernel divides the gradient by ``B / 2``
(its ``grad_scale``) as it reads it. Adam is PyTorch's (the same fused
kernel ``torch.optim.Adam(fused=True)`` calls, with L2 ``weight_decay`` added
to the gradient). ``tests/test_smg_mlp_trainer.py`` checks every activation
against autograd with ``torch.optim.Adam``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from inmaterio.denormals import flushed_denormals

__all__ = ["MLPTrainer"]


def _activation_backward(name: str, slope: float) -> Any:
    """``f(grad, out, grad_in)``: ``grad_in = grad * act'(x)`` written from the activation's output ``out``."""
    aten = torch.ops.aten
    if name == "relu":
        return lambda g, h, out: aten.threshold_backward.grad_input(g, h, 0.0, grad_input=out)
    if name == "tanh":
        return lambda g, h, out: aten.tanh_backward.grad_input(g, h, grad_input=out)
    if name == "elu":  # x <= 0: d/dx alpha (e^x - 1) = out + alpha, from the output
        return lambda g, h, out: aten.elu_backward.grad_input(g, slope, 1.0, 1.0, True, h, grad_input=out)
    if name == "leaky_relu":  # the output has the input's sign for a positive slope
        return lambda g, h, out: aten.leaky_relu_backward.grad_input(g, h, slope, True, grad_input=out)
    raise ValueError(f"unknown activation {name!r}; allowed: elu, leaky_relu, relu, tanh")


def _activation_forward(module: nn.Module) -> tuple[str, float, Any]:
    """The activation's name, its parameter (ELU alpha or leaky slope) and an in-place forward ``f(h)``."""
    if isinstance(module, nn.ReLU):
        return "relu", 0.0, torch.Tensor.relu_
    if isinstance(module, nn.Tanh):
        return "tanh", 0.0, torch.Tensor.tanh_
    if isinstance(module, nn.ELU):
        alpha = float(module.alpha)
        return "elu", alpha, lambda h: nn.functional.elu_(h, alpha)
    if isinstance(module, nn.LeakyReLU):
        slope = float(module.negative_slope)
        if slope <= 0:
            raise ValueError(f"leaky ReLU slope must be > 0 for a backward pass from the output, got {slope}")
        return "leaky_relu", slope, lambda h: nn.functional.leaky_relu_(h, slope)
    raise ValueError(f"unsupported activation module {type(module).__name__}; allowed: ReLU, Tanh, ELU, LeakyReLU")


class MLPTrainer:
    """Adam on an ``nn.Sequential`` of ``Linear, act, Linear, act, ..., Linear`` (one output), float32.

    The trainer holds its own copy of the parameters (in its own layout, see
    the module's docstring): :meth:`store_into` writes them back into the
    MLP (before evaluating or saving it), :meth:`load_from` reads them from
    it (after loading a checkpoint).

    Parameters
    ----------
    mlp : the network.
    lr, betas, eps, weight_decay : Adam's hyperparameters (``lr`` may change per epoch, see :attr:`lr`).
    """

    def __init__(
        self,
        mlp: nn.Sequential,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        modules = list(mlp)
        linears = modules[0::2]
        activations = modules[1::2]
        if not linears or not all(isinstance(m, nn.Linear) for m in linears) or len(activations) != len(linears) - 1:
            raise ValueError("the MLP must alternate Linear layers and activations, starting and ending with Linear")
        if any(layer.bias is None for layer in linears):
            raise ValueError("every Linear layer of the MLP needs a bias")
        if linears[-1].out_features != 1:
            raise ValueError(f"the MLP must have one output, got {linears[-1].out_features}")
        if any(p.dtype != torch.float32 for p in mlp.parameters()):
            raise TypeError("the MLP's parameters must be float32")
        forward = [_activation_forward(m) for m in activations]
        self._act_forward = [f for _, _, f in forward]
        self._act_backward = [_activation_backward(name, value) for name, value, _ in forward]
        # an activation with f(1) = 1 (ReLU, ELU, leaky ReLU) may run over the column of ones too: a contiguous pass
        self._act_keeps_one = [bool(f(torch.ones(1)) == 1.0) for f in self._act_forward]
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        n = sum(layer.out_features * (layer.in_features + 1) for layer in linears)
        self.params = torch.zeros(n)
        self.grads = torch.zeros(n)
        self.exp_avg = torch.zeros(n)
        self.exp_avg_sq = torch.zeros(n)
        self.step_count = torch.zeros(())
        self._one = torch.ones(())  # a tensor, not the number 1.0: adding a Python number converts it on every step
        self._blocks, self._grad_blocks = [], []  # per layer [W | b] (out, in + 1), views into the flat vectors
        mlp_order = []  # for each value in mlp.parameters() order, its index in the flat vectors
        offset = 0
        for layer in linears:
            n_out, n_in = layer.out_features, layer.in_features
            k = n_out * (n_in + 1)
            self._blocks.append(self.params[offset : offset + k].view(n_out, n_in + 1))
            self._grad_blocks.append(self.grads[offset : offset + k].view(n_out, n_in + 1))
            index = torch.arange(offset, offset + k).view(n_out, n_in + 1)
            mlp_order += [index[:, :n_in].reshape(-1), index[:, n_in]]
            offset += k
        self._mlp_order = torch.cat(mlp_order)
        self._n_in = linears[0].in_features
        self._widths = [layer.out_features for layer in linears]
        self._blocks_t = [block.t() for block in self._blocks]
        self._weights = [block[:, :-1] for block in self._blocks]
        self._buffers: tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]] | None = None
        self._views: dict[int, _BatchViews] = {}
        self.load_from(mlp)

    def load_from(self, mlp: nn.Sequential) -> None:
        """Copy the MLP's parameters into the trainer."""
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1) for p in mlp.parameters()])
            self.params.index_copy_(0, self._mlp_order, flat)

    def store_into(self, mlp: nn.Sequential) -> None:
        """Copy the trainer's parameters into the MLP."""
        flat = self.params[self._mlp_order]
        offset = 0
        with torch.no_grad():
            for p in mlp.parameters():
                k = p.numel()
                p.copy_(flat[offset : offset + k].view_as(p))
                offset += k

    def adam_state(self) -> dict[str, Any]:
        """Adam's step count and flat moments (copies), in ``mlp.parameters()`` order."""
        return {
            "step": int(self.step_count),
            "exp_avg": self.exp_avg[self._mlp_order],
            "exp_avg_sq": self.exp_avg_sq[self._mlp_order],
        }

    def load_adam_state(self, packed: dict[str, Any]) -> None:
        """Inverse of :meth:`adam_state`."""
        for name in ("exp_avg", "exp_avg_sq"):
            value = torch.as_tensor(packed[name], dtype=torch.float32).reshape(-1)
            if value.numel() != self.params.numel():
                raise ValueError(f"Adam state {name} has {value.numel()} values, the MLP {self.params.numel()}")
            getattr(self, name).index_copy_(0, self._mlp_order, value)
        self.step_count.fill_(float(packed["step"]))

    def _views_for(self, batch: int) -> _BatchViews:
        """The buffers of one step at this batch size, as views into buffers of the largest size seen (cached)."""
        views = self._views.get(batch)
        if views is None:
            if self._buffers is None or len(self._buffers[0]) < batch:
                # inputs [x | 1] and hidden outputs [h | 1] carry a column of ones; the last output does not
                outs = [torch.ones(batch, w + 1) for w in self._widths[:-1]] + [torch.empty(batch, 1)]
                self._buffers = (torch.ones(batch, self._n_in + 1), outs, [torch.empty(batch, w) for w in self._widths])
                self._views.clear()
            x_ones, outs, grads = self._buffers
            views = self._views[batch] = _BatchViews(
                x_ones[:batch], [out[:batch] for out in outs], [g[:batch] for g in grads], self._n_in, self._act_keeps_one
            )
        return views

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One Adam step on the batch ``x (B, n_in)``, ``y (B,)``; returns the batch's summed squared error (0-d)."""
        self._check(x, y)
        v = self._views_for(len(x))
        last = len(self._blocks) - 1
        with torch.no_grad(), flushed_denormals():
            self._forward(v, x)
            torch.sub(v.prediction, y, out=v.error)
            squared_error = torch.dot(v.error, v.error)
            for i in range(last, -1, -1):
                torch.mm(v.g_t[i], v.h_ones[i - 1] if i > 0 else v.x_ones, out=self._grad_blocks[i])
                if i > 0:
                    torch.mm(v.g[i], self._weights[i], out=v.g[i - 1])
                    self._act_backward[i - 1](v.g[i - 1], v.h[i - 1], v.g[i - 1])
            self.step_count.add_(self._one)
            torch._fused_adam_(
                [self.params], [self.grads], [self.exp_avg], [self.exp_avg_sq], [], [self.step_count],
                amsgrad=False, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
                weight_decay=self.weight_decay, eps=self.eps, maximize=False, grad_scale=v.half_batch,
            )  # fmt: skip
        return squared_error

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, batch: int, generator: torch.Generator) -> float:
        """One pass over ``x (N, n_in)``, ``y (N,)`` in the order of ``randperm(N, generator)``; the mean squared error."""
        self._check(x, y, batch)
        perm = torch.randperm(len(x), generator=generator)
        with flushed_denormals():  # once for the epoch: the steps' own blocks then nest without switching the mode
            errors = [self.step(xb, yb) for xb, yb in zip(x[perm].split(batch), y[perm].split(batch))]
        return torch.stack(errors).sum().item() / len(x)

    def squared_error(self, x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
        """The summed squared error of the trainer's network on ``x (N, n_in)``, ``y (N,)``, in chunks of ``batch``.

        A 0-d float64 tensor; the forward pass runs in the step's buffers
        (they stay in cache), without writing the parameters into the MLP.
        """
        self._check(x, y, batch)
        total = torch.zeros((), dtype=torch.float64)
        with torch.no_grad(), flushed_denormals():
            for xb, yb in zip(x.split(batch), y.split(batch)):
                v = self._views_for(len(xb))
                self._forward(v, xb)
                torch.sub(v.prediction, yb, out=v.error)
                total += torch.dot(v.error, v.error)
        return total

    def _check(self, x: torch.Tensor, y: torch.Tensor, batch: int | None = None) -> None:
        """Refuse inputs that do not fit the network, and a batch size that is not a whole number >= 1."""
        if x.dim() != 2 or x.shape[1] != self._n_in:
            raise ValueError(f"x must have shape (N, {self._n_in}) for this network, got {tuple(x.shape)}")
        if y.shape != (len(x),):
            raise ValueError(f"y must have shape ({len(x)},), one target per row of x, got {tuple(y.shape)}")
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise ValueError(f"batch must be a whole number >= 1, got {batch!r}")

    def _forward(self, v: _BatchViews, x: torch.Tensor) -> None:
        """The network's forward pass on ``x (B, n_in)`` into the buffers ``v``; the output lands in ``v.prediction``."""
        v.x.copy_(x)
        inputs = v.x_ones
        for block_t, out, activation, act_out, out_ones in zip(self._blocks_t, v.h, self._act_forward, v.act_out, v.h_ones):
            torch.mm(inputs, block_t, out=out)
            activation(act_out)
            inputs = out_ones
        torch.mm(inputs, self._blocks_t[-1], out=v.h[-1])


class _BatchViews:
    """One batch size's views of the trainer's buffers.

    ``x_ones (B, n_in + 1)`` is the input with its column of ones and ``x``
    its first ``n_in`` columns; ``h_ones[i]`` is layer ``i``'s output with
    its column of ones (the last layer has none) and ``h[i]`` the output
    alone; ``act_out[i]`` is what hidden layer ``i``'s activation runs over
    in place (``h_ones[i]`` where the activation keeps 1 at 1, else ``h[i]``); ``g[i] (B, width_i)`` is the loss's gradient at layer ``i``'s
    output (before Adam's scaling by ``2 / B``) and ``g_t[i]`` its
    transpose; ``prediction`` and ``error`` are the network's output and
    ``g[-1]`` as ``(B,)`` vectors; ``half_batch`` is ``B / 2`` as Adam's
    gradient scale.
    """

    def __init__(
        self,
        x_ones: torch.Tensor,
        outs: list[torch.Tensor],
        grads: list[torch.Tensor],
        n_in: int,
        act_keeps_one: list[bool],
    ) -> None:
        self.x_ones = x_ones
        self.x = x_ones[:, :n_in]
        self.h_ones = outs
        self.h = [out[:, :-1] for out in outs[:-1]] + [outs[-1]]
        self.act_out = [o if keeps else h for o, h, keeps in zip(outs, self.h, act_keeps_one)]
        self.g = grads
        self.g_t = [g.t() for g in grads]
        self.prediction = outs[-1].view(-1)
        self.error = grads[-1].view(-1)
        self.half_batch = torch.tensor(len(x_ones) / 2.0)
