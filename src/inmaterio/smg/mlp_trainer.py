"""Adam training of a surrogate's MLP with a hand-written backward pass: the hot loop of surrogate training.

The surrogate MLP is small (7 inputs, a few layers of ~90 units), so on a
CPU a training step under autograd spends a large part of its time outside
the matrix products: building the graph, allocating every activation and
gradient, Adam's Python bookkeeping, and a slow generic mask kernel. This
module does the same maths with none of that:

- the parameters, their gradients and Adam's two moments are each ONE flat
  float32 vector (the layers' weights and biases are views into it, in
  ``mlp.parameters()`` order), so Adam is one fused kernel call per step on
  one tensor;
- activations and gradients live in buffers allocated once per batch size;
  the forward pass writes ``addmm`` into them and applies the activation in
  place, the backward pass computes ``dL/dW = g^T h``, ``dL/db = sum(g)``,
  ``dL/dh = g W`` with ``out=`` and multiplies by the activation's
  derivative written from the layer's OUTPUT (ReLU, tanh, ELU and leaky
  ReLU all have one), so no pre-activation is kept;
- subnormal floats are flushed to zero (the weights of units that die
  decay towards zero, and their subnormal products slow every matrix
  product on x86 CPUs; :mod:`inmaterio.denormals`).

The loss is the mean squared error of a batch, ``L = mean((mlp(x) - y)^2)``
with gradient ``2 (mlp(x) - y) / B``; Adam is PyTorch's (the same fused
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

    The trainer holds its own copy of the parameters: :meth:`store_into`
    writes them back into the MLP (before evaluating or saving it),
    :meth:`load_from` reads them from it (after loading a checkpoint).

    Parameters
    ----------
    mlp : the network; its parameter order fixes the flat layout.
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
        params = list(mlp.parameters())
        if any(p.dtype != torch.float32 for p in params):
            raise TypeError("the MLP's parameters must be float32")
        forward = [_activation_forward(m) for m in activations]
        self._act_forward = [f for _, _, f in forward]
        self._act_backward = [_activation_backward(name, value) for name, value, _ in forward]
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        n = sum(p.numel() for p in params)
        self.params = torch.zeros(n)
        self.grads = torch.zeros(n)
        self.exp_avg = torch.zeros(n)
        self.exp_avg_sq = torch.zeros(n)
        self.step_count = torch.zeros(())
        self._weights, self._biases, self._grad_weights, self._grad_biases = [], [], [], []
        offset = 0
        for layer in linears:
            for param, views, grad_views in (
                (layer.weight, self._weights, self._grad_weights),
                (layer.bias, self._biases, self._grad_biases),
            ):
                k = param.numel()
                views.append(self.params[offset : offset + k].view_as(param))
                grad_views.append(self.grads[offset : offset + k].view_as(param))
                offset += k
        self._widths = [layer.out_features for layer in linears]
        self._weights_t = [w.t() for w in self._weights]
        self._buffers: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._views: dict[int, tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]] = {}
        self.load_from(mlp)

    def load_from(self, mlp: nn.Sequential) -> None:
        """Copy the MLP's parameters into the trainer."""
        with torch.no_grad():
            torch.cat([p.detach().reshape(-1) for p in mlp.parameters()], out=self.params)

    def store_into(self, mlp: nn.Sequential) -> None:
        """Copy the trainer's parameters into the MLP."""
        offset = 0
        with torch.no_grad():
            for p in mlp.parameters():
                k = p.numel()
                p.copy_(self.params[offset : offset + k].view_as(p))
                offset += k

    def adam_state(self) -> dict[str, Any]:
        """Adam's step count and flat moments (copies), in ``mlp.parameters()`` order."""
        return {"step": int(self.step_count), "exp_avg": self.exp_avg.clone(), "exp_avg_sq": self.exp_avg_sq.clone()}

    def load_adam_state(self, packed: dict[str, Any]) -> None:
        """Inverse of :meth:`adam_state`."""
        for name in ("exp_avg", "exp_avg_sq"):
            value = torch.as_tensor(packed[name], dtype=torch.float32).reshape(-1)
            if value.numel() != self.params.numel():
                raise ValueError(f"Adam state {name} has {value.numel()} values, the MLP {self.params.numel()}")
            getattr(self, name).copy_(value)
        self.step_count.fill_(float(packed["step"]))

    def _views_for(self, batch: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer output and gradient buffers ``(batch, width)``, and the gradients transposed (cached per size)."""
        views = self._views.get(batch)
        if views is None:
            if self._buffers is None or len(self._buffers[0][0]) < batch:
                self._buffers = ([torch.empty(batch, w) for w in self._widths], [torch.empty(batch, w) for w in self._widths])
                self._views.clear()
            outs = [buffer[:batch] for buffer in self._buffers[0]]
            grads = [buffer[:batch] for buffer in self._buffers[1]]
            views = self._views[batch] = (outs, grads, [g.t() for g in grads])
        return views

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One Adam step on the batch ``x (B, n_in)``, ``y (B,)``; returns the batch's summed squared error (0-d)."""
        batch = len(x)
        outs, g, g_t = self._views_for(batch)
        last = len(self._weights) - 1
        with torch.no_grad(), flushed_denormals():
            inputs = x
            for i in range(last + 1):
                torch.addmm(self._biases[i], inputs, self._weights_t[i], out=outs[i])
                if i < last:
                    self._act_forward[i](outs[i])
                inputs = outs[i]
            error = g[last]
            torch.sub(outs[last], y.unsqueeze(1), out=error)
            squared_error = torch.dot(error.view(-1), error.view(-1))
            error.mul_(2.0 / batch)
            for i in range(last, -1, -1):
                torch.mm(g_t[i], outs[i - 1] if i > 0 else x, out=self._grad_weights[i])
                torch.sum(g[i], 0, out=self._grad_biases[i])
                if i > 0:
                    torch.mm(g[i], self._weights[i], out=g[i - 1])
                    self._act_backward[i - 1](g[i - 1], outs[i - 1], g[i - 1])
            self.step_count.add_(1.0)
            torch._fused_adam_(
                [self.params], [self.grads], [self.exp_avg], [self.exp_avg_sq], [], [self.step_count],
                amsgrad=False, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
                weight_decay=self.weight_decay, eps=self.eps, maximize=False,
            )  # fmt: skip
        return squared_error

    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, batch: int, generator: torch.Generator) -> float:
        """One pass over ``x (N, n_in)``, ``y (N,)`` in the order of ``randperm(N, generator)``; the mean squared error."""
        perm = torch.randperm(len(x), generator=generator)
        xs, ys = x[perm], y[perm]
        total = torch.zeros(())
        for start in range(0, len(x), batch):
            total += self.step(xs[start : start + batch], ys[start : start + batch])
        return total.item() / len(x)
