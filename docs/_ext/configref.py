"""Generate the configuration reference and the file-format reference from the package, at every build.

Two pages are written into ``docs/reference/`` when the builder starts (git-ignored by ``docs/.gitignore``, like
the API pages of ``_ext/apigen.py``; a page is rewritten only when its text changed):

``config.rst``
    Every task type registered in :data:`inmaterio.tasks.registry.TASKS` with every field of its config
    model, recursively: the dotted path (as written in the YAML file), the type, the default, the
    constraints (``ge``/``gt``/``le``/``lt``, lengths, ``Literal`` choices) and the description. A
    description is the field's ``description=`` if it has one, else the ``name : meaning`` (numpy style)
    or ``name: meaning`` (Google style ``Attributes:``) line of the class docstring (or of a base class),
    which is how the project documents config fields. A nested model used in one place only is listed
    inline (``task.gd.epochs``); one used in several places, or one of several alternatives (a union such
    as the device specs), is documented once under *Settings blocks* and linked.
``file_formats.rst``
    The files inmaterio writes (run folders, checkpoints, surrogate models, datasets, circuit parameter
    files, measurement files): a table of their keys, from :data:`FORMATS` below. Only where a pydantic
    model defines a file's content (the ``info`` of a surrogate's ``model.json``: :class:`DeviceInfo`) is a
    JSON schema emitted; the other formats are described, not given an invented schema.

The JSON schemas (``model_json_schema()``) of every task config and of those file parts go to
``docs/reference/schemas/`` and are linked as downloads.

``tests/test_docs_config_reference.py`` calls :func:`config_reference` and :func:`config_page` directly (no
Sphinx build) to check that every registered task type and every field is covered.
"""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = [
    "FieldDoc",
    "FileFormat",
    "FORMATS",
    "Section",
    "ConfigReference",
    "config_reference",
    "config_page",
    "docstring_fields",
    "file_formats_page",
    "schemas",
    "write_reference",
]

REFERENCE_DIR = "reference"
SCHEMA_DIR = "schemas"


# --- what a page lists -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldDoc:
    """One row of a field table.

    owner, name : the model and the name of the field.
    path : where it is written in the YAML file, relative to the section (``task.gd.epochs``; an item of a
        list of models is ``name[].field``).
    type : the annotation, readable (``int | None``).
    default : YAML (flow style), ``required``, or :data:`ALL_DEFAULTS` for a nested model left at its defaults.
    constraints, description : reST.
    links : the block models the field refers to (documented in their own section).
    """

    owner: type[BaseModel]
    name: str
    path: str
    type: str
    default: str
    constraints: str
    description: str
    links: tuple[type[BaseModel], ...] = ()


@dataclass
class Section:
    """A task type (``key`` = the type) or a settings block (``key`` = the model's qualified name) and its rows."""

    key: str
    title: str
    model: type[BaseModel]
    rows: list[FieldDoc] = field(default_factory=list)
    used_by: list[tuple[str, str]] = field(default_factory=list)  # (section key, path) of the fields that refer to it


@dataclass
class ConfigReference:
    """The task sections (in registry order) and the settings blocks (sorted by name)."""

    tasks: list[Section]
    blocks: list[Section]


