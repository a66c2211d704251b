r"""A small convolutional energy-based network with max-pooling (the article's MNIST ConvNet, 1-32-64-10).

Layers: the input image :math:`s_0 = x` ``(channels[0], H, W)``; convolutional state layers
:math:`s_n`, ``(channels[n], h_n, w_n)`` with :math:`h_n = \lfloor (h_{n-1} - k + 1)/p \rfloor` (``kernel_size``
:math:`k`, no padding, stride 1, then :math:`p \times p` max-pooling, ``pool`` :math:`p`); then the classes,
either the softmax readout (``cross_entropy``) or an output state layer (``squared_error``), fully connected to
the flattened last convolutional layer. The primitive function

.. math::

    \Phi(x, s, \theta) = \sum_{n} s_{n+1} \bullet \mathcal{P}\big(C_n(s_n) + b_n\big)
        \;[+\; s_{\mathrm{out}}^\top (W_{\mathrm{fc}}\,\mathrm{flat}(s_{\mathrm{last}}) + b_{\mathrm{fc}})]

(:math:`C_n` the convolution with ``weights[n]`` ``(c_{n+1}, c_n, k, k)``, :math:`\mathcal{P}` max-pooling,
:math:`\bullet` the sum of the elementwise product) puts pooling and unpooling in the dynamics:

.. math::

    \frac{\partial\Phi}{\partial s_n} = \mathcal{P}\big(C_{n-1}(s_{n-1}) + b_{n-1}\big)
        + C_n^\top\,\mathcal{P}^{-1}_{s_n}(s_{n+1}),

where :math:`\mathcal{P}^{-1}_{s_n}` puts each value of :math:`s_{n+1}` back at the position that won the
pooling of :math:`C_n(s_n)` (zeros elsewhere) and :math:`C_n^\top` is the transposed convolution. With
``vector_field=True`` the top-down term uses the feedback kernels ``feedback[n - 1]`` (their own pooling
winners) instead of ``weights[n]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from inmaterio.ebm.network import EnergyNetwork, Loss, States, uniform_init

__all__ = ["EnergyConvNet", "conv_state_shapes"]


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` (4-d) in the channels-last layout (itself when it is already)."""
    return t.contiguous(memory_format=torch.channels_last)


def conv_state_shapes(image: Sequence[int], channels: Sequence[int], kernel_size: int, pool: int) -> list[tuple[int, int, int]]:
    """``(channels[n], h_n, w_n)`` of every convolutional state layer of an ``image`` ``(c, H, W)``.

    Raises
    ------
    ConfigError
        A layer whose convolution output is smaller than the pooling window (the sizes are named).
    """
    from inmaterio.errors import ConfigError

    _, h, w = image
    shapes = []
    for n, c in enumerate(channels):
        if h - kernel_size + 1 < pool or w - kernel_size + 1 < pool:
            raise ConfigError(
                f"convolutional layer {n + 1}: a {h} x {w} input with kernel_size {kernel_size} gives "
                f"{h - kernel_size + 1} x {w - kernel_size + 1}, smaller than the {pool} x {pool} pooling; "
                "use fewer channels layers, a smaller kernel_size or pool"
            )
        h, w = (h - kernel_size + 1) // pool, (w - kernel_size + 1) // pool
        shapes.append((int(c), h, w))
    return shapes


