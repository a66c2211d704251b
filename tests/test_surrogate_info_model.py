"""DeviceInfo validation and the SurrogateModel maths, checked against hand computations."""

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

import inmaterio
from inmaterio.devices import AnalyticDevice, Electrode
from inmaterio.errors import VoltageError
from inmaterio.surrogate import DeviceInfo, SurrogateModel


def make_info(**changes):
    fields = {
        "electrode_names": ["a", "b", "c"],
        "readout_name": "out",
        "voltage_ranges_v": [(-1.0, 0.5), (-0.5, 0.5), (0.0, 2.0)],
    }
    return DeviceInfo(**{**fields, **changes})


# --- DeviceInfo ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"voltage_ranges_v": [(-1.0, 0.5), (-0.5, 0.5)]}, None, "voltage_ranges_v has 2 entries but electrode_names has 3"),
        ({"voltage_ranges_v": [(-1.0, 0.5), (0.5, 0.5), (0.0, 2.0)]}, "voltage_ranges_v", "electrode 'b' range [0.5, 0.5] V"),
        ({"voltage_ranges_v": [(-1.0, 0.5), (0.6, -0.5), (0.0, 2.0)]}, "voltage_ranges_v", "low < high"),
        # non-finite numbers are refused by the config base, at the offending element (electrode 1, high)
        ({"voltage_ranges_v": [(-1.0, 0.5), (-0.5, float("inf")), (0.0, 2.0)]}, ("voltage_ranges_v", 1, 1), "finite"),
        ({"electrode_names": ["a", "a", "c"]}, "electrode_names", "repeated: ['a']"),
        ({"readout_name": "b"}, None, "readout_name 'b' is also listed"),
        ({"amplification": 0.0}, "amplification", "non-zero"),
        ({"output_clipping_na": (10.0, -10.0)}, "output_clipping_na", "[10.0, -10.0] nA"),
        ({"noise_na": -1.0}, "noise_na", ">= 0"),
        ({"provenance": {"when": object()}}, "provenance", "provenance['when'] is not JSON-serialisable"),
        ({"voltage_range": [(0.0, 1.0)] * 3}, "voltage_range", "Extra inputs are not permitted"),
    ],
)
def test_info_validation_names_the_field(changes, field, message):
    with pytest.raises(ValidationError) as info:
        make_info(**changes)
    errors = info.value.errors()
    assert len(errors) == 1
    if field is not None:
        assert errors[0]["loc"] == (field if isinstance(field, tuple) else (field,))
    assert message in errors[0]["msg"]


def test_info_is_frozen_and_with_updates_revalidates():
    info = make_info()
    with pytest.raises(ValidationError):
        info.noise_na = 1.0
    updated = info.with_updates(noise_na=2.5, output_clipping_na=(-100.0, 100.0))
    assert (updated.noise_na, updated.output_clipping_na) == (2.5, (-100.0, 100.0))
    assert info.noise_na is None
    with pytest.raises(ValidationError, match="noise_na"):
        info.with_updates(noise_na=-1.0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        info.with_updates(colour="red")


def test_info_json_round_trip():
    info = make_info(output_clipping_na=(-5.0, 5.0), noise_na=0.1, provenance={"dataset": "x"})
    text = json.dumps(info.model_dump(mode="json"))
    assert DeviceInfo.model_validate(json.loads(text)) == info


def test_from_device():
    device = AnalyticDevice(n_activation=4, low_v=-0.7, high_v=0.3, seed=2)
    info = DeviceInfo.from_device(device, amplification=2.0, provenance={"dataset": "d1"})
    assert info.electrode_names == ["e0", "e1", "e2", "e3"]
    assert info.readout_name == "e4"
    assert info.n_activation == 4
    np.testing.assert_array_equal(info.ranges_array(), [[-0.7, 0.3]] * 4)
    assert info.electrodes == device.electrodes
    assert info.amplification == 2.0
    assert info.provenance["device"] == device.describe()
    assert info.provenance["package_version"] == inmaterio.__version__
    assert info.provenance["dataset"] == "d1"
    assert "created" in info.provenance


def test_info_check_voltages_matches_device_messages():
    info = make_info()
    assert info.electrodes[1] == Electrode("b", -0.5, 0.5)
    with pytest.raises(VoltageError, match=r"electrode 'c' voltage 2.5 V in sample 1 outside \[0.0, 2.0\] V"):
        info.check_voltages([[0.0, 0.0, 1.0], [0.0, 0.0, 2.5]])
    np.testing.assert_array_equal(info.check_voltages([-1.0, 0.5, 2.0]), [[-1.0, 0.5, 2.0]])


# --- SurrogateModel -----------------------------------------------------------------------------


def test_state_dict_keys_and_architecture():
    model = SurrogateModel(make_info(), hidden_sizes=(4, 5), activation="tanh")
    assert list(model.state_dict()) == [
        "input_offset", "input_scale", "output_offset", "output_scale",
        "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
    ]  # fmt: skip
    assert model.mlp[0].weight.shape == (4, 3)
    assert model.mlp[4].weight.shape == (1, 5)
    assert isinstance(model.mlp[1], nn.Tanh)
    assert model.architecture() == {"hidden_sizes": [4, 5], "activation": "tanh", "n_inputs": 3}
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"activation": "sigmoid"}, "unknown activation 'sigmoid'; allowed: ['elu', 'leaky_relu', 'relu', 'tanh']"),
        ({"hidden_sizes": (4, 0)}, "positive integers, got [4, 0]"),
        ({"hidden_sizes": ()}, "non-empty"),
        ({"hidden_sizes": (4.5,)}, "must be integers"),
    ],
)
def test_bad_architecture(kwargs, message):
    with pytest.raises(ValueError) as info:
        SurrogateModel(make_info(), **kwargs)
    assert message in str(info.value)