# --- types, defaults, constraints ---------------------------------------------------------------------------


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (through unions, ``Optional``, containers, ``Annotated``)."""
    if _is_model(annotation):
        return [annotation]
    if get_origin(annotation) is Literal:
        return []
    out: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        for model in models_in(arg):
            if model not in out:
                out.append(model)
    return out


def _strip(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and without ``None`` in a union (``X | None`` -> ``X``)."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _strip(args[0])
    return annotation


def type_name(annotation: Any) -> str:
    """A readable name of a type annotation: ``int``, ``list[str]``, ``GDConfig | None``."""
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Any:
        return "any"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_name(args[0])
    if origin is Literal:
        kinds = []
        for value in args:
            kind = "None" if value is None else type(value).__name__
            if kind not in kinds:
                kinds.append(kind)
        return " | ".join(kinds)
    if origin in (Union, types.UnionType):
        parts: list[str] = []
        for arg in args:
            name = type_name(arg)
            if name not in parts:
                parts.append(name)
        return " | ".join(parts)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin).replace("typing.", ""))
        if not args:
            return name
        return f"{name}[{', '.join('...' if a is Ellipsis else type_name(a) for a in args)}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _yaml(value: Any, limit: int = 90) -> str:
    """``value`` as it is written in a YAML file (flow style), shortened to ``limit`` characters."""
    from pydantic_core import to_jsonable_python

    try:
        plain = to_jsonable_python(value)
        text = yaml.safe_dump(plain, default_flow_style=True, width=10**6, sort_keys=False).strip()
    except Exception:  # noqa: BLE001 - a value YAML cannot show is shown as Python shows it
        text = repr(value)
    text = text.removesuffix("...").strip()
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _discriminators(value: BaseModel) -> dict[str, Any]:
    """The fields of ``value`` whose type is a one-value ``Literal`` (``type: hopping``, ``kind: soft_bounds``)."""
    out = {}
    for name, info in type(value).model_fields.items():
        stripped = _strip(info.annotation)
        if get_origin(stripped) is Literal and len(get_args(stripped)) == 1:
            out[name] = getattr(value, name)
    return out


def _show_default(value: Any) -> str:
    if isinstance(value, BaseModel):
        changed = {**_discriminators(value), **value.model_dump(mode="json", exclude_defaults=True)}
        return _yaml(changed) if changed else ALL_DEFAULTS
    return _yaml(value)


_MISSING = object()
#: The default shown for a nested model whose every field keeps its default.
ALL_DEFAULTS = "its defaults"


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("multiple_of", "multiple of"),
           ("min_length", "length >="), ("max_length", "length <="), ("pattern", "matches"))  # fmt: skip


def _bounds(metadata: Iterable[Any]) -> list[str]:
    out = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            out += _bounds(item.metadata)
            continue
        for attr, word in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None and not callable(value):
                out.append(f"{word} ``{value}``" if attr == "pattern" else f"{word} {value}")
    return out


def _choices(values: tuple[Any, ...]) -> str:
    return ", ".join(f"``{_yaml(v)}``" for v in values)


def constraints(info: FieldInfo) -> list[str]:
    """The field's constraints: bounds of the value (``>= 1``), of container items (``items >= 4``), choices."""
    out = _bounds(info.metadata)
    top = _strip(info.annotation)
    if get_origin(top) is Literal:
        values = get_args(top)
        out.append(f"fixed: {_choices(values)}" if len(values) == 1 else f"one of: {_choices(values)}")

    def inner(annotation: Any, depth: int) -> None:
        origin, args = get_origin(annotation), get_args(annotation)
        if origin is Annotated:
            if depth:
                out.extend(f"items {b}" for b in _bounds(args[1:]))
            inner(args[0], depth)
        elif origin is Literal:
            if depth:
                out.append(f"items one of: {_choices(args)}")
        elif origin in (Union, types.UnionType):
            for arg in args:
                inner(arg, depth)
        elif origin is not None:
            for arg in args:
                if arg is not Ellipsis:
                    inner(arg, depth + 1)

    inner(info.annotation, 0)
    deduped: list[str] = []
    for item in out:
        if item not in deduped:
            deduped.append(item)
    return deduped


# --- descriptions from docstrings -----------------------------------------------------------------------------

_ENTRY = re.compile(r"^(?P<indent>\s*)(?P<names>[A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)(?: : |: )(?P<text>\S.*)$")


def docstring_fields(cls: type) -> dict[str, str]:
    """``{field name: description}`` from the ``name : meaning`` (or ``name: meaning``) lines of a class docstring.

    An entry continues on the lines indented deeper than its first line; ``a, b : meaning`` documents both
    names; ``a : meaning; b : other meaning`` on one line documents two fields.
    """
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    entries: dict[str, str] = {}
    current: list[str] | None = None
    names: list[str] = []
    indent = 0

    def close() -> None:
        if current is not None:
            text = " ".join(current)
            for name in names:
                entries.setdefault(name, text)

    for line in doc.splitlines():
        match = _ENTRY.match(line)
        if match and (current is None or len(match["indent"]) <= indent):
            close()
            indent = len(match["indent"])
            names = [n.strip() for n in match["names"].split(",")]
            current = [match["text"].strip()]
            continue
        if current is not None and line.strip() and len(line) - len(line.lstrip()) > indent:
            current.append(line.strip())
            continue
        close()
        current = None
    close()
    # "steps : iterations; average_last : the last iterations averaged" documents two fields (of a model's fields)
    fields = set(getattr(cls, "model_fields", {}))
    for name, text in list(entries.items()):
        parts = re.split(r";\s+([A-Za-z_]\w*)\s+:\s+", text)
        if len(parts) > 1 and all(other in fields for other in parts[1::2]):
            entries[name] = parts[0]
            for other, other_text in zip(parts[1::2], parts[2::2]):
                entries.setdefault(other, other_text)
    return entries


def description(model: type[BaseModel], name: str) -> str:
    """The field's ``description=``, else its entry in the docstring of the model or of a base class ('' if none)."""
    info = model.model_fields[name]
    if info.description:
        return info.description
    for cls in model.__mro__:
        if cls in (BaseModel, object) or cls.__module__.startswith("pydantic"):
            continue
        text = docstring_fields(cls).get(name)
        if text:
            return text
    return ""


def _first_sentence(cls: type) -> str:
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return doc.split("\n\n")[0].replace("\n", " ").strip()


# --- walking the models -------------------------------------------------------------------------------------


def registered_tasks() -> list[tuple[Any, type[BaseModel]]]:
    """``[(Task, config class)]`` of every task type in the registry, in registry order."""
    from inmaterio.tasks.registry import TASKS, resolve

    return [(entry, resolve(entry.config)) for entry in TASKS.values()]


