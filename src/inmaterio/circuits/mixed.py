"""Mixed-signal models: a digital torch front end drives the input voltages of an analog circuit.

The front end (any ``torch.nn.Module``, e.g. a small CNN embedding an image
in a few dozen features) maps a batch of data to features ``z``; the input
voltages are ``v = voltage_v * tanh(z)`` (inside the analog input's range).
Training runs EP on the analog block, which also estimates ``dL/dv`` for
every input voltage from the change of the input sources' currents between
the phases; that estimate is back-propagated through the front end, so both
parts learn together from one loss (EBANA's mixed-signal experiment).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from inmaterio.circuits.ep import ep_gradients, readout
from inmaterio.circuits.fit import EPTrainConfig
from inmaterio.circuits.graph import Model
from inmaterio.circuits.netlist import DTYPE
from inmaterio.errors import ConfigError
from inmaterio.progress import progress_bar

__all__ = ["MixedSignalModel", "fit_mixed"]


class MixedSignalModel(nn.Module):
    """``front`` (digital) followed by ``analog`` (a one-input circuit :class:`Model`).

    Args:
        front: maps ``(batch, ...)`` data to ``(batch, n)`` features, ``n`` the analog input's feature count.
        analog: the circuit model.
        voltage_v: the input voltages are ``voltage_v * tanh(features)``.
    """

    def __init__(self, front: nn.Module, analog: Model, voltage_v: float = 1.0) -> None:
        super().__init__()
        if len(analog.input_layers) != 1:
            raise ConfigError(f"a mixed-signal model needs an analog model with one input, got {len(analog.input_layers)}")
        lo, hi = analog.input_layers[0].voltage_range_v
        if not (0 < voltage_v <= min(-lo, hi)):
            raise ConfigError(f"voltage_v {voltage_v} V must be > 0 and inside the analog input's range [{lo}, {hi}] V")
        self.front = front
        self.analog = analog
        self.voltage_v = float(voltage_v)

    def input_voltages(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n)`` input voltages of the analog block (differentiable in the front end's weights)."""
        z = self.front(x)
        n = self.analog.input_layers[0].n_features
        if z.dim() != 2 or z.shape[1] != n:
            raise ConfigError(f"the front end must output (batch, {n}) features for the analog input, got {tuple(z.shape)}")
        return self.voltage_v * torch.tanh(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_outputs)`` output voltages of the analog block (no gradient)."""
        with torch.no_grad():
            v = self.input_voltages(x)
        return self.analog.predict(v.to(DTYPE))


def fit_mixed(
    model: MixedSignalModel,
    x: torch.Tensor,
    y: torch.Tensor,
    config: EPTrainConfig,
    *,
    front_optimizer: torch.optim.Optimizer | None = None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train the front end (back-propagation of the EP input gradient) and the circuit (EP) together.

    Args:
        model: the :class:`MixedSignalModel`.
        x: ``(n, ...)`` data for the front end; ``y``: ``(n,)`` class labels.
        config: EP settings (batch size, beta, variant, circuit optimiser, loss, readout).
        front_optimizer: optimiser of ``model.front`` (default Adam, lr 1e-3).
        validation: ``(x_val, y_val)`` evaluated after every epoch (accuracy).

    Returns:
        the history, one dict per epoch (loss, accuracy, seconds, val_accuracy).
    """
    y = torch.as_tensor(y)
    n = len(x)
    if len(y) != n:
        raise ConfigError(f"x has {n} samples but y has {len(y)}")
    front_opt = front_optimizer or torch.optim.Adam(model.front.parameters(), lr=1e-3)
    analog_opt = config.make_optimizer(model.analog.parameters())
    loss_fn = config.loss_fn()
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    with progress_bar(total=config.epochs * n, description="mixed-signal training", unit="samples", enabled=progress) as bar:
        for epoch in range(config.epochs):
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=generator)
            total, correct = 0.0, 0
            for s in range(0, n, config.batch_size):
                idx = order[s : s + config.batch_size]
                v = model.input_voltages(x[idx])
                analog_opt.zero_grad()
                result = ep_gradients(
                    model.analog,
                    v.detach().to(DTYPE),
                    y[idx],
                    loss_fn,
                    beta=config.beta,
                    variant=config.variant,
                    generator=generator,
                    input_gradients=True,
                )
                front_opt.zero_grad()
                v.backward(result.input_gradients[0].to(v.dtype) / len(idx))  # d(mean loss)/dv
                front_opt.step()
                analog_opt.step()
                model.analog.constrain()
                total += result.loss.sum().item()
                correct += (readout(result.outputs_v, config.readout).argmax(1) == y[idx]).sum().item()
                bar.advance(len(idx))
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": total / n,
                "accuracy": correct / n,
                "seconds": time.perf_counter() - t0,
            }
            if validation is not None:
                out = model(validation[0])
                record["val_accuracy"] = (
                    (readout(out, config.readout).argmax(1) == torch.as_tensor(validation[1])).double().mean().item()
                )
            history.append(record)
    return history
