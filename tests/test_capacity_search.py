"""The max-margin capacity search against exact truths: a node whose output is linear in its inputs
separates exactly the linearly separable labellings, brute-force screening, hand-computed thresholds."""

import pytest
import torch

from inmaterio.devices.registry import AnalyticDeviceConfig
from inmaterio.errors import ConfigError
from inmaterio.nn import DNPU
from inmaterio.processors import Processor
from inmaterio.studies.capacity_search import constant_mask, gap_threshold, refine_margin, screen_controls
from inmaterio.studies.capacity_trial import CapacitySettings, CapacityTrial, DecisionNode, capacity_trial
from inmaterio.studies.common import DeviceChoice
from inmaterio.surrogate.info import DeviceInfo
from inmaterio.tasks.capacity import labellings
from inmaterio.tasks.config import CAPACITY_POINTS
from inmaterio.training.metrics import separation_na

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SQUARE = torch.tensor(CAPACITY_POINTS[:4])  # the corners of a square: (-0.7, -0.7), (-0.7, 0.5), (0.5, -0.7), (0.5, 0.5)
XOR_LABELLINGS = ([0, 1, 1, 0], [1, 0, 0, 1])  # the only two labellings of a square no line separates


class LinearNodeProcessor(Processor):
    """``y = 10 nA/V^2 * (c0 * x0 + c1 * x1)`` on electrodes (x0, x1, c0, c1), all in [-1.2, 0.6] V.

    The controls set the direction of a linear function of the inputs, so a
    node separates a labelling exactly when a line does.
    """

    def __init__(self) -> None:
        names = ["x0", "x1", "c0", "c1"]
        super().__init__(DeviceInfo(electrode_names=names, readout_name="out", voltage_ranges_v=[(-1.2, 0.6)] * 4))

    def forward(self, voltages: torch.Tensor) -> torch.Tensor:
        self.check_voltages(voltages)
        return 10.0 * (voltages[..., 2] * voltages[..., 0] + voltages[..., 3] * voltages[..., 1])


def _probe(processor: Processor, nodes: int = 1) -> DNPU:
    return DNPU(processor, nodes, (0, 1), (-1.2, 0.6))


def test_a_linear_node_separates_exactly_the_linearly_separable_labellings():
    """14 of the 16 labellings of a square's corners: all but the two XOR ones."""
    labels = labellings(4)
    screen = screen_controls(_probe(LinearNodeProcessor()), SQUARE, labels, 2000, 3, torch.Generator().manual_seed(0))
    separated = {tuple(int(v) for v in lab) for lab, m in zip(labels, screen.margin_na[:, 0]) if m > 0}
    assert len(separated) == 14
    assert separated.isdisjoint({tuple(x) for x in XOR_LABELLINGS})
    assert torch.isinf(screen.margin_na[constant_mask(labels)]).all()


def test_refining_cannot_separate_xor_and_never_lowers_a_margin():
    labels = labellings(4)
    varying = ~constant_mask(labels)
    screen = screen_controls(_probe(LinearNodeProcessor()), SQUARE, labels, 500, 1, torch.Generator().manual_seed(1))
    layer = _probe(LinearNodeProcessor(), len(labels))
    with torch.no_grad():
        layer.controls.copy_(screen.controls[:, 0])
    margin = refine_margin(layer, SQUARE, labels, screen.high_class[:, 0], steps=200, lr=0.02)
    assert (margin[varying] >= screen.margin_na[varying, 0] - 1e-5).all()
    assert torch.isinf(margin[~varying]).all()
    xor = [labels.tolist().index([float(v) for v in lab]) for lab in XOR_LABELLINGS]
    assert (margin[xor] < 0).all()
    # the controls left in the layer have the reported margin (where positive, the orientation is the best one)
    separable = varying & (margin > 0)
    with torch.no_grad():
        recomputed = separation_na(layer(SQUARE).T[separable], labels[separable])
    torch.testing.assert_close(recomputed, margin[separable], rtol=0, atol=1e-4)
    assert (layer.controls >= -1.2).all() and (layer.controls <= 0.6).all()


def test_refining_reaches_the_analytic_maximum_margin():
    """Labelling 0011 (x0 = 0.5 high): the best is c = (0.6, 0): 10 * 0.6 * (0.5 - (-0.7)) = 7.2 nA."""
    labels = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    layer = _probe(LinearNodeProcessor())
    with torch.no_grad():
        layer.controls.copy_(torch.tensor([[0.1, 0.05]]))
    margin = refine_margin(layer, SQUARE, labels, torch.tensor([1]), steps=800, lr=0.02, temperature_na=0.05)
    assert float(margin) == pytest.approx(7.2, abs=0.05)