def _task_variant(config: type[BaseModel], task_type: str) -> type[BaseModel] | None:
    """The model of the ``task`` field of ``config`` for ``task_type`` (one member of a union of task models)."""
    info = config.model_fields.get("task")
    if info is None:
        return None
    for model in models_in(info.annotation):
        literal = _strip(model.model_fields["type"].annotation) if "type" in model.model_fields else None
        if get_origin(literal) is Literal and task_type in get_args(literal):
            return model
    return None


def _fields(model: type[BaseModel], task_type: str | None) -> Iterator[tuple[str, FieldInfo, list[type[BaseModel]], bool]]:
    """``(name, info, models, is_union)``: the models a field holds; the root ``task`` field holds its type's model only."""
    for name, info in model.model_fields.items():
        models = models_in(info.annotation)
        if task_type is not None and name == "task":
            variant = _task_variant(model, task_type)
            if variant is not None:
                models = [variant]
                yield name, info, models, False
                continue
        yield name, info, models, len(models) > 1


def _blocks() -> set[type[BaseModel]]:
    """The models documented in a section of their own: a member of a union of models, or one that is the type of
    fields of more than one (model, field) pair."""
    parents: dict[type[BaseModel], set[tuple[type[BaseModel], str]]] = {}
    union_members: set[type[BaseModel]] = set()
    seen: set[tuple[type[BaseModel], str | None]] = set()

    def walk(model: type[BaseModel], task_type: str | None) -> None:
        if (model, task_type) in seen:
            return
        seen.add((model, task_type))
        for name, _, models, is_union in _fields(model, task_type):
            for child in models:
                parents.setdefault(child, set()).add((model, name))
                if is_union:
                    union_members.add(child)
                walk(child, None)

    for entry, config in registered_tasks():
        walk(config, entry.type)
    return union_members | {m for m, p in parents.items() if len(p) > 1}


def _is_list_of(annotation: Any) -> bool:
    origin = get_origin(_strip(annotation))
    return origin in (list, tuple, set, frozenset) or (isinstance(origin, type) and issubclass(origin, list | tuple))


def _rows(
    model: type[BaseModel],
    prefix: str,
    blocks: set[type[BaseModel]],
    parent_default: Any,
    task_type: str | None,
    refer: Any,
    stack: tuple[type[BaseModel], ...] = (),
) -> Iterator[FieldDoc]:
    for name, info, models, _ in _fields(model, task_type):
        path = prefix + name
        value = getattr(parent_default, name) if parent_default is not None else _field_default(info)
        links = tuple(m for m in models if m in blocks)
        text = description(model, name)
        if not text and len(models) == 1:
            text = _first_sentence(models[0])  # a nested model's field: what the model is
        if links:
            refer(links, path)
        yield FieldDoc(
            owner=model,
            name=name,
            path=path,
            type=type_name(info.annotation if not (task_type and name == "task") else models[0]),
            default="required" if value is _MISSING else _show_default(value),
            constraints="; ".join(constraints(info)),
            description=text,
            links=links,
        )
        inline = [m for m in models if m not in blocks and m not in stack]
        for child in inline:
            child_default = value if isinstance(value, child) else None
            child_prefix = f"{path}[]." if _is_list_of(info.annotation) else f"{path}."
            yield from _rows(child, child_prefix, blocks, child_default, None, refer, (*stack, model))


def _field_default(info: FieldInfo) -> Any:
    if info.is_required():
        return _MISSING
    if info.default_factory is not None:
        try:
            return info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return _MISSING
    return info.default


def _block_key(model: type[BaseModel]) -> str:
    return f"{model.__module__}.{model.__qualname__}"


def config_reference() -> ConfigReference:
    """Every registered task type's fields, and the settings blocks they refer to."""
    blocks = _blocks()
    block_sections: dict[type[BaseModel], Section] = {}
    current: list[str] = []

    def refer(links: tuple[type[BaseModel], ...], path: str) -> None:
        for model in links:
            section = block_sections.setdefault(model, Section(_block_key(model), model.__name__, model))
            if (current[-1], path) not in section.used_by:
                section.used_by.append((current[-1], path))

    tasks = []
    for entry, config in registered_tasks():
        current.append(entry.type)
        tasks.append(Section(entry.type, entry.type, config, list(_rows(config, "", blocks, None, entry.type, refer))))
        current.pop()
    done: set[type[BaseModel]] = set()
    while set(block_sections) - done:  # blocks refer to blocks
        for model in sorted(set(block_sections) - done, key=_block_key):
            done.add(model)
            current.append(_block_key(model))
            block_sections[model].rows = list(_rows(model, "", blocks, None, None, refer))
            current.pop()
    ordered = sorted(block_sections.values(), key=lambda s: (s.title.lower(), s.key))
    return ConfigReference(tasks, ordered)


# --- JSON schemas ---------------------------------------------------------------------------------------------


