"""The configuration reference and the file-format reference (``docs/_ext/configref.py``), without a Sphinx build.

Truths: the task registry and an independent walk over the pydantic models (every registered task type and every
field reachable from its config class is on the page); the files the code writes (the file-format tables list
exactly their keys); the example configs (their JSON schemas accept them).
"""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pydantic import BaseModel

from inmaterio.tasks.registry import TASKS, resolve

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import configref  # noqa: E402


@pytest.fixture(scope="module")
def reference() -> configref.ConfigReference:
    return configref.config_reference()


@pytest.fixture(scope="module")
def page(reference) -> str:
    return configref.config_page(reference)


def models_of(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_of(arg)]


def reachable_fields(config: type[BaseModel], task_type: str) -> set[tuple[type[BaseModel], str]]:
    """Every (model, field name) a YAML file of ``task_type`` can set: the config class, its task model (the member
    of the ``task`` union whose ``type`` is ``task_type``) and every model nested in them."""
    out: set[tuple[type[BaseModel], str]] = set()
    todo, seen = [config], set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            out.add((model, name))
            children = models_of(info.annotation)
            if model is config and name == "task":
                children = [m for m in children if task_type in typing.get_args(m.model_fields["type"].annotation)]
                assert len(children) == 1, f"{task_type}: no task model of that type in {config.__name__}"
            todo += children
    return out


def test_every_registered_task_type_has_a_section_a_schema_and_a_row_in_the_overview(reference, page):
    assert [s.key for s in reference.tasks] == list(TASKS)
    schemas = configref.schemas()
    for task_type, entry in TASKS.items():
        label = configref._label("task-" + task_type)
        assert f"\n.. _{label}:\n" in page, task_type
        assert f":ref:`{task_type} <{label}>`" in page, task_type
        assert schemas[f"{task_type}.schema.json"] == resolve(entry.config).model_json_schema()


def test_every_field_of_every_task_config_is_documented(reference, page):
    blocks = {block.model: block for block in reference.blocks}
    for section in reference.tasks:
        expected = reachable_fields(section.model, section.key)
        # the section's rows and those of the blocks it links to (and they link to) document every field ...
        rows, todo, linked = list(section.rows), [link for row in section.rows for link in row.links], set()
        while todo:
            model = todo.pop()
            if model not in linked:
                linked.add(model)
                rows += blocks[model].rows
                todo += [link for row in blocks[model].rows for link in row.links]
        documented = {(row.owner, row.name) for row in rows}
        missing = sorted(f"{m.__name__}.{n}" for m, n in expected - documented)
        assert not missing, f"{section.key}: fields missing from the configuration reference: {missing}"
        # ... and nothing of another task
        assert documented <= expected, f"{section.key}: rows of another task: {documented - expected}"
    for section in reference.tasks + reference.blocks:
        for row in section.rows:
            assert f"``{row.path}``" in page, row.path
        for model in {link for row in section.rows for link in row.links}:
            assert f".. _{configref._label(configref._block_key(model))}:" in page, model


def test_rows_show_paths_types_defaults_constraints_and_docstring_descriptions(reference):
    rows = {(s.key, r.path): r for s in reference.tasks + reference.blocks for r in s.rows}
    gd = rows[("gates", "task.gd")]
    assert gd.default == "{learning_rate: 0.02, epochs: 400}" and gd.type == "GDConfig"
    assert gd.description.startswith("settings of the chosen algorithm")  # "gd, ga : ..." of the GatesTask docstring
    assert rows[("gates", "task.type")].constraints == "fixed: ``gates``"
    assert rows[("gates", "task.algorithm")].constraints == "one of: ``gd``, ``ga``"
    assert rows[("gates", "task.input_electrodes")].default == "[3, 4]"
    assert rows[("gates", "task")].default == "required" and rows[("gates", "task")].type == "GatesTask"
    assert ("gates", "task.architecture") not in rows  # a field of the rings task
    assert rows[("rings", "task.architecture")].constraints == "one of: ``single``, ``2-2-1``"
    noise = rows[("shd_toy", "task.noise_std")]
    assert noise.constraints == ">= 0; <= 100" and noise.default == "0.5"
    # "steps : ...; average_last : ..." on one docstring line documents two fields
    assert rows[("shd_toy", "task.average_last")].description == "the last iterations averaged for the final weight."
    assert rows[("shd_toy", "task.steps")].description == "iterations of parts (a) and (c)"
    device = rows[("shd_toy", "task.device")]
    assert device.default == "{kind: soft_bounds, dw_min: 0.005}" and len(device.links) == 4  # one of four devices
    executor = "inmaterio.parallel.ExecutorConfig"
    assert rows[(executor, "workers")].constraints == ">= 1" and rows[(executor, "workers")].default == "null"
    assert rows[(executor, "kind")].constraints == "one of: ``serial``, ``local``, ``ray``"
    assert "Ray cluster address" in rows[(executor, "address")].description
    # Google-style "Attributes:" entries count too
    assert rows[("ep_learning", "task.training")].type == "EPTrainConfig"
    assert rows[("inmaterio.circuits.fit.EPTrainConfig", "lr")].description == "learning rate (> 0)."


def test_docstring_entries_continue_on_deeper_lines_and_name_several_fields():
    class Example(BaseModel):
        """Settings.

        a, b : shared meaning
            continued here.
        c : one; d : two
        Prose after the list.
        """

        a: int = 0
        b: int = 0
        c: int = 0
        d: int = 0

    assert configref.docstring_fields(Example) == {
        "a": "shared meaning continued here.", "b": "shared meaning continued here.", "c": "one", "d": "two",
    }  # fmt: skip


