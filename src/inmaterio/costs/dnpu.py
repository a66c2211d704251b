r"""Energy of a DNPU evaluation: electrode power times evaluation time, plus the converters around it.

**What is measured and what is assumed.** A DNPU evaluation applies voltages
:math:`V_e` to the activation electrodes and reads the current :math:`I_{out}`
at the readout electrode, held at virtual ground (0 V) by a transimpedance
amplifier. The power the electrodes deliver is :math:`P = \sum_e V_e I_e`
with :math:`\sum_e I_e + I_{out} = 0` (charge conservation). The virtual
device and the surrogate give :math:`I_{out}` only, not the current of each
activation electrode, so :func:`dnpu_evaluation_cost` uses

.. math::

    P \approx |I_{out}| \max_e |V_e|,

the power of the current that reaches the readout, delivered at the largest
electrode voltage. It is an upper bound for the readout path; currents that
circulate between activation electrodes without reaching the readout are not
seen and not counted. Given every electrode's current (``electrode_currents_na``),
the exact :math:`\sum_e V_e I_e` is used instead.

**Time** (:class:`DnpuAssumption`): an evaluation lasts
``evaluation_time_s`` (default 10 ns, the study's projected bandwidth of
over 100 MHz; the device's own settling is not simulated). **Converters**:
one DAC conversion per *input* electrode per evaluation (the control
voltages are held, their DACs updated only when the controls change) and
one readout conversion (TIA + ADC) per evaluation; their energies are
assumptions of typical 8-bit converters.

**Operations** (the counting rule; the study's own rule for its "order of
100 TOPS/W" projection could not be checked here): an evaluation counts as
the operations a digital emulator of the device needs, the surrogate MLP's
``2 x MACs`` (:func:`surrogate_ops`), or a number the caller gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from inmaterio.config import StrictModel
from inmaterio.errors import ConfigError, VoltageError

__all__ = ["DEFAULT_DNPU", "DnpuAssumption", "DnpuCost", "dnpu_evaluation_cost", "surrogate_ops"]


class DnpuAssumption(StrictModel):
    """Time and converters of one DNPU evaluation (see the module docstring).

    evaluation_time_s : duration of one evaluation, s (> 0; 10 ns: 100 MHz).
    dac_energy_j : one DAC conversion driving an input electrode, J (>= 0).
    readout_energy_j : one readout conversion (TIA + ADC), J (>= 0).
    """

    evaluation_time_s: float = Field(10e-9, gt=0)
    dac_energy_j: float = Field(0.5e-12, ge=0)
    readout_energy_j: float = Field(2e-12, ge=0)


#: The default evaluation time and converter energies.
DEFAULT_DNPU = DnpuAssumption()


@dataclass(frozen=True)
class DnpuCost:
    """One evaluation of one DNPU, means over the batch.

    Attributes:
        device_power_w: electrode power, W.
        device_j: ``device_power_w * evaluation_time_s``, J.
        converters_j: DACs of the input electrodes + one readout, J.
        energy_j: ``device_j + converters_j``, J.
        ops: operations counted per evaluation.
        latency_s: the evaluation time, s.
    """

    device_power_w: float
    device_j: float
    converters_j: float
    energy_j: float
    ops: int
    latency_s: float

    @property
    def tops_per_w(self) -> float:
        """``ops / energy_j`` in TOPS/W (10^12 operations per joule)."""
        return self.ops / self.energy_j / 1e12

    @property
    def device_only_tops_per_w(self) -> float:
        """``ops / device_j``: the efficiency if the converters cost nothing, TOPS/W."""
        return self.ops / self.device_j / 1e12 if self.device_j > 0 else float("inf")


def surrogate_ops(model: torch.nn.Module) -> int:
    """Operations of one surrogate evaluation: ``2 * sum(in * out)`` over its linear layers (a multiply and an add each)."""
    macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    if macs == 0:
        raise ConfigError("the model has no torch.nn.Linear layers to count operations from")
    return 2 * macs


def dnpu_evaluation_cost(
    voltages_v: torch.Tensor,
    current_na: torch.Tensor,
    *,
    input_electrodes: int,
    ops: int,
    assumption: DnpuAssumption = DEFAULT_DNPU,
    electrode_currents_na: torch.Tensor | None = None,
) -> DnpuCost:
    """Energy of one evaluation (see the module docstring for what is measured and assumed).

    Args:
        voltages_v: ``(batch, electrodes)`` activation-electrode voltages, V.
        current_na: ``(batch,)`` readout current, nA.
        input_electrodes: electrodes taking data (a DAC conversion each per evaluation), 0 .. electrodes.
        ops: operations counted per evaluation (>= 1), e.g. :func:`surrogate_ops`.
        assumption: evaluation time and converter energies.
        electrode_currents_na: ``(batch, electrodes)`` current into the device at every activation electrode, nA;
            when given, the exact ``sum V I`` is used.
    """
    if voltages_v.dim() != 2:
        raise VoltageError(f"voltages_v must be (batch, electrodes), got shape {tuple(voltages_v.shape)}")
    b, e = voltages_v.shape
    if tuple(current_na.shape) != (b,):
        raise VoltageError(f"current_na must be (batch={b},), got shape {tuple(current_na.shape)}")
    if not 0 <= input_electrodes <= e:
        raise ConfigError(f"input_electrodes = {input_electrodes} outside [0, {e}]")
    if isinstance(ops, bool) or not isinstance(ops, int) or ops < 1:
        raise ConfigError(f"ops must be an int >= 1, got {ops!r}")
    v = voltages_v.to(torch.float64)
    if electrode_currents_na is None:
        power = current_na.to(torch.float64).abs() * 1e-9 * v.abs().amax(1)
    else:
        if tuple(electrode_currents_na.shape) != (b, e):
            raise VoltageError(f"electrode_currents_na must be ({b}, {e}), got shape {tuple(electrode_currents_na.shape)}")
        power = (v * electrode_currents_na.to(torch.float64) * 1e-9).sum(1)
    p = float(power.mean())
    device = p * assumption.evaluation_time_s
    converters = input_electrodes * assumption.dac_energy_j + assumption.readout_energy_j
    return DnpuCost(p, device, converters, device + converters, ops, assumption.evaluation_time_s)