def schemas() -> dict[str, dict[str, Any]]:
    """``{file name: JSON schema}``: one per registered task type (its config class's ``model_json_schema()``,
    shared by task types that share a config class), and those of the file parts a pydantic model defines."""
    out = {f"{entry.type}.schema.json": config.model_json_schema() for entry, config in registered_tasks()}
    for fmt in FORMATS:
        for name, model in fmt.schemas.items():
            out[name] = _resolve(model).model_json_schema()
    return out


def _resolve(target: str) -> type[BaseModel]:
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


# --- reST helpers ---------------------------------------------------------------------------------------------

_LITERAL_OR_ROLE = re.compile(r"(``.+?``|:[\w:]+:`[^`]+`|`[^`]+`_?)")


def _rest_text(text: str, contexts: Iterable[str] = (), api_names: Mapping[int, str] | None = None) -> str:
    """Description text made safe inside a table cell: ``|`` and a trailing ``_`` of a word escaped outside
    literals and roles (a docstring's ``||w||`` would be a substitution, ``name_`` a reference); with
    ``api_names``, Python roles are pointed at the API reference (see :func:`_qualify_role`)."""
    parts = _LITERAL_OR_ROLE.split(text)
    for k in range(len(parts)):
        if k % 2:
            parts[k] = _qualify_role(parts[k], tuple(contexts), api_names)
            continue
        parts[k] = parts[k].replace("\\", "\\\\").replace("|", "\\|")
        parts[k] = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", parts[k])
        parts[k] = re.sub(r"(?<![\w*])\*(?=\S)(?![^*]*\*(?!\w))", r"\\*", parts[k])  # a lone * is not emphasis
    return "".join(parts)


_PY_ROLE = re.compile(r"^:(?:py:)?(class|func|meth|mod|data|attr|obj|exc):`(~?)([\w.]+?)(\(\))?`$")


def _lookup(target: str, contexts: tuple[str, ...]) -> tuple[Any, Any]:
    """``(object, its parent)`` named by ``target``, absolute (``inmaterio.x.y``) or relative to a context module;
    ``(None, None)`` when nothing matches."""
    import importlib

    candidates = [target] if target.startswith("inmaterio") else []
    candidates += [f"{context}.{target}" for context in contexts]
    for full in candidates:
        parts = full.split(".")
        for k in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:k]))
            except Exception:  # noqa: BLE001 - not a module: try a shorter prefix
                continue
            parent = None
            try:
                for name in parts[k:]:
                    parent, obj = obj, getattr(obj, name)
            except AttributeError:
                break
            return obj, parent
    return None, None


def _qualify_role(segment: str, contexts: tuple[str, ...], api_names: Mapping[int, str] | None) -> str:
    """A docstring's Python role (``:func:`train_gd```, relative to its module there) as a role to the name the API
    reference documents; a literal when that name is not documented. Unchanged without ``api_names``."""
    match = _PY_ROLE.match(segment)
    if match is None or api_names is None:
        return segment
    role, tilde, target, parens = match.groups()
    obj, parent = _lookup(target.lstrip("."), contexts)
    name = api_names.get(id(obj)) if obj is not None else None
    if name is None and parent is not None and id(parent) in api_names:  # a method or attribute of a documented class
        name = f"{api_names[id(parent)]}.{target.rsplit('.', 1)[-1]}"
    if name is not None:
        short = "~" if tilde or "." not in target else ""
        return f":py:{role}:`{short}{name}`"
    shown = target.rsplit(".", 1)[-1] if tilde else target
    return f"``{shown}{'()' if role in ('func', 'meth') or parens else ''}``"


def _contexts(model: type) -> tuple[str, ...]:
    """The modules a model's docstrings are written in (its own and its bases'): where their roles resolve."""
    out: list[str] = []
    for cls in getattr(model, "__mro__", (model,)):
        if cls.__module__.startswith("inmaterio") and cls.__module__ not in out:
            out.append(cls.__module__)
    return tuple(out)


def _literal(text: str) -> str:
    return f"``{text}``" if text else ""


def _label(key: str) -> str:
    return "configref-" + re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")


def _heading(text: str, char: str) -> list[str]:
    return [text, char * len(text), ""]


def _table(rows: list[list[str]], widths: str, header: list[str]) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", "   :class: configref", ""]
    for row in [header, *rows]:
        for k, cell in enumerate(row):
            lines.append(("   * - " if k == 0 else "     - ") + cell if cell else ("   * -" if k == 0 else "     -"))
    lines.append("")
    return lines


def _class_ref(model: type, api_names: Mapping[int, str] | None) -> str:
    name = (api_names or {}).get(id(model))
    return f":py:class:`{name}`" if name else f"``{model.__module__}.{model.__qualname__}``"


