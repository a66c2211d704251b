"""Surrogate files: round trip, refusals, corruption, and the brains-py import (no pickled code runs)."""

import json
import os
import pathlib
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from inmaterio.errors import ModelFileError
from inmaterio.surrogate import (
    DeviceInfo,
    SurrogateModel,
    default_model_dir,
    load_brainspy_checkpoint,
    load_default_surrogate,
    load_surrogate,
    save_surrogate,
)

RANGES = [(-1.2, 0.6), (-0.8, 0.4), (-0.5, 0.5)]


@pytest.fixture
def model():
    torch.manual_seed(0)
    info = DeviceInfo(
        electrode_names=["e0", "e1", "e2"],
        readout_name="out",
        voltage_ranges_v=RANGES,
        amplification=28.5,
        output_clipping_na=(-114.0, 114.0),
        noise_na=0.7,
        provenance={"dataset": "unit-test"},
    )
    m = SurrogateModel(info, hidden_sizes=(7, 5), activation="leaky_relu")
    m.set_output_normalization(mean_na=-2.0, std_na=15.0)
    return m


def voltages(n=20, seed=0):
    r = np.array(RANGES)
    return np.random.default_rng(seed).uniform(r[:, 0], r[:, 1], (n, 3))


# --- save / load --------------------------------------------------------------------------------


def test_round_trip(model, tmp_path):
    meta = {"epochs": 3, "losses": [1.0, 0.5], "config": {"lr": 1e-3}}
    directory = save_surrogate(model, tmp_path / "surrogate", metadata=meta)
    assert sorted(p.name for p in directory.iterdir()) == ["model.json", "weights.safetensors"]
    document = json.loads((directory / "model.json").read_text())
    assert document["format"] == "inmaterio-surrogate" and document["format_version"] == 1
    assert document["architecture"] == {"hidden_sizes": [7, 5], "activation": "leaky_relu", "n_inputs": 3}
    for target in (directory, directory / "model.json", directory / "weights.safetensors"):
        loaded = load_surrogate(target)
        assert loaded.info == model.info
        assert loaded.metadata == meta
        assert loaded.architecture() == model.architecture()
        np.testing.assert_array_equal(loaded.predict(voltages()), model.predict(voltages()))
    assert set(load_file(directory / "weights.safetensors")) == set(model.state_dict())


def test_overwrite_refused_and_files_unchanged(model, tmp_path):
    directory = save_surrogate(model, tmp_path / "s", metadata={"run": 1})
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    other = SurrogateModel(model.info, hidden_sizes=(3,))
    with pytest.raises(ModelFileError, match=r"'.*s'.*not empty.*overwrite=True"):
        save_surrogate(other, directory, metadata={"run": 2})
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    save_surrogate(other, directory, metadata={"run": 2}, overwrite=True)
    loaded = load_surrogate(directory)
    assert loaded.hidden_sizes == (3,) and loaded.metadata == {"run": 2}
    assert sorted(p.name for p in directory.iterdir()) == ["model.json", "weights.safetensors"]


def test_unserialisable_metadata_writes_nothing(model, tmp_path):
    with pytest.raises(ValueError, match="metadata is not JSON-serialisable"):
        save_surrogate(model, tmp_path / "s", metadata={"when": object()})
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def edit_json(directory, change):
    path = directory / "model.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def rewrite_weights(directory, change):
    path = directory / "weights.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)


