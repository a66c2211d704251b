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

:func:`ring_trials` runs one group of trials (a picklable top-level
function for :func:`inmaterio.parallel.run_trials`).
:func:`calibrate_on_device` prepares a trained network for a device from
device measurements of the *training* set only: it re-estimates the
batch-norm statistics (the hidden nodes of the device differ from the
surrogate's by an offset and a gain that the running statistics of training
do not know) and re-fits the logistic read-out on the measured output.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from inmaterio.errors import ConfigError
from inmaterio.nn import DNPU, dnpu_layers, processor_swapped
from inmaterio.nn.layers import single_dnpu, two_two_one
from inmaterio.processors import Processor
from inmaterio.training.losses import fisher
from inmaterio.training.metrics import LogisticThreshold, fit_logistic_threshold

__all__ = ["ARCHITECTURES", "BatchedRingNetworks", "calibrate_on_device", "ring_trials"]

ARCHITECTURES = ("single", "2-2-1")


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


def ring_trials(spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``spec["count"]`` trials (seeds from ``spec["first_seed"]``) and return their numbers.

    ``spec``: architecture, first_seed, count, x_train, y_train, x_test, y_test
    (lists or tensors), epochs (400), learning_rate (0.0065), noise_variance_factor
    (1.0: the surrogate's test MSE; 0: no noise), input_electrodes, surrogate_dir
    (None: bundled), bfloat16 (train with bfloat16 matrix products, 3-4x faster
    on CPUs with AVX512-BF16; the reported numbers are always float32), keep (1:
    how many of the group's best trials to return with their states),
    noisy_draws (0) and noisy_std_factor (1.0): when ``noisy_draws > 0``, every
    trial's training accuracy is also measured with output noise on every node
    (standard deviation ``noisy_std_factor`` times the surrogate's test RMSE),
    averaged over ``noisy_draws`` draws, with the threshold fitted on the
    noise-free output: a cheap forecast of the accuracy on a noisy device.

    Returns per trial: ``fisher`` (training set, noise-free), ``train_accuracy``,
    ``test_accuracy``, ``noisy_train_accuracy`` (only with ``noisy_draws > 0``);
    ``best``: the index (within the group) and state of the trial with the
    highest training accuracy; ``top``: the ``keep`` trials with the highest
    *score* (``noisy_train_accuracy`` with ``noisy_draws > 0``, else
    ``train_accuracy``), best first (ties: lower index first), each
    ``{"index", "score", "train_accuracy", "state"}``.
    """
    from inmaterio.processors import SurrogateProcessor
    from inmaterio.surrogate import load_default_surrogate, load_surrogate

    start = time.perf_counter()
    model_dir = spec.get("surrogate_dir")
    processor = SurrogateProcessor(load_default_surrogate() if model_dir is None else load_surrogate(model_dir))
    factor = float(spec.get("noise_variance_factor", 1.0))
    processor.set_noise((processor.info.noise_na or 0.0) * factor**0.5)
    x_train, y_train = torch.as_tensor(spec["x_train"], dtype=torch.float32), torch.as_tensor(spec["y_train"], dtype=torch.float32)
    x_test, y_test = torch.as_tensor(spec["x_test"], dtype=torch.float32), torch.as_tensor(spec["y_test"], dtype=torch.float32)
    torch.manual_seed(int(spec["first_seed"]))
    nets = BatchedRingNetworks(
        processor, spec["architecture"], int(spec["count"]), tuple(spec.get("input_electrodes", (3, 4))),
        seed=int(spec["first_seed"]) * 7,
    )  # fmt: skip
    optimiser = torch.optim.Adam(nets.parameters(), lr=float(spec.get("learning_rate", 0.0065)))
    layers = list(nets.layers)
    processor.bfloat16 = bool(spec.get("bfloat16", False))  # training only; evaluation below in float32
    for _ in range(int(spec.get("epochs", 400))):
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
    draws = int(spec.get("noisy_draws", 0))
    score = acc_train
    extra = {}
    if draws > 0:
        processor.set_noise((processor.info.noise_na or 0.0) * float(spec.get("noisy_std_factor", 1.0)))
        torch.manual_seed(int(spec["first_seed"]) + 1)
        with torch.no_grad():
            score = torch.stack([(threshold.predict(nets(x_train).T) == y_train).float().mean(dim=1) for _ in range(draws)]).mean(0)
        extra["noisy_train_accuracy"] = score.tolist()
    keep = max(1, min(int(spec.get("keep", 1)), int(spec["count"])))
    # stable descending order: equal scores keep the lower index first (argmax's choice for the best)
    order = sorted(range(len(score)), key=lambda t: -float(score[t]))[:keep]
    top = [
        {"index": t, "score": float(score[t]), "train_accuracy": float(acc_train[t]),
         "state": {k: v.tolist() for k, v in nets.trial(t).state_dict().items()}}
        for t in order
    ]  # fmt: skip
    return {
        "architecture": spec["architecture"],
        "first_seed": int(spec["first_seed"]),
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