def _field_rows(
    section: Section, title_of: Mapping[type[BaseModel], Section], api_names: Mapping[int, str] | None = None
) -> list[list[str]]:
    rows = []
    for doc in section.rows:
        text = _rest_text(doc.description, _contexts(doc.owner), api_names)
        if doc.links:
            refs = []
            for model in doc.links:
                block = title_of[model]
                disc = ", ".join(f"``{k}: {_yaml(v)}``" for k, v in _literal_fields(model).items())
                refs.append(f":ref:`{block.title} <{_label(block.key)}>`" + (f" ({disc})" if disc and len(doc.links) > 1 else ""))
            lead = "One of: " if len(doc.links) > 1 else "Settings: "
            text = (text + " " if text else "") + lead + ", ".join(refs) + "."
        default = doc.default if doc.default in ("required", ALL_DEFAULTS) else _literal(doc.default)
        rows.append([_literal(doc.path), _literal(doc.type), default, doc.constraints, text])
    return rows


def _literal_fields(model: type[BaseModel]) -> dict[str, Any]:
    out = {}
    for name, info in model.model_fields.items():
        stripped = _strip(info.annotation)
        if get_origin(stripped) is Literal and len(get_args(stripped)) == 1:
            out[name] = get_args(stripped)[0]
    return out


def _speed_only(config: type[BaseModel]) -> list[str]:
    spec = getattr(config, "SPEED_ONLY", None)
    if not spec:
        return []
    if isinstance(spec, set | frozenset | list | tuple):
        return sorted(spec)
    out = []
    for key, value in spec.items():
        if value is True:
            out.append(key)
        else:
            out += [f"{key}.{sub}" for sub in sorted(value)]
    return out


_HEADER = ["field", "type", "default", "constraints", "description"]
_WIDTHS = "22 16 16 14 32"


def config_page(reference: ConfigReference | None = None, api_names: Mapping[int, str] | None = None) -> str:
    """The reST source of ``reference/config.rst``. ``api_names`` (:func:`documented_names`) maps ``id(object)`` to the
    name under which the API reference documents it, for links; without it classes are named in plain text and the
    roles of the docstrings are left as they are."""
    from inmaterio.tasks.registry import TASKS

    reference = reference or config_reference()
    title_of = {s.model: s for s in reference.blocks}
    task_title = {s.key: s for s in reference.tasks}
    lines = [".. This page is generated by docs/_ext/configref.py at every build; do not edit it.", ""]
    lines += ["=" * 23, "Configuration reference", "=" * 23, ""]
    lines += [
        "Every YAML file that ``python -m inmaterio run CONFIG.yaml`` takes is validated by the config class of its",
        "``task.type`` (the registry ``inmaterio.tasks.registry.TASKS``). This page is generated from those",
        "pydantic models at every build, so it lists exactly what the code accepts: each field by its path in the",
        "YAML file, its type, its default, its constraints and its meaning (from the field's docstring entry).",
        'Unknown keys are errors; numbers must be numbers (not ``true`` or ``"3"``), never NaN or infinite;',
        "``None`` is written ``null``. Rules between fields (a learning rate an optimiser ignores, ranges that must",
        "nest) are checked by validators and explained in the class documentation. Nested settings used in several",
        "places are documented once, under `Settings blocks`_. Each task's JSON schema",
        "(``model_json_schema()``) can be downloaded for editors and validators.",
        "",
        "*Speed-only* fields change how fast a run goes, not its result: a run may resume with other values of them",
        "(every other field is part of the run's identity; see :doc:`../howto/resume`).",
        "",
    ]
    lines += _heading("Task types", "-")
    overview = []
    for entry in TASKS.values():
        example = f"``examples/{entry.example}``" if entry.example else ""
        overview.append([f":ref:`{entry.type} <{_label('task-' + entry.type)}>`", _rest_text(entry.summary), example,
                         f":download:`schema <{SCHEMA_DIR}/{entry.type}.schema.json>`"])  # fmt: skip
    lines += _table(overview, "18 50 20 12", ["type", "what it does", "example", "JSON schema"])
    for entry in TASKS.values():
        section = task_title[entry.type]
        lines += [f".. _{_label('task-' + entry.type)}:", ""]
        lines += _heading(f"``{entry.type}``", "~")
        lines.append(_rest_text(entry.summary[:1].upper() + entry.summary[1:]) + ".")
        lines.append("")
        speed = _speed_only(section.model)
        facts = [
            f"Config class {_class_ref(section.model, api_names)}",
            f"example ``examples/{entry.example}``" if entry.example else "",
            f"JSON schema :download:`{entry.type}.schema.json <{SCHEMA_DIR}/{entry.type}.schema.json>`",
            ("speed-only fields " + ", ".join(f"``{s}``" for s in speed)) if speed else "no speed-only fields",
        ]
        lines += ["; ".join(f for f in facts if f) + ".", ""]
        lines += _table(_field_rows(section, title_of, api_names), _WIDTHS, _HEADER)
    lines += _heading("Settings blocks", "-")
    lines += ["Settings used in several places, or one of several alternatives (chosen by their ``type`` or ``kind``).",
              "Their fields are written under the path given in *used by*.", ""]  # fmt: skip
    for block in reference.blocks:
        lines += [f".. _{_label(block.key)}:", ""]
        lines += _heading(f"``{block.title}``", "~")
        first = _first_sentence(block.model)
        lines += [
            _class_ref(block.model, api_names) + (f": {_rest_text(first, _contexts(block.model), api_names)}" if first else "."),
            "",
        ]
        used = []
        for key, path in block.used_by:
            if key in task_title:
                used.append(f":ref:`{key} <{_label('task-' + key)}>` ``{path}``")
            else:
                other = next(s for s in reference.blocks if s.key == key)
                used.append(f":ref:`{other.title} <{_label(key)}>` ``{path}``")
        if used:
            lines += ["Used by " + ", ".join(used) + ".", ""]
        lines += _table(_field_rows(block, title_of, api_names), _WIDTHS, _HEADER)
    return "\n".join(lines)