def test_the_page_names_the_speed_only_fields(page):
    section = page.split(".. _configref-task-capacity-study:")[1].split(".. _configref-task-")[0]
    assert "speed-only fields ``executor``, ``device.threads``" in section


def test_example_configs_validate_against_their_json_schemas():
    """The schemas describe the models after validation; a model that fills fields from a preset before validating
    (``recipe`` with partial ``settings``) has a schema that requires what the YAML may leave out."""
    jsonschema = pytest.importorskip("jsonschema")
    presets = {"mnist_10dnpu", "crossbar_inference"}  # task.settings / task.model.settings filled from the recipe
    schemas = configref.schemas()
    rejected = set()
    for task_type, entry in TASKS.items():
        data = yaml.safe_load((ROOT / "examples" / entry.example).read_text())
        try:
            jsonschema.validate(data, schemas[f"{task_type}.schema.json"])
        except jsonschema.ValidationError:
            rejected.add(task_type)
    assert rejected <= presets, f"example configs their JSON schema rejects: {sorted(rejected - presets)}"


# --- file formats: the tables list what the code writes ----------------------------------------------------------


def documented_keys(format_constant: str) -> set[str]:
    (fmt,) = [f for f in configref.FORMATS if f.format == format_constant]
    return {key.split(".")[0] for key, _, _ in fmt.keys}


def test_run_record_and_checkpoint_keys_are_documented(tmp_path):
    from inmaterio.runs import open_run

    with open_run(tmp_path / "run", "test.kind", identity={"a": 1}, notify=lambda _: None) as run:
        run.save_checkpoint({"epoch": 1})
        run.finish({"x": 1.0})
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert set(record) == documented_keys("inmaterio.runs:FORMAT") - {"error"}  # error: failed runs only
    payload = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    (checkpoint,) = [f for f in configref.FORMATS if f.title.startswith("Checkpoint")]
    assert set(payload) == {key for key, _, _ in checkpoint.keys}


def test_surrogate_dataset_and_circuit_file_keys_are_documented(tmp_path):
    from inmaterio.circuits import Dense, Input, Model
    from inmaterio.circuits.io import load_parameters, save_parameters
    from inmaterio.smg.dataset import Dataset, dataset_writers
    from inmaterio.surrogate.info import DeviceInfo
    from inmaterio.surrogate.io import surrogate_files
    from inmaterio.surrogate.model import SurrogateModel

    info = DeviceInfo(electrode_names=["e0", "e1"], readout_name="out", voltage_ranges_v=[(-1.0, 1.0), (-1.0, 1.0)])
    model = SurrogateModel(info, hidden_sizes=[4])
    document = json.loads(surrogate_files(model)["model.json"])
    keys = documented_keys("inmaterio.surrogate.io:FORMAT")
    assert set(document) == keys
    (fmt,) = [f for f in configref.FORMATS if f.format == "inmaterio.surrogate.io:FORMAT"]
    assert {k.split(".", 1)[1] for k, _, _ in fmt.keys if k.startswith("architecture.")} == set(document["architecture"])

    writers = dataset_writers(Dataset(np.zeros((2, 3)), np.zeros(2), np.zeros(2)))
    writers["dataset.json"](tmp_path / "dataset.json")
    assert set(json.loads((tmp_path / "dataset.json").read_text())) == documented_keys("inmaterio.smg.dataset:FORMAT")

    x = Input(2, name="x")
    circuit = Model(x, Dense(1, name="out")(x), seed=0)
    save_parameters(circuit, tmp_path / "p.safetensors")
    assert set(load_parameters(circuit, tmp_path / "p.safetensors")) == documented_keys("inmaterio.circuits.io:FORMAT")


def test_file_format_page_shows_the_codes_format_strings_and_a_schema_only_where_a_model_defines_it():
    from inmaterio.devices.instruments import measurement_file
    from inmaterio.surrogate.info import DeviceInfo

    text = configref.file_formats_page()
    for fmt in configref.FORMATS:
        assert f"\n{fmt.title}\n" in text
        if fmt.format is not None:
            assert f"``format`` = ``{configref._constant(fmt.format)}``" in text
    assert f"``{measurement_file.FORMAT}``" in text
    assert configref.schemas()["surrogate-device-info.schema.json"] == DeviceInfo.model_json_schema()
    non_task = {name for name in configref.schemas() if name.removesuffix(".schema.json") not in TASKS}
    assert non_task == {"surrogate-device-info.schema.json"}


def test_write_reference_writes_the_pages_and_the_schemas_and_removes_stale_ones(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "gone.schema.json").write_text("{}")
    written = configref.write_reference(tmp_path)
    assert (tmp_path / "config.rst").read_text().startswith(".. This page is generated")
    assert (tmp_path / "file_formats.rst").is_file()
    assert not (tmp_path / "schemas" / "gone.schema.json").exists()
    assert json.loads((tmp_path / "schemas" / "gates.schema.json").read_text())["title"] == "RunConfig"
    assert len(written) == 2 + len(TASKS) + 1


def test_the_generated_pages_are_ignored_by_git_and_linked_from_the_site():
    ignored = (DOCS / ".gitignore").read_text().split()
    assert {"reference/config.rst", "reference/file_formats.rst", "reference/schemas/"} <= set(ignored)
    assert '    "configref",\n' in (DOCS / "conf.py").read_text()
    index = (DOCS / "index.md").read_text()
    assert "\nreference/config\n" in index and "\nreference/file_formats\n" in index
    assert "{doc}`reference/config`" in (DOCS / "concepts.md").read_text()
