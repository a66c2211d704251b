"""The ring study of Ruiz Euler et al. (2021): many independent trainings of one DNPU or the 2-2-1 network.

A *trial* is one training from its own initialisation on the same data:
stage one minimises the negative Fisher criterion of the output current,
full batch, Adam, with Gaussian noise on every node's output (variance = the
surrogate's test MSE by default); stage two fits a logistic neuron on the
standardised output of the training set, which gives the train and test
accuracy. Trials are vectorised: :class:`BatchedRingNetworks` holds ``T``
independent networks as the nodes of one set of DNPU layers (and channels of
one set of batch norms), so one processor call per layer evaluates all of
them and the summed losses give each trial exactly its own gradient.
:meth:`BatchedRingNetworks.trial` extracts trial ``t`` as an ordinary
network (:func:`~inmaterio.nn.layers.single_dnpu` / :func:`~inmaterio.nn.layers.two_two_one`)
for validation on a device.

:func:`ring_trials` runs one group of trials described by a frozen
:class:`RingGroup` (unknown keys are errors; a picklable top-level function
for :func:`inmaterio.parallel.run_trials`). Its data come from
:class:`RingData` (training set seed ``s``, test set ``s + 1``, validation
set ``s + 2``), its randomness from the group's seeds only, so a group gives
the same numbers in any process and in any order.
:func:`calibrate_on_device` prepares a trained network for a device from
device measurements of the *training* set only: it re-estimates the
batch-norm statistics (the hidden nodes of the device differ from the
surrogate's by an offset and a gain that the running statistics of training
do not know) and re-fits the logistic read-out on the measured output.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Union, get_args

import torch
from pydantic import Field
from torch import nn

from inmaterio.config import StrictModel
from inmaterio.denormals import flushed_denormals
from inmaterio.errors import ConfigError
from inmaterio.nn import DNPU, dnpu_layers, processor_swapped
from inmaterio.nn.layers import single_dnpu, two_two_one
from inmaterio.processors import Processor
from inmaterio.studies.common import SurrogateChoice, surrogate_processor
from inmaterio.training.losses import fisher
from inmaterio.training.metrics import LogisticThreshold, fit_logistic_threshold

__all__ = [
    "ARCHITECTURES", "Architecture", "BatchedRingNetworks", "RingData", "RingGroup", "RingTraining", "calibrate_on_device",
    "ring_trials",
]  # fmt: skip

Architecture = Literal["single", "2-2-1"]
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
Electrode = Union[int, str]


class RingData(StrictModel):
    """The ring data of a study (:func:`~inmaterio.data.rings.make_rings`): points per class and the gap.

    gap : gap between the classes in data units (the disc has radius 1; 0 <= gap < 1.4).
    n_train, n_val, n_test : points per class of the training, validation and test sets (>= 2).
    """

    gap: float = Field(0.1, ge=0, lt=1.4)
    n_train: int = Field(200, ge=2)
    n_val: int = Field(200, ge=2)
    n_test: int = Field(500, ge=2)

    def split(self, name: Literal["train", "val", "test"], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (2 n, 2)``, ``y (2 n,)`` of one set; the sets of a study seed ``s``: train ``s``, test ``s + 1``, val ``s + 2``."""
        from inmaterio.data.rings import make_rings

        n, offset = {"train": (self.n_train, 0), "test": (self.n_test, 1), "val": (self.n_val, 2)}[name]
        return make_rings(n, gap=self.gap, seed=seed + offset)


class RingTraining(StrictModel):
    """Stage one of every trial: the negative Fisher criterion, full batch, Adam, output noise on every node.

    epochs : Adam steps (>= 1).
    learning_rate : Adam's learning rate (> 0).
    noise_variance_factor : variance of the Gaussian noise on every node's output, in units of the
        surrogate's test MSE (>= 0; 0: no noise).
    bfloat16 : train with bfloat16 matrix products (3-4x faster on CPUs with AVX512-BF16); every
        reported number is computed in float32.
    """

    epochs: int = Field(400, ge=1)
    learning_rate: float = Field(0.0065, gt=0)
    noise_variance_factor: float = Field(1.0, ge=0)
    bfloat16: bool = True


class RingGroup(StrictModel):
    """``count`` trials of one architecture, seeds from ``first_seed``, trained as one vectorised model.

    data_seed : seed of the study's data sets (see :meth:`RingData.split`).
    keep : how many of the group's best-scored trials to return with their states (>= 1).
    noisy_draws : draws of the noisy training accuracy (0: score = noise-free training accuracy).
    noisy_std_factor : std of that noise, x the surrogate's test RMSE (>= 0).
    """

    architecture: Architecture
    first_seed: int
    count: int = Field(ge=1)
    input_electrodes: tuple[Electrode, Electrode] = (3, 4)
    data: RingData = RingData()
    data_seed: int = 0
    training: RingTraining = RingTraining()
    keep: int = Field(1, ge=1)
    noisy_draws: int = Field(0, ge=0)
    noisy_std_factor: float = Field(1.0, ge=0)
    surrogate: SurrogateChoice = SurrogateChoice()

    @property
    def key(self) -> str:
        """``"<architecture>/<first_seed>+<count>"``: the group's name in a study."""
        return f"{self.architecture}/{self.first_seed}+{self.count}"