# --- file formats ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileFormat:
    """A file (or folder) inmaterio writes.

    title, where : the heading and the module that reads and writes it.
    format, version : the ``format`` string and ``format_version`` recorded in the file (``version`` None where the
        file records none), as ``"module:CONSTANT"`` so the page shows the code's values.
    text : what the file is (reST).
    keys : ``(key, type, meaning)`` rows; a key ``a.b`` is nested.
    schemas : ``{schema file name: "module:Model"}`` for parts a pydantic model defines.
    """

    title: str
    where: str
    format: str | None
    version: str | None
    text: str
    keys: tuple[tuple[str, str, str], ...]
    schemas: Mapping[str, str] = field(default_factory=dict)


FORMATS: tuple[FileFormat, ...] = (
    FileFormat(
        "Run record: run.json",
        "inmaterio.runs",
        "inmaterio.runs:FORMAT",
        "inmaterio.runs:FORMAT_VERSION",
        "The record of every run folder (:mod:`inmaterio.runs`), rewritten atomically at every checkpoint and when the "
        "session ends. Readers refuse another ``format`` or ``format_version``.",
        (
            ("format", "str", "``inmaterio.run``"),
            ("format_version", "int", "1"),
            ("kind", "str", "what kind of run (``inmaterio.task.<type>`` for ``inmaterio run``, ``inmaterio.training.gd`` ...)"),
            ("package_version", "str", "the inmaterio version of the latest session"),
            ("state", "str", "``running``, ``interrupted``, ``failed`` or ``finished``"),
            ("created", "str", "ISO 8601 time (UTC) the run was created"),
            ("started", "str", "ISO 8601 time (UTC) the latest session started"),
            ("ended", "str or null", "ISO 8601 time (UTC) the latest session ended; null while running"),
            ("wall_s", "float", "wall time summed over the sessions, s"),
            ("sessions", "int", "sessions so far (1 for a run never resumed)"),
            ("fingerprint", "str", "SHA-256 (hex) of ``identity``"),
            (
                "identity",
                "object",
                "what defines the result (for a task: ``config``, the config without its speed-only "
                "fields, and what its prepare step adds); must match to resume",
            ),
            ("error", "str", "only in a ``failed`` run: the exception type and message"),
        ),
    ),
    FileFormat(
        "Checkpoint: checkpoint.pt",
        "inmaterio.runs",
        None,
        None,
        "The state a run resumes from (:meth:`inmaterio.runs.RunFolder.save_checkpoint`): a ``torch.save`` file that "
        "loads with ``torch.load(weights_only=True)`` (tensors, numbers, strings and containers only, no pickled "
        "objects). Its ``format`` is ``inmaterio.run.checkpoint`` (``inmaterio.runs.FORMAT`` + ``.checkpoint``).",
        (
            ("format", "str", "``inmaterio.run.checkpoint``"),
            ("kind", "str", "the kind of the run (a checkpoint of another kind is refused)"),
            ("package_version", "str", "the inmaterio version that wrote it"),
            (
                "state",
                "dict",
                "what the job saved: its own keys (epoch, parameters, optimiser state, random-stream "
                "positions; for studies ``{finished: {key: data}}``, one entry per finished trial)",
            ),
        ),
    ),
    FileFormat(
        "Other files of a run folder",
        "inmaterio.runs",
        None,
        None,
        "Written by :class:`inmaterio.runs.RunFolder` beside ``run.json`` (see :doc:`../concepts`).",
        (
            (
                "config.yaml",
                "YAML",
                "the validated config of the latest session; for ``inmaterio run``, a file of the "
                "task's config class (its JSON schema is on :doc:`config`)",
            ),
            (
                "metrics.json",
                "object",
                "the results of a finished run, plus ``package_version`` and ``wall_s``; tasks "
                "add ``seconds`` and ``table`` (``title``, ``columns``, ``rows``: the summary table)",
            ),
            ("history.json", "list", "one object per epoch / generation / step"),
            ("history.csv", "CSV", "the same rows as a table, columns in first-seen order"),
            (".lock", "", "held while a process works in the folder"),
        ),
    ),
    FileFormat(
        "Surrogate model: model.json and weights.safetensors",
        "inmaterio.surrogate.io",
        "inmaterio.surrogate.io:FORMAT",
        "inmaterio.surrogate.io:FORMAT_VERSION",
        "A surrogate is a folder of two files: ``weights.safetensors`` (the model's state dict, float32, no pickle) and "
        "``model.json``. Loading refuses a foreign ``format``, a newer ``format_version``, missing keys and weights "
        "whose hash, names or shapes do not match. The ``info`` object is a :class:`~inmaterio.surrogate.DeviceInfo` "
        "(its fields below; JSON schema :download:`surrogate-device-info.schema.json "
        "<schemas/surrogate-device-info.schema.json>`).",
        (
            ("format", "str", "``inmaterio-surrogate``"),
            ("format_version", "int", "1 (a reader refuses a newer version)"),
            ("package_version", "str", "the inmaterio version that wrote it"),
            ("created", "str", "ISO 8601 time of writing, UTC"),
            ("architecture.hidden_sizes", "list[int]", "widths of the hidden layers of the MLP"),
            ("architecture.activation", "str", "activation function of the hidden layers"),
            ("architecture.n_inputs", "int", "activation electrodes (inputs of the network)"),
            (
                "info",
                "object",
                "the :class:`~inmaterio.surrogate.DeviceInfo` (electrodes, voltage ranges, "
                "amplification, clipping, test RMSE, provenance)",
            ),
            ("metadata", "object", "free JSON from the caller (training summary, config ...)"),
            (
                "weights_sha256",
                "str",
                "SHA-256 (hex) of ``weights.safetensors``: a weights file and a ``model.json`` from different saves are detected",
            ),
        ),
        {"surrogate-device-info.schema.json": "inmaterio.surrogate.info:DeviceInfo"},
    ),
    FileFormat(
        "Dataset: dataset.json and data.npz",
        "inmaterio.smg.dataset",
        "inmaterio.smg.dataset:FORMAT",
        "inmaterio.smg.dataset:FORMAT_VERSION",
        "Measured (or simulated) operating points of a device, a folder of two files: ``data.npz`` (loads with "
        "``numpy.load(allow_pickle=False)``: ``voltages_v (N, n_electrodes)`` V, ``current_na (N,)`` nA, "
        "``stderr_na (N,)`` nA, float64) and ``dataset.json``.",
        (
            ("format", "str", "``inmaterio-dataset``"),
            ("format_version", "int", "1"),
            ("n_samples", "int", "N, the rows of the arrays"),
            ("n_electrodes", "int", "columns of ``voltages_v``"),
            (
                "metadata",
                "object",
                "at least ``electrode_names``, ``readout_name``, ``voltage_ranges_v``, ``device`` "
                "(the device's description), ``units``, ``inmaterio_version``, ``created_utc``; for "
                "acquired data also ``fingerprint``, ``plan_fingerprint`` and the ``sampling`` config",
            ),
        ),
    ),
    FileFormat(
        "Circuit parameters: a .safetensors file",
        "inmaterio.circuits.io",
        "inmaterio.circuits.io:FORMAT",
        None,
        "The parameters of a circuit model (:func:`inmaterio.circuits.io.save_parameters`): one safetensors file, every "
        "parameter in its physical unit (float64, siemens and volts, named ``layer.param``), and in the safetensors "
        "metadata, under the key ``inmaterio``, a JSON document. It records no ``format_version``.",
        (
            ("format", "str", "``inmaterio-circuit``"),
            ("package_version", "str", "the inmaterio version that wrote it"),
            ("created", "str", "ISO 8601 time of writing, UTC"),
            ("layers", "list", "the model's layers with their settings (``Model.describe()``)"),
            ("bounds", "object", "``{parameter: [low, high]}`` in its unit"),
            ("metadata", "object", "free JSON from the caller"),
        ),
    ),
    FileFormat(
        "Measurement file: measurements.h5",
        "inmaterio.devices.instruments.measurement_file",
        "inmaterio.devices.instruments.measurement_file:FORMAT",
        "inmaterio.devices.instruments.measurement_file:FORMAT_VERSION",
        "Every acquisition of an instrument, appended to an HDF5 file (readable with h5py alone); a new session per "
        "device object, nothing ever overwritten. Keys below are HDF5 groups, datasets and attributes.",
        (
            ("/ (attrs) format, format_version", "str, int", "``inmaterio.measurements``, 1"),
            (
                "/session_NNNN (attrs)",
                "",
                "``instrument`` (JSON: the device's description and the full instrument config), "
                "``calibration`` (JSON), ``package_version``, ``started_at`` (UTC ISO)",
            ),
            ("/session_NNNN/acquisition_NNNNNN waveform_v", "(T, n_activation)", "the waveform played, V"),
            ("/session_NNNN/acquisition_NNNNNN readout_v", "(T + latency, n_readout)", "the raw ADC reading, V"),
            ("/session_NNNN/acquisition_NNNNNN current_na", "(T, n_readout)", "latency- and offset-corrected current, nA"),
            (
                "/session_NNNN/acquisition_NNNNNN points_v, point_current_na, point_stderr_na, window_start, window_stop",
                "(B, ...)",
                "optional: the operating points and their mean currents",
            ),
            (
                "/session_NNNN/acquisition_NNNNNN (attrs)",
                "",
                "``started_at``, ``sample_rate_hz``, ``latency_samples``, ``electrodes`` and ``readouts`` (JSON lists)",
            ),
        ),
    ),
)
"""The files inmaterio writes, as the file-format page shows them."""


