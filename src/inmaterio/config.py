"""Validated configuration: the base model and the YAML loader.

Every configuration is a pydantic model derived from :class:`StrictModel`:
unknown keys are errors, values are validated on construction and objects are
frozen (configs are data, never mutated). Each subsystem defines its own
config next to the code that uses it (``devices/hopping/config.py``,
``smg/config.py``); this module holds what they share: the base class and
:func:`load_config`, which turns a YAML file into a model and any validation
failure into a :class:`~inmaterio.errors.ConfigError` naming the field, the
value and the rule it broke.
"""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from inmaterio.errors import ConfigError

__all__ = ["StrictModel", "load_config", "read_yaml", "validate_config", "dump_config"]


def _is_number(annotation: Any) -> bool:
    """True for ``int``, ``float`` and their optional forms (``int | None``)."""
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (Union, UnionType):
        return any(a in (int, float) for a in get_args(annotation)) and all(
            a in (int, float, type(None)) for a in get_args(annotation)
        )
    return False


class StrictModel(BaseModel):
    """Base of every config: unknown keys rejected, instances immutable, no NaN or infinite numbers,
    and a number field takes a number (not ``true`` read as 1, nor the text ``"3"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(name)
                if isinstance(value, bool | str) and _is_number(field.annotation):
                    kind = "an integer" if field.annotation is int else "a number"
                    raise PydanticCustomError(
                        "number_type",
                        "expected {kind}, not {got}",
                        {"field": name, "kind": kind, "got": type(value).__name__, "value": value},
                    )
        return data


M = TypeVar("M", bound=BaseModel)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for item in err.errors():
        field = ".".join(str(p) for p in item["loc"]) or "<root>"
        value = item.get("input")
        if item["type"] == "number_type":  # raised for the whole model, about one of its fields
            ctx = item["ctx"]
            field = ".".join([*(str(p) for p in item["loc"]), ctx["field"]])
            lines.append(f"  - field '{field}' = {ctx['value']!r}: expected {ctx['kind']}, not {ctx['got']}")
        elif item["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{field}' (value {value!r}); remove it or check its spelling")
        elif item["type"] == "value_error" and isinstance(value, dict):
            # a rule across several fields of a section: its message names them; the section's dump would bury it
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  - {message}" if field == "<root>" else f"  - in '{field}': {message}")
        else:
            lines.append(f"  - field '{field}' = {value!r}: {item['msg']}")
    return "\n".join(lines)


def validate_config(model: type[M], data: Any, source: str = "<dict>") -> M:
    """Validate ``data`` (a mapping) against ``model``.

    Raises
    ------
    ConfigError
        Naming every offending field, its value and the rule it broke.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def read_yaml(path: str | Path) -> Any:
    """The content of a YAML configuration file.

    Raises
    ------
    ConfigError
        If the file is missing (or a folder), unreadable, not UTF-8 text (e.g. a binary file), or not valid YAML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file '{path}' does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"configuration file '{path}' is not UTF-8 text (bad byte at offset {err.start}); give a YAML file"
        ) from None
    except OSError as err:
        raise ConfigError(f"configuration file '{path}' cannot be read: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"configuration file '{path}' is not valid YAML: {' '.join(str(err).split())}") from None


def load_config(model: type[M], path: str | Path) -> M:
    """Read a YAML file and validate it against ``model``.

    Raises
    ------
    ConfigError
        If the file is missing, not UTF-8, not valid YAML, or does not validate.
    """
    return validate_config(model, read_yaml(path), source=str(path))


def dump_config(config: BaseModel, path: str | Path) -> None:
    """Write ``config`` as YAML (plain types only, loadable by :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