def transpose_first_layer(tensors):
    tensors["mlp.0.weight"] = tensors["mlp.0.weight"].T.contiguous()


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda d: (d / "weights.safetensors").write_bytes((d / "weights.safetensors").read_bytes()[:-40]),
         "weights.safetensors' is not a readable safetensors file"),
        (lambda d: (d / "weights.safetensors").write_bytes(os.urandom(300)), "not a readable safetensors file"),
        (lambda d: (d / "weights.safetensors").unlink(), "has no weights.safetensors"),
        (lambda d: (d / "model.json").unlink(), "has no model.json"),
        (lambda d: (d / "model.json").write_text("{not json"), "model.json' is not valid JSON"),
        (lambda d: (d / "model.json").write_text("[1, 2]"), "must hold a JSON object, got list"),
        (lambda d: edit_json(d, lambda j: j.update(format="other-tool")),
         "is not an inmaterio surrogate (format='other-tool'"),
        (lambda d: edit_json(d, lambda j: j.pop("format")), "is not an inmaterio surrogate (format=None"),
        (lambda d: edit_json(d, lambda j: j.update(format_version=2)), "format_version 2, newer than the 1"),
        (lambda d: edit_json(d, lambda j: j.pop("architecture")), "lacks the key(s) ['architecture']"),
        (lambda d: edit_json(d, lambda j: j.pop("metadata")), "lacks the key(s) ['metadata']"),
        (lambda d: edit_json(d, lambda j: j.update(extra=1)), "unknown key(s) ['extra']"),
        (lambda d: edit_json(d, lambda j: j["info"].update(voltage_ranges_v=[[0.0, 1.0]])),
         "invalid 'info': voltage_ranges_v has 1 entries but electrode_names has 3"),
        (lambda d: edit_json(d, lambda j: j["info"]["voltage_ranges_v"].__setitem__(1, [0.4, -0.8])),
         "invalid 'info': voltage_ranges_v: electrode 'e1' range [0.4, -0.8] V"),
        (lambda d: edit_json(d, lambda j: j["architecture"].update(activation="swish")),
         "invalid 'architecture': unknown activation 'swish'"),
        (lambda d: edit_json(d, lambda j: j["architecture"].update(hidden_sizes=[7, 6])),
         "tensor 'mlp.2.weight' has shape (5, 7), the architecture"),
        (lambda d: rewrite_weights(d, transpose_first_layer),
         "tensor 'mlp.0.weight' has shape (3, 7), the architecture {'hidden_sizes': [7, 5], 'activation': 'leaky_relu', "
         "'n_inputs': 3} needs (7, 3)"),
        (lambda d: rewrite_weights(d, lambda t: t.pop("mlp.2.bias")), "missing tensors ['mlp.2.bias'], unexpected tensors []"),
        (lambda d: rewrite_weights(d, lambda t: t.update(extra=torch.zeros(2))), "unexpected tensors ['extra']"),
        (lambda d: rewrite_weights(d, lambda t: t["mlp.0.bias"].add_(1.0)), "does not match the weights_sha256"),
    ],
)  # fmt: skip
def test_corrupt_files_raise_model_file_error(model, tmp_path, corrupt, message):
    directory = save_surrogate(model, tmp_path / "s")
    corrupt(directory)
    with pytest.raises(ModelFileError) as info:
        load_surrogate(directory)
    assert message in str(info.value)
    assert str(directory) in str(info.value)


def test_bad_paths(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_surrogate(tmp_path / "missing")
    stray = tmp_path / "notes.txt"
    stray.write_text("x")
    with pytest.raises(ModelFileError, match="is not a surrogate"):
        load_surrogate(stray)
    tiny = SurrogateModel(DeviceInfo(electrode_names=["a"], readout_name="o", voltage_ranges_v=[(0, 1)]), (2,))
    with pytest.raises(ModelFileError, match="exists and is not a directory"):
        save_surrogate(tiny, stray)


def test_default_model(monkeypatch, tmp_path, model):
    assert default_model_dir().parts[-2:] == ("models", "default")
    assert default_model_dir().parent.parent == pathlib.Path(__import__("inmaterio").__file__).parent
    monkeypatch.setattr("inmaterio.surrogate.io.default_model_dir", lambda: tmp_path / "default")
    with pytest.raises(ModelFileError, match="no default surrogate is installed .*SMG"):
        load_default_surrogate()
    save_surrogate(model, tmp_path / "default")
    assert load_default_surrogate().info == model.info


# --- brains-py import ---------------------------------------------------------------------------


def brainspy_checkpoint(path, activation="relu", hidden=(6, 6, 4), prefix="model.", **info_changes):
    """Write a fake brains-py training_data.pt; return the nn.Sequential it holds."""
    torch.manual_seed(1)
    layers, widths = [], (3, *hidden)
    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}.get(activation, nn.Sigmoid)
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(n_in, n_out), act()]
    seq = nn.Sequential(*layers, nn.Linear(widths[-1], 1))
    info = {
        "model_structure": {"hidden_sizes": list(hidden), "D_in": 3, "D_out": 1, "activation": activation},
        "electrode_info": {
            "electrode_no": 4,
            "activation_electrodes": {"electrode_no": 3, "voltage_ranges": np.array(RANGES)},
            "output_electrodes": {"electrode_no": 1, "amplification": np.array([28.5]), "clipping_value": [-114.0, 114.0]},
        },
        "training_configs": {"epochs": 500, "learning_rate": np.float64(1e-4), "loss": "mse"},
        "sampling_configs": {"driver": {"amplification": [28.5]}, "offsets": np.array([0.1, 0.2], dtype=np.float32)},
        "data_info": {"steps": np.arange(3)},
    }
    info.update(info_changes)
    state = {prefix + k: v for k, v in seq.state_dict().items()}
    torch.save({"model_state_dict": state, "info": info}, path)
    return seq