def _constant(target: str | None) -> Any:
    if target is None:
        return None
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def file_formats_page(api_names: Mapping[int, str] | None = None) -> str:
    """The reST source of ``reference/file_formats.rst``."""
    lines = [".. This page is generated by docs/_ext/configref.py at every build; do not edit it.", ""]
    lines += ["=" * 12, "File formats", "=" * 12, ""]
    lines += [
        "Every file inmaterio writes loads without pickle (safetensors, JSON, YAML, ``npz`` without objects, HDF5, and",
        "``torch.load(weights_only=True)`` for checkpoints), is written atomically, and records the package version.",
        "Files with a ``format`` key are refused by readers when it is foreign, and those with a ``format_version``",
        "when it is newer than the reader knows. The ``format`` strings and versions below are read from the code at",
        "build time. Only the parts a pydantic model defines have a JSON schema; the others are described here.",
        "",
    ]
    for fmt in FORMATS:
        lines += _heading(fmt.title, "-")
        facts = ["Module " + _qualify_role(f":py:mod:`{fmt.where}`", (), api_names)]
        if fmt.format is not None:
            facts.append(f"``format`` = ``{_constant(fmt.format)}``")
        if fmt.version is not None:
            facts.append(f"``format_version`` = ``{_constant(fmt.version)}``")
        lines += ["; ".join(facts) + ".", "", _rest_text(fmt.text, (), api_names), ""]
        keys = [[_literal(k), _literal(t), _rest_text(m, (), api_names)] for k, t, m in fmt.keys]
        lines += _table(keys, "30 16 54", ["key", "type", "meaning"])
        for schema_file, target in fmt.schemas.items():
            model = _resolve(target)
            section = Section(
                _block_key(model), model.__name__, model, list(_rows(model, "", set(), None, None, lambda *a: None))
            )
            lines += [
                f"Fields of {_class_ref(model, api_names)} (JSON schema :download:`{schema_file} <{SCHEMA_DIR}/{schema_file}>`):",
                "",
            ]
            lines += _table(_field_rows(section, {}, api_names), _WIDTHS, _HEADER)
    return "\n".join(lines)