class EnergyConvNet(EnergyNetwork):
    """Convolutional energy-based network (module docstring).

    Parameters
    ----------
    channels : output channels of each convolutional state layer (>= 1 layer).
    kernel_size : square kernels, pixels.
    pool : max-pooling window and stride, pixels.
    image : ``(channels, height, width)`` of the input.
    n_classes : classes.
    activation, loss, vector_field, seed : as :class:`~inmaterio.ebm.mlp.EnergyMLP`.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        *,
        kernel_size: int = 5,
        pool: int = 2,
        image: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        activation: str = "hard_sigmoid",
        loss: Loss = "cross_entropy",
        vector_field: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(activation_name=activation, loss=loss, n_classes=n_classes, vector_field=vector_field)
        self.image = tuple(int(v) for v in image)
        self.kernel_size, self.pool = int(kernel_size), int(pool)
        conv_shapes = conv_state_shapes(self.image, channels, self.kernel_size, self.pool)
        self.n_conv = len(conv_shapes)
        gen = torch.Generator().manual_seed(seed)
        c_in = self.image[0]
        for c_out, _, _ in conv_shapes:
            fan_in = c_in * self.kernel_size**2
            self.weights.append(nn.Parameter(uniform_init((c_out, c_in, self.kernel_size, self.kernel_size), fan_in, gen)))
            self.biases.append(nn.Parameter(uniform_init((c_out,), fan_in, gen)))
            c_in = c_out
        flat = conv_shapes[-1][0] * conv_shapes[-1][1] * conv_shapes[-1][2]
        self.weights.append(nn.Parameter(uniform_init((n_classes, flat), flat, gen)))
        self.biases.append(nn.Parameter(uniform_init((n_classes,), flat, gen)))
        if vector_field:
            for i in range(1, self.n_connections):
                w = self.weights[i]
                self.feedback.append(nn.Parameter(uniform_init(w.shape, w[0].numel(), gen)))
        self.state_shapes = tuple(conv_shapes) + (((n_classes,),) if loss == "squared_error" else ())

    def _pooled(self, below: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
        """``P(C_n(below) + b_n)``, the pooling winners, and the convolution's spatial size."""
        conv = F.conv2d(_channels_last(below), self.weights[n], self.biases[n])
        pooled, winners = F.max_pool2d(conv, self.pool, return_indices=True)
        return pooled, winners, conv.shape[-2:]

    def _top_down_conv(
        self, lower: torch.Tensor, upper: torch.Tensor, n: int, winners: torch.Tensor | None, size
    ) -> torch.Tensor:
        """``C_n^T P^{-1}(upper)`` to the layer ``lower`` (winners of the feedback kernels in a vector-field net)."""
        kernel = self.top_down(n)
        if self.vector_field:
            conv = F.conv2d(_channels_last(lower), kernel)
            _, winners = F.max_pool2d(conv, self.pool, return_indices=True)
            size = conv.shape[-2:]
        unpooled = F.max_unpool2d(upper, winners, self.pool, output_size=size)
        return F.conv_transpose2d(_channels_last(unpooled), kernel)

    def input_drive(self, x: torch.Tensor) -> torch.Tensor:
        """``P(C_0(x) + b_0)``, ``(batch, *state_shapes[0])``.

        Raises
        ------
        ValueError
            ``x`` not a batch of images of the network's ``image`` shape (the shapes are named).
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != self.image:
            expected = ", ".join(str(v) for v in self.image)
            raise ValueError(f"x must be a batch of images of shape (batch, {expected}), got shape {tuple(x.shape)}")
        return _channels_last(self._pooled(x, 0)[0])

    def field(self, drive: torch.Tensor, states: States) -> States:
        fields: States = [drive]
        for n in range(1, self.n_conv):
            pooled, winners, size = self._pooled(states[n - 1], n)
            fields[n - 1] = fields[n - 1] + self._top_down_conv(states[n - 1], states[n], n, winners, size)
            fields.append(pooled)
        if self.loss == "squared_error":
            last, out = states[self.n_conv - 1], states[-1]
            fields[-1] = fields[-1] + (out @ self.top_down(self.n_conv)).reshape(last.shape)
            fields.append(last.flatten(1) @ self.weights[-1].T + self.biases[-1])
        return fields

    def phi(self, x: torch.Tensor, states: States, drive: torch.Tensor | None = None) -> torch.Tensor:
        total = (states[0] * (self.input_drive(x) if drive is None else drive)).flatten(1).sum(1)
        below = states[0]
        for n in range(1, self.n_conv):
            total = total + (states[n] * self._pooled(below, n)[0]).flatten(1).sum(1)
            below = states[n]
        if self.loss == "squared_error":
            total = total + (states[-1] * (below.flatten(1) @ self.weights[-1].T + self.biases[-1])).sum(1)
        return total