class BatchedRingNetworks(nn.Module):
    """``trials`` independent ring classifiers: ``x (batch, 2)`` -> ``(batch, trials)`` nA.

    ``single``: one DNPU node per trial. ``2-2-1``: per trial, two nodes on
    the data, batch norm, two nodes each taking both normalised outputs, batch
    norm, one node taking both (the network of :func:`~inmaterio.nn.layers.two_two_one`).
    Node ``2 t + j`` of a two-node layer belongs to trial ``t``.
    """

    def __init__(
        self,
        processor: Processor,
        architecture: str,
        trials: int,
        input_electrodes=(3, 4),
        data_range=(-1.0, 1.0),
        hidden_data_range=(-2.0, 2.0),
        seed: int = 0,
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown ring architecture '{architecture}'; choose one of {ARCHITECTURES}")
        self.architecture, self.trials = architecture, trials
        self.input_electrodes, self.data_range, self.hidden_data_range = input_electrodes, data_range, hidden_data_range
        if architecture == "single":
            self.layers = nn.ModuleList([DNPU(processor, trials, input_electrodes, data_range, seed=seed)])
            self.norms = nn.ModuleList()
        else:
            self.layers = nn.ModuleList([
                DNPU(processor, 2 * trials, input_electrodes, data_range, seed=seed),
                DNPU(processor, 2 * trials, input_electrodes, hidden_data_range, seed=seed + 1),
                DNPU(processor, trials, input_electrodes, hidden_data_range, seed=seed + 2),
            ])  # fmt: skip
            self.norms = nn.ModuleList([nn.BatchNorm1d(2 * trials), nn.BatchNorm1d(2 * trials)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.architecture == "single":
            return self.layers[0](x)
        b, t = x.shape[0], self.trials
        h = self.norms[0](self.layers[0](x))  # (batch, 2T)
        h = h.reshape(b, t, 1, 2).expand(b, t, 2, 2).reshape(b, 2 * t, 2)  # both nodes of trial t get its pair
        h = self.norms[1](self.layers[1](h))  # (batch, 2T): consecutive pairs per trial
        return self.layers[2](h)  # node t takes inputs 2t, 2t+1

    def trial(self, t: int) -> nn.Sequential:
        """Trial ``t`` as a standalone network on the same processor (output ``(batch,)`` nA)."""
        processor = self.layers[0].processor
        if self.architecture == "single":
            net = single_dnpu(processor, input_electrodes=self.input_electrodes, data_range=self.data_range)
            with torch.no_grad():
                net[0].controls.copy_(self.layers[0].controls[t : t + 1])
            return net
        net = two_two_one(
            processor, input_electrodes=self.input_electrodes, data_range=self.data_range,
            hidden_data_range=self.hidden_data_range,
        )  # fmt: skip
        pair = slice(2 * t, 2 * t + 2)
        with torch.no_grad():
            net[0].controls.copy_(self.layers[0].controls[pair])
            net[2].controls.copy_(self.layers[1].controls[pair])
            net[4].controls.copy_(self.layers[2].controls[t : t + 1])
            for mine, theirs in ((self.norms[0], net[1]), (self.norms[1], net[3])):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(theirs, name).copy_(getattr(mine, name)[pair])
                theirs.num_batches_tracked.copy_(mine.num_batches_tracked)
        return net


def ring_trials(group: RingGroup) -> dict[str, Any]:
    """Train the ``group.count`` trials of ``group`` (seeds from ``group.first_seed``) and return their numbers.

    When ``noisy_draws > 0``, every trial's training accuracy is also
    measured with output noise on every node (standard deviation
    ``noisy_std_factor`` times the surrogate's test RMSE), averaged over
    ``noisy_draws`` draws, with the threshold fitted on the noise-free output:
    a cheap forecast of the accuracy on a noisy device. The caller's torch
    random state is left as it was.

    Returns per trial: ``fisher`` (training set, noise-free), ``train_accuracy``,
    ``test_accuracy``, ``noisy_train_accuracy`` (only with ``noisy_draws > 0``);
    ``best``: the index (within the group) and state of the trial with the
    highest training accuracy; ``top``: the ``keep`` trials with the highest
    *score* (``noisy_train_accuracy`` with ``noisy_draws > 0``, else
    ``train_accuracy``), best first (ties: lower index first), each
    ``{"index", "score", "train_accuracy", "state"}``; ``seconds``.

    Raises
    ------
    ConfigError
        ``group`` is not a :class:`RingGroup`, or the surrogate cannot be loaded.
    """
    if not isinstance(group, RingGroup):
        raise ConfigError(f"ring_trials takes a RingGroup, got {type(group).__name__}")
    start = time.perf_counter()
    processor = surrogate_processor(group.surrogate)
    training = group.training
    processor.set_noise((processor.info.noise_na or 0.0) * training.noise_variance_factor**0.5)
    x_train, y_train = group.data.split("train", group.data_seed)
    x_test, y_test = group.data.split("test", group.data_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(group.first_seed)
        nets = BatchedRingNetworks(processor, group.architecture, group.count, group.input_electrodes, seed=group.first_seed * 7)
        optimiser = torch.optim.Adam(nets.parameters(), lr=training.learning_rate)
        layers = list(nets.layers)
        processor.bfloat16 = training.bfloat16  # training only; evaluation below in float32
        with flushed_denormals():
            for _ in range(training.epochs):
                optimiser.zero_grad(set_to_none=True)
                loss = fisher(nets(x_train).T, y_train).sum() + sum(layer.regularizer() for layer in layers)
                loss.backward()
                optimiser.step()
                for layer in layers:
                    layer.constrain()
        processor.bfloat16 = False
        nets.eval()
        with torch.no_grad(), processor.noise_off():
            out_train, out_test = nets(x_train).T, nets(x_test).T  # (trials, batch)
        threshold = fit_logistic_threshold(out_train, y_train)
        acc_train = (threshold.predict(out_train) == y_train).float().mean(dim=1)
        acc_test = (threshold.predict(out_test) == y_test).float().mean(dim=1)
        best = int(acc_train.argmax())
        score = acc_train
        extra = {}
        if group.noisy_draws > 0:
            processor.set_noise((processor.info.noise_na or 0.0) * group.noisy_std_factor)
            torch.manual_seed(group.first_seed + 1)
            with torch.no_grad():
                draws = [(threshold.predict(nets(x_train).T) == y_train).float().mean(dim=1) for _ in range(group.noisy_draws)]
            score = torch.stack(draws).mean(0)
            extra["noisy_train_accuracy"] = score.tolist()
    keep = min(group.keep, group.count)
    # stable descending order: equal scores keep the lower index first (argmax's choice for the best)
    order = sorted(range(len(score)), key=lambda t: -float(score[t]))[:keep]
    top = [
        {"index": t, "score": float(score[t]), "train_accuracy": float(acc_train[t]),
         "state": {k: v.tolist() for k, v in nets.trial(t).state_dict().items()}}
        for t in order
    ]  # fmt: skip
    return {
        "architecture": group.architecture,
        "first_seed": group.first_seed,
        "fisher": (-fisher(out_train, y_train)).tolist(),
        "train_accuracy": acc_train.tolist(),
        "test_accuracy": acc_test.tolist(),
        "best": {"index": best, "state": {k: v.tolist() for k, v in nets.trial(best).state_dict().items()}},
        "top": top,
        **extra,
        "seconds": time.perf_counter() - start,
    }


def calibrate_on_device(
    net: nn.Module,
    device: Processor,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    batch_norm: bool = True,
    multiplex: bool = True,
) -> tuple[LogisticThreshold, torch.Tensor]:
    """Measure the training set on ``device``; re-estimate batch norm and re-fit the read-out on it.

    One pass of ``x_train (batch, 2)`` through ``net`` on ``device`` (node
    after node when ``multiplex``: one physical device). With ``batch_norm``,
    every :class:`~torch.nn.BatchNorm1d` of ``net`` takes the mean and the
    population variance of its input *as measured in this pass* as its running
    statistics (layer after layer, so each layer sees the already re-normalised
    outputs of the one before); the affine weights stay as trained. In eval
    mode the network then maps the training set to exactly the currents
    returned. The logistic threshold is fitted on these currents and
    ``y_train (batch,)``. ``net`` is modified in place (batch-norm statistics)
    and left in eval mode on its own processors. Uses no test data.

    Returns
    -------
    threshold : the :class:`~inmaterio.training.metrics.LogisticThreshold` fitted on the device output.
    output_na : ``(batch,)`` the device's output currents on the training set.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm1d)] if batch_norm else []
    layers = dnpu_layers(net)
    before = [layer.multiplex for layer in layers]
    momenta = [m.momentum for m in norms]
    n = len(x_train)
    if norms and n < 2:
        raise ConfigError(f"batch-norm calibration needs at least 2 training points, got {n}")
    net.eval()
    try:
        with torch.no_grad(), processor_swapped(net, device):
            for layer in layers:
                layer.multiplex = multiplex or layer.multiplex
            for m in norms:  # one batch, cumulative average: the running statistics become this batch's
                m.reset_running_stats()
                m.momentum = None
                m.train()
            output = net(x_train)
            for m in norms:  # train mode normalised with the population variance; keep that one for eval
                m.running_var.mul_((n - 1) / n)
    finally:
        for layer, m in zip(layers, before):
            layer.multiplex = m
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.eval()
    return fit_logistic_threshold(output, torch.as_tensor(y_train, dtype=output.dtype)), output
