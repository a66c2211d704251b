"""Learning with EP end to end: XOR, a short Iris run, checkpoint/resume, corrupt checkpoints and bad data.

The recipes are those of ``benchmarks/ep/gates.py`` and ``benchmarks/ep/iris.py``
(Shockley diodes both ways with a series bias of -0.3 V, so that they conduct
when a hidden node passes about +-0.1 V; amplifiers of gain 4; differential
readout; symmetric EP with beta = 1e-7 S; MSE with targets +-0.1 V; Adam).
"""

import pytest
import torch

from inmaterio.circuits import (
    Amplifier,
    Bias,
    Concatenate,
    Dense,
    Diodes,
    EPTrainConfig,
    Input,
    Model,
    ShockleyDiode,
    evaluate,
    fit,
)
from inmaterio.data.tabular import load_iris_split
from inmaterio.errors import ConfigError, ModelFileError, VoltageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

XOR_X = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float64)
XOR_Y = torch.tensor([0, 1, 1, 0])


def diode_net(seed: int, n_in: int, hidden: int, classes: int) -> Model:
    x = Input(n_in, inverted=True, voltage_range_v=(-1.0, 1.0), name="x")
    b = Bias([1.0, -1.0], name="b")
    h = Dense(hidden, name="h")(Concatenate()([x, b]))
    h = Diodes(ShockleyDiode(), orientation="both", bias_v=(-0.3, -0.3), name="d")(h)
    h = Amplifier(4.0, name="amp")(h)
    y = Dense(2 * classes, name="y")(Concatenate()([h, b]))
    return Model(x, y, seed=seed)


def xor_config(epochs: int, seed: int = 0) -> EPTrainConfig:
    return EPTrainConfig(
        epochs=epochs, batch_size=4, beta=1e-7, lr=0.02, readout="differential", loss="mse", target_v=0.1, seed=seed
    )


def test_xor_learns_to_100_percent():
    model = diode_net(1, 2, 6, 2)
    cfg = xor_config(50, seed=1)  # this seed first reaches 100% at epoch 32 (benchmarks/ep/gates.py: 150 epochs for every seed)
    assert evaluate(model, XOR_X, XOR_Y, cfg)["accuracy"] < 1.0
    fit(model, XOR_X, XOR_Y, cfg, progress=False)
    result = evaluate(model, XOR_X, XOR_Y, cfg)
    assert result["accuracy"] == 1.0
    assert result["loss"] < 0.01  # below the loss of the all-zero answer (target_v² = 0.01)


def test_iris_short_schedule_beats_90_percent():
    data = load_iris_split(0)
    model = diode_net(0, 4, 10, 3)
    cfg = EPTrainConfig(epochs=5, batch_size=8, beta=1e-7, lr=0.01, readout="differential", loss="mse", target_v=0.1, seed=0)
    fit(model, data.x_train, data.y_train, cfg, progress=False)
    assert evaluate(model, data.x_test, data.y_test, cfg)["accuracy"] >= 0.9
    assert evaluate(model, data.x_train, data.y_train, cfg)["accuracy"] >= 0.9


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    straight = diode_net(1, 2, 6, 2)
    h_straight = fit(straight, XOR_X, XOR_Y, xor_config(6, seed=3).model_copy(update={"batch_size": 2}), progress=False)
    resumed = diode_net(1, 2, 6, 2)
    cfg = xor_config(3, seed=3).model_copy(update={"batch_size": 2})
    fit(resumed, XOR_X, XOR_Y, cfg, directory=tmp_path, progress=False)  # "interrupted" after 3 epochs
    fresh = diode_net(1, 2, 6, 2)  # a new process: same architecture, initial parameters
    h_resumed = fit(fresh, XOR_X, XOR_Y, cfg.model_copy(update={"epochs": 6}), directory=tmp_path, progress=False)
    for key, value in straight.normalised_parameters().items():
        assert torch.equal(value, fresh.normalised_parameters()[key]), key
    assert [h["loss"] for h in h_resumed] == [h["loss"] for h in h_straight]
    assert (tmp_path / "history.json").exists()
    with pytest.raises(ConfigError, match=r"config\.lr: 0\.02 in the folder, 0\.5 now"):
        fit(
            diode_net(1, 2, 6, 2),
            XOR_X,
            XOR_Y,
            cfg.model_copy(update={"epochs": 6, "lr": 0.5}),
            directory=tmp_path,
            progress=False,
        )


def test_corrupt_checkpoint_raises_model_file_error(tmp_path):
    cfg = xor_config(1)
    fit(diode_net(0, 2, 6, 2), XOR_X, XOR_Y, cfg, directory=tmp_path, progress=False)
    ckpt = tmp_path / "checkpoint.pt"
    raw = ckpt.read_bytes()
    ckpt.write_bytes(raw[: len(raw) // 2])  # truncated, e.g. by a full disk
    with pytest.raises(ModelFileError):
        fit(diode_net(0, 2, 6, 2), XOR_X, XOR_Y, cfg.model_copy(update={"epochs": 2}), directory=tmp_path, progress=False)
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelFileError):
        fit(diode_net(0, 2, 6, 2), XOR_X, XOR_Y, cfg.model_copy(update={"epochs": 2}), directory=tmp_path, progress=False)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda x: x.index_put_((torch.tensor(5), torch.tensor(2)), torch.tensor(1.5, dtype=torch.float64)),
            r"feature 2 of sample 5: 1\.5 V outside \[-1\.0, 1\.0\] V",
        ),
        (
            lambda x: x.index_put_((torch.tensor(7), torch.tensor(1)), torch.tensor(float("nan"), dtype=torch.float64)),
            r"feature 1 of sample 7 is nan",
        ),
        (lambda x: x[:, :3], r"expects data of shape \(batch, 4\), got \(105, 3\)"),
    ],
)
def test_bad_inputs_name_the_feature_and_sample(change, message):
    data = load_iris_split(0)
    x = change(data.x_train.clone())
    model = diode_net(0, 4, 10, 3)
    before = {k: v.clone() for k, v in model.parameter_values().items()}
    cfg = EPTrainConfig(epochs=1, batch_size=8, readout="differential", seed=0)
    with pytest.raises(VoltageError, match=message):
        fit(model, x, data.y_train, cfg, progress=False)
    with pytest.raises(VoltageError, match=message):
        evaluate(model, x, data.y_train, cfg)
    assert all(torch.equal(before[k], v) for k, v in model.parameter_values().items())  # nothing was trained


def test_bad_validation_data_is_caught_before_training():
    data = load_iris_split(0)
    x_val = data.x_test.clone()
    x_val[44, 0] = -3.0
    with pytest.raises(VoltageError, match="feature 0 of sample 44"):
        fit(
            diode_net(0, 4, 10, 3),
            data.x_train,
            data.y_train,
            EPTrainConfig(epochs=1, readout="differential"),
            validation=(x_val, data.y_test),
            progress=False,
        )