# --- writing the pages ---------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    """Write ``text`` only if it changed, so an incremental build does not read the page again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def write_reference(outdir: Path, api_names: Mapping[int, str] | None = None) -> list[Path]:
    """Write ``config.rst``, ``file_formats.rst`` and ``schemas/*.schema.json`` into ``outdir``; remove stale schemas."""
    outdir = Path(outdir)
    written = [outdir / "config.rst", outdir / "file_formats.rst"]
    _write(written[0], config_page(api_names=api_names))
    _write(written[1], file_formats_page(api_names))
    schema_dir = outdir / SCHEMA_DIR
    for name, schema in schemas().items():
        path = schema_dir / name
        _write(path, json.dumps(schema, indent=2, sort_keys=False) + "\n")
        written.append(path)
    for stale in schema_dir.glob("*.schema.json"):
        if stale not in written:
            stale.unlink()
    return written


def documented_names() -> dict[int, str]:
    """``{id(object): name}`` under which the API reference (``_ext/apigen.py``) documents each public class and
    function, and each module that has a page."""
    import importlib

    import apigen

    exporters: dict[int, list[str]] = {}
    objects: dict[int, tuple[object, str]] = {}
    modules: dict[int, str] = {}
    for modname in apigen.api_modules():
        try:
            module = importlib.import_module(modname)
            names = apigen.public_names(modname)
        except Exception:  # noqa: BLE001 - apigen reports modules that cannot be imported
            continue
        modules[id(module)] = modname
        for name in names:
            obj = getattr(module, name, None)
            if apigen._directive(obj) in ("autoclass", "autofunction"):
                exporters.setdefault(id(obj), []).append(modname)
                objects[id(obj)] = (obj, name)
    names = {key: f"{apigen._home(obj, exporters[key])}.{name}" for key, (obj, name) in objects.items()}
    return {**modules, **names}


def setup(app):
    """Sphinx extension: write the pages when the builder starts."""

    def _generate(app):
        write_reference(Path(app.srcdir) / REFERENCE_DIR, documented_names())

    app.connect("builder-inited", _generate)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
