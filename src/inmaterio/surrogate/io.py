"""Saving and loading surrogate models, and importing brains-py checkpoints.

On-disk format (``format_version`` 1)
-------------------------------------
A surrogate is a *directory* holding two files:

``weights.safetensors``
    The model's state dict in safetensors (no pickle): the MLP parameters
    ``mlp.{i}.weight`` / ``mlp.{i}.bias`` and the normalisation buffers
    ``input_offset (n,)``, ``input_scale (n,)``, ``output_offset ()``,
    ``output_scale ()``, all float32.
``model.json``
    A JSON object with exactly these keys:

    - ``format``: ``"inmaterio-surrogate"``
    - ``format_version``: ``1`` (readers refuse a newer version)
    - ``package_version``: the inmaterio version that wrote it
    - ``created``: ISO 8601 time of writing, UTC
    - ``architecture``: ``{"hidden_sizes": [...], "activation": ..., "n_inputs": n}``
    - ``info``: the :class:`~inmaterio.surrogate.DeviceInfo`, as JSON
    - ``metadata``: a free JSON object from the caller (training summary, config...)
    - ``weights_sha256``: hex SHA-256 of ``weights.safetensors``, so that a
      weights file and a ``model.json`` from different saves (e.g. an
      overwrite interrupted between the two files) are detected on loading.

An exported surrogate may carry the other members of its ensemble
(:func:`~inmaterio.surrogate.ensemble.load_ensemble` reads them; the folder's own
model is member 0)::

    ensemble/member_<k>/     k = 1..K-1, each a surrogate directory as above
    ensemble/calibration.json  {"scale": ..., "floor_na": ...} of the spread (optional)

Each file is written atomically (temporary sibling + :func:`os.replace`),
weights first and ``model.json`` last; :func:`export_surrogate` installs a
whole folder at once (built beside it, then swapped in). The installed
bundled model (:func:`default_model_dir`) is replaced only when asked with
``replace_bundled=True`` (``--replace-bundled``).

Loading checks, in this order and before the model is allocated where it
can: the JSON (format, version, keys, ``info``, ``architecture``), the
tensors' names, shapes and dtypes against the architecture (computed, so
absurd sizes in ``model.json`` cost nothing), ``weights_sha256`` when
present, and, hash or no hash, that the weights are those of a trained
model (:func:`check_plausible`: finite, within :data:`MAX_ABS_PARAMETER`,
non-zero input scales, a positive output scale, finite and bounded
predictions at the corners of the voltage box).

brains-py import
----------------
:func:`load_brainspy_checkpoint` reads a brains-py ``training_data.pt`` with
``torch.load(weights_only=True)``: only tensors, plain containers and numpy
arrays/scalars of plain dtypes are reconstructed; a file that needs any other
Python object is refused and nothing in it is run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

import inmaterio
from inmaterio.errors import InmaterioError, ModelFileError
from inmaterio.fileio import atomic_path
from inmaterio.random_streams import numpy_generator
from inmaterio.runs import os_error_reason
from inmaterio.surrogate.info import DeviceInfo
from inmaterio.surrogate.model import ACTIVATIONS, SurrogateModel, checked_hidden_sizes, state_shapes

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "MODEL_FILE",
    "MAX_ABS_PARAMETER",
    "MAX_ABS_NETWORK_OUTPUT",
    "surrogate_files",
    "save_surrogate",
    "export_surrogate",
    "load_surrogate",
    "check_plausible",
    "load_brainspy_checkpoint",
    "default_model_dir",
    "load_default_surrogate",
]

FORMAT = "inmaterio-surrogate"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
MODEL_FILE = "model.json"
#: Subfolder of an exported surrogate that holds the other members of its ensemble (member_<k>/, calibration.json).
ENSEMBLE_DIR = "ensemble"
_REQUIRED_KEYS = ("format", "format_version", "package_version", "created", "architecture", "info", "metadata")
_OPTIONAL_KEYS = ("weights_sha256",)
_ARCHITECTURE_KEYS = ("hidden_sizes", "activation", "n_inputs")

#: Largest magnitude of a plausible weight or bias. A surrogate's network sees voltages mapped onto
#: about [-1, 1] and is fitted to currents normalised to zero mean and unit standard deviation (a
#: brains-py network to raw volts and instrument units of the same order), so its weights are of
#: order 1 to 100; a value beyond this is a corrupt file, not a model.
MAX_ABS_PARAMETER = 1e6
#: Largest plausible network output at in-range voltages, in output scales (training-set standard
#: deviations): trained outputs stay within a few of them.
MAX_ABS_NETWORK_OUTPUT = 1e6


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _validation_summary(err: ValidationError) -> str:
    """One line per pydantic error: ``field.path: message``."""
    parts = []
    for e in err.errors():
        message = e["msg"].removeprefix("Value error, ")
        parts.append(f"{'.'.join(str(p) for p in e['loc'])}: {message}" if e["loc"] else message)
    return "; ".join(parts)


def surrogate_files(model: SurrogateModel, metadata: dict[str, Any] | None = None) -> dict[str, bytes]:
    """The files of a surrogate folder as bytes, in writing order: ``weights.safetensors``, then ``model.json``.

    Raises
    ------
    TypeError
        If ``model`` is not a :class:`SurrogateModel`.
    ValueError
        If ``metadata`` is not a JSON-serialisable dict.
    """
    if not isinstance(model, SurrogateModel):
        raise TypeError(f"model must be a SurrogateModel, got {type(model).__name__}")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict, got {type(metadata).__name__}")
    document: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": inmaterio.__version__,
        "created": _now_iso(),
        "architecture": model.architecture(),
        "info": model.info.model_dump(mode="json"),
        "metadata": metadata,
    }
    try:
        json.dumps(document)
    except (TypeError, ValueError) as err:
        raise ValueError(f"metadata is not JSON-serialisable: {err}") from None
    tensors = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in model.state_dict().items()}
    weights = save_safetensors_bytes(tensors, metadata={"format": FORMAT})
    document["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    return {WEIGHTS_FILE: weights, MODEL_FILE: (json.dumps(document, indent=2) + "\n").encode()}


def _is_bundled(directory: Path) -> bool:
    try:
        return directory.resolve() == default_model_dir().resolve()
    except OSError:
        return False


def _refuse_bundled(directory: Path, replace_bundled: bool) -> None:
    """The installed bundled surrogate is replaced only on explicit request."""
    if not replace_bundled and _is_bundled(directory) and (directory / MODEL_FILE).exists():
        raise ModelFileError(
            f"'{directory}' is the bundled default surrogate (demo and every task without a model_dir use it); "
            "it is never replaced by accident: choose another destination, or pass --replace-bundled "
            "(replace_bundled=True) to install a new default on purpose"
        )


def save_surrogate(
    model: SurrogateModel,
    directory: str | Path,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    *,
    replace_bundled: bool = False,
) -> Path:
    """Save ``model`` as a surrogate directory (see the module docstring); return its path.

    Parameters
    ----------
    model : the surrogate to save (weights and buffers are stored as float32).
    directory : target directory, created if missing.
    metadata : JSON-serialisable dict stored under ``metadata`` in ``model.json``.
    overwrite : replace the files of an existing non-empty directory.
    replace_bundled : allow ``directory`` to be the installed bundled model (:func:`default_model_dir`).

    Raises
    ------
    ModelFileError
        If ``directory`` is a file, is a non-empty directory and ``overwrite`` is False, is the
        bundled model and ``replace_bundled`` is False, or cannot be written (read-only, disk full).
    ValueError
        If ``metadata`` is not a JSON-serialisable dict (checked before anything is written).
    """
    files = surrogate_files(model, metadata)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ModelFileError(f"cannot save surrogate to '{directory}': it exists and is not a directory")
    _refuse_bundled(directory, replace_bundled)
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise ModelFileError(
            f"cannot save surrogate to '{directory}': the directory exists and is not empty "
            "(pass overwrite=True to replace the surrogate in it)"
        )
    try:
        for name, data in files.items():
            with atomic_path(directory / name) as tmp:
                tmp.write_bytes(data)
    except OSError as err:
        raise ModelFileError(f"cannot save surrogate to '{directory}': {os_error_reason(err)}") from None
    return directory


def export_surrogate(
    model: SurrogateModel,
    directory: str | Path | None,
    metadata: dict[str, Any] | None = None,
    *,
    extra_json: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
    overwrite: bool = False,
    replace_bundled: bool = False,
) -> Path:
    """Install ``model`` (and ``extra_json`` files, e.g. ``{"summary.json": {...}}``) as a complete folder, atomically.

    ``extra_files`` maps further relative paths (``"ensemble/member_1/model.json"``) to their bytes.

    ``directory`` None means the bundled model's folder (:func:`default_model_dir`).

    The new folder is written beside ``directory`` and swapped in with two renames, so
    ``directory`` holds the old surrogate or the new one, never a mixture; files of the old
    folder that the export does not write (a README) are carried over.

    Raises
    ------
    ModelFileError
        If ``directory`` is a file; is not empty and ``overwrite`` is False; is not empty but holds no
        surrogate (``overwrite`` replaces only a surrogate folder); is the installed bundled model and
        ``replace_bundled`` is False (with ``replace_bundled``, the model must record the virtual
        device it imitates, which ``demo`` rebuilds); or cannot be written.
    """
    files = {**surrogate_files(model, metadata), **(extra_files or {})}
    for name, data in (extra_json or {}).items():
        files[name] = (json.dumps(data, indent=2) + "\n").encode()
    directory = default_model_dir() if directory is None else Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ModelFileError(f"cannot export the surrogate to '{directory}': it exists and is not a directory")
    _refuse_bundled(directory, replace_bundled)
    if _is_bundled(directory):
        from inmaterio.devices.registry import device_config_from_description

        try:
            device_config_from_description(dict(model.info.provenance.get("device") or {}))
        except InmaterioError as err:
            raise ModelFileError(
                f"this model cannot become the bundled surrogate: demo rebuilds the virtual device from its "
                f"info.provenance.device, and {' '.join(str(err).split())}"
            ) from None
    existing = sorted(directory.iterdir()) if directory.is_dir() else []
    if existing and not overwrite:
        raise ModelFileError(
            f"cannot export the surrogate to '{directory}': it holds a model already (pass --overwrite / "
            "overwrite=True to replace it)" if (directory / MODEL_FILE).exists() else
            f"cannot export the surrogate to '{directory}': the folder is not empty; choose a new folder"
        )  # fmt: skip
    if existing and not (directory / MODEL_FILE).exists():
        names = ", ".join(p.name for p in existing[:8])
        raise ModelFileError(
            f"'{directory}' holds no surrogate (it holds {names}); --overwrite replaces only a surrogate folder: "
            "choose a new folder"
        )
    tag, target = uuid.uuid4().hex[:12], directory.resolve()
    staging = target.with_name(f".{target.name}.export-{tag}")
    aside = target.with_name(f".{target.name}.replaced-{tag}")
    try:
        staging.mkdir(parents=True)
        written = {name.split("/")[0] for name in files}
        for entry in existing:  # a README is kept; an old model's ensemble is not (it belongs to the old model)
            if entry.name not in written and entry.name not in (WEIGHTS_FILE, MODEL_FILE, ENSEMBLE_DIR):
                copy = shutil.copytree if entry.is_dir() else shutil.copy2
                copy(entry, staging / entry.name)
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        if existing:
            os.replace(target, aside)
        os.replace(staging, target)
    except OSError as err:
        if aside.exists() and not target.exists():
            os.replace(aside, target)
        raise ModelFileError(
            f"cannot export the surrogate to '{directory}': {os_error_reason(err)}; the folder is unchanged"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(aside, ignore_errors=True)
    return directory


def _surrogate_dir(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        return path
    if path.is_file():
        if path.name in (MODEL_FILE, WEIGHTS_FILE):
            return path.parent
        raise ModelFileError(
            f"'{path}' is not a surrogate: expected a directory holding {MODEL_FILE} and {WEIGHTS_FILE}, or one of those files"
        )
    raise ModelFileError(f"surrogate '{path}' does not exist")


def _read_document(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise ModelFileError(f"surrogate directory '{json_path.parent}' has no {MODEL_FILE} (expected '{json_path}')")
    try:
        document = json.loads(json_path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"file '{json_path}' is not valid JSON: {err}") from None
    except RecursionError:
        raise ModelFileError(f"file '{json_path}' is not a surrogate description: its JSON is nested too deeply") from None
    except OSError as err:
        raise ModelFileError(f"file '{json_path}' cannot be read: {os_error_reason(err)}") from None
    if not isinstance(document, dict):
        raise ModelFileError(f"file '{json_path}' must hold a JSON object, got {type(document).__name__}")
    if document.get("format") != FORMAT:
        raise ModelFileError(
            f"file '{json_path}' is not an inmaterio surrogate (format={document.get('format')!r}, expected {FORMAT!r})"
        )
    version = document.get("format_version")
    if type(version) is not int or version < 1:
        raise ModelFileError(f"file '{json_path}': format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"file '{json_path}' has format_version {version}, newer than the {FORMAT_VERSION} this inmaterio "
            f"({inmaterio.__version__}) reads; upgrade inmaterio"
        )
    missing = [key for key in _REQUIRED_KEYS if key not in document]
    if missing:
        raise ModelFileError(f"file '{json_path}' lacks the key(s) {missing}")
    unknown = sorted(set(document) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise ModelFileError(f"file '{json_path}' has unknown key(s) {unknown}; allowed: {list(_REQUIRED_KEYS + _OPTIONAL_KEYS)}")
    if not isinstance(document["metadata"], dict):
        raise ModelFileError(f"file '{json_path}': 'metadata' must be a JSON object, got {type(document['metadata']).__name__}")
    digest = document.get("weights_sha256")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise ModelFileError(f"file '{json_path}': weights_sha256 must be 64 lower-case hex digits, got {digest!r}")
    return document


def _read_architecture(document: dict[str, Any], json_path: Path) -> tuple[DeviceInfo, tuple[int, ...], str]:
    """The validated ``info``, hidden sizes and activation of ``model.json`` (nothing is allocated)."""
    try:
        info = DeviceInfo.model_validate(document["info"])
    except ValidationError as err:
        raise ModelFileError(f"file '{json_path}': invalid 'info': {_validation_summary(err)}") from None
    arch = document["architecture"]
    if not isinstance(arch, dict) or sorted(arch) != sorted(_ARCHITECTURE_KEYS):
        raise ModelFileError(
            f"file '{json_path}': 'architecture' must be an object with keys {list(_ARCHITECTURE_KEYS)}, got {arch!r}"
        )
    if arch["n_inputs"] != info.n_activation or isinstance(arch["n_inputs"], bool):
        raise ModelFileError(
            f"file '{json_path}': architecture n_inputs={arch['n_inputs']!r} but info lists {info.n_activation} electrodes"
        )
    activation = arch["activation"]
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ModelFileError(
            f"file '{json_path}': invalid 'architecture': unknown activation {activation!r}; allowed: {sorted(ACTIVATIONS)}"
        )
    try:
        hidden = checked_hidden_sizes(arch["hidden_sizes"])
    except ValueError as err:
        raise ModelFileError(f"file '{json_path}': invalid 'architecture': {err}") from None
    return info, hidden, activation


def _check_tensors(tensors: dict[str, Any], n_inputs: int, hidden: tuple[int, ...], architecture: dict, source: Path) -> None:
    """Names, types, shapes and float dtypes of ``tensors`` against the architecture, before any model is built.

    The expected shapes are computed, not allocated: an architecture claiming absurd sizes fails here.
    """
    expected = state_shapes(n_inputs, hidden)
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    if missing or unexpected:
        raise ModelFileError(
            f"weights in '{source}' do not match the architecture {architecture}: "
            f"missing tensors {missing}, unexpected tensors {unexpected}"
        )
    for key, shape in expected.items():
        value = tensors[key]
        if not isinstance(value, torch.Tensor):
            raise ModelFileError(f"weights in '{source}': '{key}' is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != shape:
            raise ModelFileError(
                f"weights in '{source}': tensor '{key}' has shape {tuple(value.shape)}, "
                f"the architecture {architecture} needs {shape}"
            )
        if not value.is_floating_point():
            raise ModelFileError(f"weights in '{source}': tensor '{key}' has dtype {value.dtype}, expected a float dtype")


def _first_bad(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.nonzero(mask)[0]) if mask.dim() else ()


def _plausibility_points(info: DeviceInfo) -> np.ndarray:
    """Voltages ``(P, n)`` V: the centre and the corners of the box of ranges (1024 random points for n > 10)."""
    ranges = info.ranges_array()
    n = info.n_activation
    if n <= 10:
        corners = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        unit = corners.astype(np.float64)
    else:
        unit = numpy_generator(0, "surrogate plausibility").uniform(0.0, 1.0, (1024, n))
    points = ranges[:, 0] + unit * (ranges[:, 1] - ranges[:, 0])
    return np.vstack([ranges.mean(axis=1), points])


def check_plausible(model: SurrogateModel, source: str | Path) -> None:
    """Refuse a model no training makes (see :data:`MAX_ABS_PARAMETER`), naming the tensor and the value.

    Checked: every weight, bias and normalisation value is finite; every weight and bias
    is within ``±MAX_ABS_PARAMETER``; every input scale is non-zero; the output scale
    (the training currents' standard deviation, or brains-py's amplification) is > 0; at
    the centre and the corners of the voltage box the network's output is within
    ``±MAX_ABS_NETWORK_OUTPUT`` output scales and the predicted current is finite.

    Raises
    ------
    ModelFileError
        Naming ``source``, the tensor, the element and its value.
    """
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                index = _first_bad(~finite)
                value = tensor[index].item() if index else tensor.item()
                raise ModelFileError(
                    f"weights in '{source}': tensor '{name}' element {list(index)} is {value}, not a finite number; the file is corrupt"
                )
            if name.startswith("mlp."):
                big = tensor.abs() > MAX_ABS_PARAMETER
                if bool(big.any()):
                    index = _first_bad(big)
                    raise ModelFileError(
                        f"weights in '{source}': tensor '{name}' element {list(index)} = {tensor[index].item():.6g} is "
                        f"outside [-{MAX_ABS_PARAMETER:g}, {MAX_ABS_PARAMETER:g}], far beyond any trained weight; the file is corrupt"
                    )
        zero = model.input_scale == 0
        if bool(zero.any()):
            k = _first_bad(zero)[0]
            raise ModelFileError(
                f"weights in '{source}': tensor 'input_scale' element [{k}] (electrode '{model.info.electrode_names[k]}') "
                "is 0: that electrode's voltage would be ignored; the file is corrupt"
            )
        scale = model.output_scale.item()
        if not scale > 0:
            raise ModelFileError(
                f"weights in '{source}': tensor 'output_scale' = {scale:.6g} nA must be > 0 (the standard deviation "
                "of the training currents, or the instrument gain); the file is corrupt"
            )
        voltages = _plausibility_points(model.info)
        current = model(torch.as_tensor(voltages, dtype=model.input_offset.dtype)).double()
        network = (current - model.output_offset.double()) / scale
        worst = int(torch.argmax(torch.nan_to_num(network.abs(), nan=math.inf)))
        if not (torch.isfinite(current).all() and network.abs().max() <= MAX_ABS_NETWORK_OUTPUT):
            raise ModelFileError(
                f"surrogate '{source}' predicts {current[worst].item():.4g} nA at voltages "
                f"{np.round(voltages[worst], 6).tolist()} V, {network[worst].item():.3g} output scales from its offset "
                f"(bound ±{MAX_ABS_NETWORK_OUTPUT:g}): its weights are corrupt"
            )


def load_surrogate(path: str | Path) -> SurrogateModel:
    """Load a surrogate saved by :func:`save_surrogate`.

    ``path`` is the surrogate directory or either file in it. The returned
    model has ``model.metadata`` set to the saved metadata.

    Raises
    ------
    ModelFileError
        Naming the file and the problem: missing directory or file, invalid
        JSON, foreign ``format``, newer ``format_version``, missing key,
        invalid ``info`` or ``architecture``, corrupt safetensors, tensors whose
        names or shapes do not fit the architecture (checked before the model is
        allocated, so absurd sizes in ``model.json`` fail at once), a weights
        file from a different save than ``model.json``, or weights no training
        makes (:func:`check_plausible`, with or without ``weights_sha256``).
    """
    directory = _surrogate_dir(path)
    json_path = directory / MODEL_FILE
    document = _read_document(json_path)
    info, hidden, activation = _read_architecture(document, json_path)
    architecture = {"hidden_sizes": list(hidden), "activation": activation, "n_inputs": info.n_activation}

    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelFileError(f"surrogate directory '{directory}' has no {WEIGHTS_FILE} (expected '{weights_path}')")
    try:
        data = weights_path.read_bytes()
    except OSError as err:
        raise ModelFileError(f"file '{weights_path}' cannot be read: {os_error_reason(err)}") from None
    try:
        tensors = load_safetensors_bytes(data)
    except SafetensorError as err:
        raise ModelFileError(f"file '{weights_path}' is not a readable safetensors file (corrupt or truncated): {err}") from None
    _check_tensors(tensors, info.n_activation, hidden, architecture, weights_path)
    recorded = document.get("weights_sha256")
    if recorded is not None and hashlib.sha256(data).hexdigest() != recorded:
        raise ModelFileError(
            f"file '{weights_path}' does not match the weights_sha256 recorded in '{json_path}': the two files "
            "come from different saves (an interrupted overwrite or a hand-edited file)"
        )
    model = SurrogateModel(info, hidden, activation)
    model.load_state_dict({key: tensors[key].to(torch.float32) for key in model.state_dict()})
    check_plausible(model, weights_path)
    model.metadata = document["metadata"]
    return model


# --- brains-py import ---------------------------------------------------------------------------

# numpy dtype classes whose arrays hold plain bytes (never Python objects).
_PLAIN_DTYPE_CLASSES = (
    "BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType", "UInt16DType",
    "UInt32DType", "UInt64DType", "Float16DType", "Float32DType", "Float64DType", "LongDoubleDType",
    "Complex64DType", "Complex128DType", "CLongDoubleDType", "StrDType", "BytesDType",
)  # fmt: skip

# brains-py parameter names: "model.N.*" (old), "raw_model.N.*" (NeuralNetworkModel),
# "model.raw_model.N.*" (SurrogateModel processor); its effect buffers are ignored.
_BRAINSPY_KEY = re.compile(r"^(?:model\.)?(?:raw_model\.)?(\d+\.(?:weight|bias))$")
_BRAINSPY_EFFECT_BUFFERS = ("voltage_ranges", "amplification", "output_clipping")


def _numpy_safe_globals() -> list[Any]:
    """numpy's array and scalar reconstruction functions, ndarray, dtype and the plain dtype classes.

    The reconstruction functions are registered under both the numpy 1
    (``numpy.core``) and numpy 2 (``numpy._core``) module names that pickles
    refer to.
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2 without the numpy._core alias
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: list[Any] = [np.ndarray, np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    allowed += [getattr(np.dtypes, name) for name in _PLAIN_DTYPE_CLASSES if hasattr(np.dtypes, name)]
    return allowed


def _short_reason(err: Exception) -> str:
    """The informative line of a torch.load error, without torch's advice on how to lift the restriction."""
    marker = "WeightsUnpickler error:"
    boilerplate = ("Weights only load failed", "(1)", "(2)", "Check the documentation")
    for line in str(err).splitlines():
        line = line.split(marker, 1)[-1].strip()
        if line and not line.startswith(boilerplate) and not line.endswith(marker):
            return line.split(" Please use `torch.serialization", 1)[0]
    return type(err).__name__


_SKIP = object()  # marks a value with no JSON form


def _jsonable(obj: Any) -> Any:
    """A JSON-compatible copy of ``obj`` (arrays and tensors as lists), or :data:`_SKIP` if there is none."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return _jsonable(obj.tolist())
    if isinstance(obj, dict):
        items = {str(k): _jsonable(v) for k, v in obj.items() if isinstance(k, (str, int, float, bool))}
        return {k: v for k, v in items.items() if v is not _SKIP}
    if isinstance(obj, (list, tuple)):
        items = [_jsonable(v) for v in obj]
        return _SKIP if any(v is _SKIP for v in items) else items
    return _SKIP


def _require(mapping: Any, key: str, where: str, path: Path) -> Any:
    if not isinstance(mapping, dict):
        raise ModelFileError(f"brains-py checkpoint '{path}': {where} is a {type(mapping).__name__}, expected a dict")
    if key not in mapping:
        raise ModelFileError(f"brains-py checkpoint '{path}': {where} has no key '{key}' (keys: {sorted(map(str, mapping))})")
    return mapping[key]


def _float_array(value: Any, what: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"brains-py checkpoint '{path}': {what} is not numeric ({err})") from None


def _single_float(value: Any, what: str, path: Path) -> float:
    array = _float_array(value, what, path).reshape(-1)
    if array.size != 1:
        raise ModelFileError(f"brains-py checkpoint '{path}': {what} must be one number (one output), got {array.tolist()}")
    return float(array[0])


def load_brainspy_checkpoint(path: str | Path) -> SurrogateModel:
    """Import a brains-py surrogate checkpoint (``training_data.pt``) without running pickled code.

    The file is a ``torch.save``\\ d dict ``{"model_state_dict": ..., "info": ...}``;
    ``info["model_structure"]`` gives ``hidden_sizes``, ``activation`` (and
    optionally ``D_in``, ``D_out`` = 1), ``info["electrode_info"]`` the
    activation electrodes' ``voltage_ranges`` ``(n, 2)`` V and the output's
    ``amplification`` and ``clipping_value`` ``[low, high]`` nA (optional).

    The result reproduces brains-py's surrogate output without noise or
    clipping, ``raw_model(v) * amplification`` nA, on raw volts: input
    offset 0 and scale 1, output offset 0 and output scale = amplification
    (brains-py applies the amplification after its network, and its clipping
    values are in those amplified units). Electrodes are named ``e0`` ..
    ``e{n-1}``, the readout ``out``; the JSON-serialisable part of ``info``
    is kept in ``info.provenance["brainspy_info"]``.

    Raises
    ------
    ModelFileError
        Naming the file and the problem: not a torch checkpoint, a pickle that
        needs objects other than tensors, containers and plain numpy arrays
        (refused unexecuted), missing keys, unsupported activation, or
        tensors whose names or shapes do not fit the declared structure.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"brains-py checkpoint '{path}' does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelFileError(
            f"brains-py checkpoint '{path}' cannot be read safely as tensors and plain data "
            f"(torch.load with weights_only=True; nothing in it was run): {_short_reason(err)}"
        ) from None
    except Exception as err:  # torch raises many types for foreign files; none may escape unexplained
        detail = f": {_short_reason(err)}" if str(err) else " (empty or truncated file)"
        raise ModelFileError(f"'{path}' is not a readable PyTorch checkpoint: {type(err).__name__}{detail}") from None

    state = _require(checkpoint, "model_state_dict", "the checkpoint", path)
    info = _require(checkpoint, "info", "the checkpoint", path)
    structure = _require(info, "model_structure", "info", path)
    electrode_info = _require(info, "electrode_info", "info", path)
    activation_electrodes = _require(electrode_info, "activation_electrodes", "info['electrode_info']", path)
    output_electrodes = _require(electrode_info, "output_electrodes", "info['electrode_info']", path)

    hidden_sizes = _require(structure, "hidden_sizes", "model_structure", path)
    activation = _require(structure, "activation", "model_structure", path)
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ModelFileError(
            f"brains-py checkpoint '{path}': activation {activation!r} is not supported (supported: {sorted(ACTIVATIONS)})"
        )
    voltage_ranges = _require(activation_electrodes, "voltage_ranges", "activation_electrodes", path)
    ranges = _float_array(voltage_ranges, "voltage_ranges", path)
    if ranges.ndim != 2 or ranges.shape[1] != 2:
        raise ModelFileError(f"brains-py checkpoint '{path}': voltage_ranges must have shape (n, 2), got {ranges.shape}")
    n = len(ranges)
    if structure.get("D_in", n) != n:
        raise ModelFileError(f"brains-py checkpoint '{path}': model_structure D_in={structure['D_in']} but {n} voltage ranges")
    if structure.get("D_out", 1) != 1:
        raise ModelFileError(f"brains-py checkpoint '{path}': D_out={structure['D_out']}; only one output is supported")
    amplification = _single_float(_require(output_electrodes, "amplification", "output_electrodes", path), "amplification", path)
    clipping = output_electrodes.get("clipping_value")
    if clipping is not None:
        clipping = _float_array(clipping, "clipping_value", path).reshape(-1).tolist()

    try:
        hidden = checked_hidden_sizes(hidden_sizes)
    except ValueError as err:
        raise ModelFileError(f"brains-py checkpoint '{path}': invalid model_structure: {err}") from None
    try:
        device_info = DeviceInfo(
            electrode_names=[f"e{k}" for k in range(n)],
            readout_name="out",
            voltage_ranges_v=[tuple(row) for row in ranges.tolist()],
            amplification=amplification,
            output_clipping_na=clipping,
            provenance={
                "source": "brains-py checkpoint",
                "file": str(path.resolve()),
                "imported": _now_iso(),
                "package_version": inmaterio.__version__,
                "brainspy_info": _jsonable(info),
            },
        )
    except ValidationError as err:
        raise ModelFileError(f"brains-py checkpoint '{path}': invalid electrode info: {_validation_summary(err)}") from None

    if not isinstance(state, dict):
        raise ModelFileError(f"brains-py checkpoint '{path}': model_state_dict is a {type(state).__name__}, expected a dict")
    tensors: dict[str, Any] = {}
    for key, value in state.items():
        match = _BRAINSPY_KEY.match(str(key))
        if match:
            tensors[f"mlp.{match.group(1)}"] = value
        elif str(key) not in _BRAINSPY_EFFECT_BUFFERS:
            raise ModelFileError(
                f"brains-py checkpoint '{path}': unexpected state-dict key '{key}' (expected 'model.<i>.weight' / '.bias')"
            )
    # brains-py's network works on raw volts and its output is multiplied by the amplification
    tensors.update(
        input_offset=torch.zeros(n), input_scale=torch.ones(n),
        output_offset=torch.tensor(0.0), output_scale=torch.tensor(amplification, dtype=torch.float32),
    )  # fmt: skip
    architecture = {"hidden_sizes": list(hidden), "activation": activation, "n_inputs": n}
    _check_tensors(tensors, n, hidden, architecture, path)
    model = SurrogateModel(device_info, hidden, activation)
    model.load_state_dict({key: tensors[key].to(torch.float32) for key in model.state_dict()})
    check_plausible(model, path)
    return model


# --- the bundled default surrogate --------------------------------------------------------------


def default_model_dir() -> Path:
    """Directory of the bundled default surrogate: ``<package>/models/default``."""
    return Path(inmaterio.__file__).parent / "models" / "default"


def load_default_surrogate() -> SurrogateModel:
    """Load the bundled default surrogate (generated by the SMG pipeline from the virtual DNPU).

    Raises
    ------
    ModelFileError
        If it has not been generated yet, or is unreadable.
    """
    directory = default_model_dir()
    if not (directory / MODEL_FILE).is_file():
        raise ModelFileError(
            f"no default surrogate is installed in '{directory}': it is generated by the surrogate-model "
            "generation (SMG) pipeline, inmaterio.smg, and saved there with save_surrogate; until then load "
            "a surrogate of your own with load_surrogate(path)"
        )
    return load_surrogate(directory)