def test_default_input_normalization_maps_range_onto_unit_interval():
    model = SurrogateModel(make_info(), hidden_sizes=(3,))
    low, high = torch.tensor([-1.0, -0.5, 0.0]), torch.tensor([0.5, 0.5, 2.0])
    torch.testing.assert_close((low - model.input_offset) * model.input_scale, -torch.ones(3))
    torch.testing.assert_close((high - model.input_offset) * model.input_scale, torch.ones(3))
    assert model.output_offset.item() == 0.0 and model.output_scale.item() == 1.0


def test_forward_equals_hand_computation():
    torch.manual_seed(0)
    info = make_info()
    model = SurrogateModel(info, hidden_sizes=(6, 5), activation="elu")
    model.set_output_normalization(mean_na=3.0, std_na=20.0)
    reference = nn.Sequential(nn.Linear(3, 6), nn.ELU(), nn.Linear(6, 5), nn.ELU(), nn.Linear(5, 1))
    reference.load_state_dict({k.removeprefix("mlp."): v for k, v in model.state_dict().items() if k.startswith("mlp.")})
    ranges = np.array(info.voltage_ranges_v)
    v = torch.tensor(np.random.default_rng(1).uniform(ranges[:, 0], ranges[:, 1], (16, 3)), dtype=torch.float32)
    x = (v - torch.tensor([-0.25, 0.0, 1.0])) * torch.tensor([2 / 1.5, 2 / 1.0, 2 / 2.0])
    expected = reference(x)[:, 0] * 20.0 + 3.0
    out = model(v)
    assert out.shape == (16,)
    torch.testing.assert_close(out, expected)
    predicted = model.predict(v.numpy().astype(np.float64), batch_size=5)
    assert predicted.dtype == np.float64 and predicted.shape == (16,)
    np.testing.assert_allclose(predicted, expected.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_set_input_normalization():
    model = SurrogateModel(make_info(), hidden_sizes=(3,))
    model.set_input_normalization([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    reference = model.mlp(torch.tensor([[0.2, -0.3, 1.5]]))[:, 0]
    torch.testing.assert_close(model(torch.tensor([[0.2, -0.3, 1.5]])), reference)
    with pytest.raises(ValueError, match=r"input scale must be non-zero"):
        model.set_input_normalization([0.0] * 3, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"shape \(3,\), got \(2,\)"):
        model.set_input_normalization([0.0] * 2, [1.0] * 2)
    with pytest.raises(ValueError, match="output std must be finite and > 0"):
        model.set_output_normalization(0.0, 0.0)


@pytest.mark.parametrize(
    "bad, message",
    [
        ([[0.0, 0.6, 1.0]], "electrode 'b' voltage 0.6 V in sample 0 outside [-0.5, 0.5] V"),
        ([[0.0, 0.0, 1.0], [-1.5, 0.0, 1.0]], "electrode 'a' voltage -1.5 V in sample 1"),
        ([[0.0, 0.0, float("nan")]], "electrode 'c' voltage nan in sample 0 is not finite"),
        ([[0.0, 0.0]], "must have shape (batch, 3)"),
    ],
)
def test_predict_refuses_bad_voltages(bad, message):
    model = SurrogateModel(make_info(), hidden_sizes=(3,))
    with pytest.raises(VoltageError) as info:
        model.predict(np.array(bad))
    assert message in str(info.value)


def test_gradient_flows_to_voltages():
    torch.manual_seed(3)
    model = SurrogateModel(make_info(), hidden_sizes=(8, 8), activation="tanh")
    v = torch.tensor([[0.1, 0.2, 0.7]], requires_grad=True)
    model(v).sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    # finite-difference check of the derivative along electrode 'c'
    h = 1e-2
    with torch.no_grad():
        step = torch.tensor([[0.0, 0.0, h]])
        numeric = (model(v + step) - model(v - step)).item() / (2 * h)
    assert v.grad[0, 2].item() == pytest.approx(numeric, rel=1e-2, abs=1e-4)