@pytest.mark.parametrize("prefix", ["model.", "raw_model.", "model.raw_model."])
def test_brainspy_import_matches_network_on_raw_volts(tmp_path, prefix):
    path = tmp_path / "training_data.pt"
    seq = brainspy_checkpoint(path, prefix=prefix)
    model = load_brainspy_checkpoint(path)
    assert model.info.electrode_names == ["e0", "e1", "e2"] and model.info.readout_name == "out"
    np.testing.assert_array_equal(model.info.ranges_array(), RANGES)
    assert model.info.amplification == 28.5
    assert model.info.output_clipping_na == (-114.0, 114.0)
    assert model.architecture() == {"hidden_sizes": [6, 6, 4], "activation": "relu", "n_inputs": 3}
    v = voltages()
    with torch.no_grad():
        # brains-py's surrogate output (no noise, no clipping): raw_model(v) * amplification
        expected = seq(torch.tensor(v, dtype=torch.float32))[:, 0].numpy() * 28.5
    np.testing.assert_allclose(model.predict(v), expected, rtol=1e-6, atol=1e-5)
    provenance = model.info.provenance["brainspy_info"]
    assert provenance["training_configs"] == {"epochs": 500, "learning_rate": 1e-4, "loss": "mse"}
    assert provenance["sampling_configs"]["offsets"] == pytest.approx([0.1, 0.2])
    assert provenance["data_info"] == {"steps": [0, 1, 2]}
    # the imported model saves and loads like any other
    reloaded = load_surrogate(save_surrogate(model, tmp_path / "converted"))
    np.testing.assert_array_equal(reloaded.predict(v), model.predict(v))


def test_brainspy_import_of_numpy1_pickle(tmp_path):
    """Checkpoints written under numpy 1 name numpy.core.multiarray._reconstruct; they load too."""
    modern = tmp_path / "modern.pt"
    seq = brainspy_checkpoint(modern)
    legacy = tmp_path / "training_data.pt"
    with zipfile.ZipFile(modern) as zin, zipfile.ZipFile(legacy, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(item, data)
    model = load_brainspy_checkpoint(legacy)
    np.testing.assert_array_equal(model.info.ranges_array(), RANGES)
    with torch.no_grad():
        expected = seq(torch.tensor(voltages(), dtype=torch.float32))[:, 0].numpy() * 28.5
    np.testing.assert_allclose(model.predict(voltages()), expected, rtol=1e-6, atol=1e-5)


class Payload:
    """Pickles to a call that creates ``marker`` when unpickled by plain pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_malicious_pickle_is_refused_unexecuted(tmp_path):
    # the payload works: plain unpickling creates its marker
    witness = tmp_path / "witness"
    torch.save({"x": Payload(witness)}, tmp_path / "witness.pt")
    torch.load(tmp_path / "witness.pt", weights_only=False)
    assert witness.exists()

    marker = tmp_path / "pwned"
    path = tmp_path / "training_data.pt"
    brainspy_checkpoint(path, training_configs={"hook": Payload(marker)})
    with pytest.raises(ModelFileError) as info:
        load_brainspy_checkpoint(path)
    assert str(path) in str(info.value)
    assert "cannot be read safely" in str(info.value)
    assert "global" in str(info.value).lower()  # names the refused global
    assert "weights_only` set to `False`" not in str(info.value)  # no advice to disable the protection
    assert not marker.exists()


def test_os_system_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Shell:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": {}, "info": Shell()}, path)
    with pytest.raises(ModelFileError, match="cannot be read safely"):
        load_brainspy_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(2000)), "training_data.pt'"),
        (lambda p: p.write_bytes(b""), "training_data.pt'"),
        (lambda p: torch.save([1, 2], p), "the checkpoint is a list, expected a dict"),
        (lambda p: torch.save({"model_state_dict": {}}, p), "the checkpoint has no key 'info'"),
        (lambda p: brainspy_checkpoint(p, model_structure={"hidden_sizes": [6, 6, 4]}),
         "model_structure has no key 'activation'"),
        (lambda p: brainspy_checkpoint(p, activation="sigmoid"), "activation 'sigmoid' is not supported"),
        (lambda p: brainspy_checkpoint(p, electrode_info={"activation_electrodes": {}}),
         "info['electrode_info'] has no key 'output_electrodes'"),
        (lambda p: brainspy_checkpoint(p, model_structure={"hidden_sizes": [6, 6, 5], "activation": "relu"}),
         "tensor 'mlp.4.weight' has shape (4, 6)"),
        (lambda p: brainspy_checkpoint(p, model_structure={"hidden_sizes": [6, 6, 4], "activation": "relu", "D_in": 7}),
         "D_in=7 but 3 voltage ranges"),
    ],
)  # fmt: skip
def test_bad_brainspy_files(tmp_path, write, message):
    path = tmp_path / "training_data.pt"
    write(path)
    with pytest.raises(ModelFileError) as info:
        load_brainspy_checkpoint(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_brainspy_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_brainspy_checkpoint(tmp_path / "nope.pt")