def test_screening_keeps_the_best_draws_like_brute_force():
    """The kept margins are the top-k of all draws, recomputed one draw at a time."""
    processor = LinearNodeProcessor()
    labels = labellings(4)[[1, 6, 12]]
    screen = screen_controls(_probe(processor), SQUARE, labels, 300, 4, torch.Generator().manual_seed(2))
    draws = -1.2 + torch.rand(300, 2, generator=torch.Generator().manual_seed(2)) * 1.8
    brute = torch.stack(
        [separation_na(processor(torch.cat([SQUARE, c.expand(4, 2)], dim=1)).expand(3, 4), labels) for c in draws], dim=1
    )
    torch.testing.assert_close(screen.margin_na, brute.topk(4, dim=1).values)
    for label, controls, margin in zip(labels, screen.controls, screen.margin_na):
        again = separation_na(
            processor(torch.cat([SQUARE.unsqueeze(0).expand(4, -1, -1), controls.unsqueeze(1).expand(-1, 4, -1)], dim=-1)), label
        )
        torch.testing.assert_close(again, margin)


def test_gap_threshold_by_hand_and_the_decision_node_that_applies_it():
    outputs = torch.tensor([[1.0, 9.0, 5.0, 5.0], [2.0, 6.0, 5.0, 6.0], [6.0, 2.0, 5.0, 7.0], [9.0, 1.0, 5.0, 8.0]])  # (N, L)
    labels = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    threshold, sign = gap_threshold(outputs, labels, torch.tensor([1, 0, 1, 1]))
    # col 0: class 1 at 6, 9 above class 0 at 1, 2 -> (2 + 6) / 2; col 1: class 0 (9, 6) above 2, 1 -> 4, sign -1;
    # col 2: all ones -> min 5 minus span 0 + 1 nA; col 3: all zeros -> max 8 plus span 3 + 1 nA
    assert threshold.tolist() == [4.0, 4.0, 4.0, 12.0]
    assert sign.tolist() == [1.0, -1.0, 1.0, 1.0]
    node = DecisionNode.from_threshold(threshold, sign)
    with torch.no_grad():
        logits = node(outputs)
    torch.testing.assert_close(logits, sign * (outputs - threshold) / torch.sqrt(torch.tensor(1.0)), rtol=1e-5, atol=1e-5)
    assert ((logits > 0).float() == labels.T).all()


def test_bad_arguments_name_the_value():
    probe = _probe(LinearNodeProcessor())
    with pytest.raises(ConfigError, match=r"keep must be in \[1, n_samples = 10\]; got 11"):
        screen_controls(probe, SQUARE, labellings(4), 10, 11, torch.Generator())
    with pytest.raises(ConfigError, match="one-node DNPU probe; got 2 nodes"):
        screen_controls(_probe(LinearNodeProcessor(), 2), SQUARE, labellings(4), 10, 1, torch.Generator())
    with pytest.raises(ConfigError, match="temperature_na must be > 0 nA; got 0"):
        refine_margin(probe, SQUARE, labellings(4)[[3]], torch.tensor([1]), temperature_na=0)


def test_searched_dnpu_separates_every_labelling_of_four_points_on_the_surrogate():
    """And every classifier it counts is checked again here: its decision node classifies all points."""
    settings = CapacitySettings(screen_samples=20_000, refine_steps=50)
    r = capacity_trial(CapacityTrial(model="dnpu_search", n_points=4, seed=0, settings=settings))
    assert r["found"] == 16 == sum(r["found_mask"]) and r["fraction"] == 1.0
    margins = [m for m in r["surrogate_margin_na"] if m is not None]
    assert len(margins) == 14 and min(margins) > 0  # the two constant labellings have no margin
    assert r["found_margin_ge_rmse"] == 2 + sum(m >= r["margin_threshold_na"] for m in margins)


def test_searched_dnpu_on_a_device_counts_what_the_device_separates():
    r = capacity_trial(CapacityTrial(
        model="dnpu_search_device", n_points=4, seed=0, settings=CapacitySettings(attempts=2, screen_samples=5000, refine_steps=20),
        device=DeviceChoice(spec=AnalyticDeviceConfig()),
    ))  # fmt: skip
    assert r["attempts"][0]["tried"] == 16  # constant labellings are measured on the device too
    assert sum(a["found"] for a in r["attempts"]) == r["found"] == sum(r["found_mask"])
    assert r["fraction"] == r["found"] / 16
