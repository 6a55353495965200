"""Config dataclasses filled from a YAML recipe and overridden by command-line flags.

A command declares one or more dataclasses whose fields carry defaults and ``metadata={"help": ...}``.
:func:`parse_config` reads ``--config recipe.yaml`` (its keys must be field names), checks the YAML
values against the field types, then applies the flags that :func:`add_dataclass_flags` makes from the
same fields, so ``--config recipe.yaml --learning-rate 1e-5`` means "the recipe, with this learning
rate". Every command that takes a config dataclass gets its flags from that one helper: ``--key-name``
(or ``--key_name``), booleans as ``--flag`` / ``--flag false`` / ``--no-flag``, lists as values after
one flag.
Unknown keys and wrongly typed values stop with one line naming the file and the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from alignment.errors import SafealignError

T = TypeVar("T")


# A recipe is a few hundred values; more than this many after expanding aliases is an alias bomb.
MAX_YAML_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key that appears twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class names that problem
            if first is not None:
                problem = f"duplicate key {key!r}, first on line {first + 1}"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, source: str) -> int:
    """How many nodes ``node`` stands for once every alias is expanded; refuses recursive aliases and
    documents that expand past :data:`MAX_YAML_NODES` (an alias bomb would take hours to build)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(current: yaml.Node) -> int:
        key = id(current)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise SafealignError(f"{source}: invalid YAML (an alias refers to the node that contains it)")
        active.add(key)
        children: list[yaml.Node] = []
        if isinstance(current, yaml.SequenceNode):
            children = list(current.value)
        elif isinstance(current, yaml.MappingNode):
            children = [n for pair in current.value for n in pair]
        total = 1 + sum(size(child) for child in children)
        active.discard(key)
        if total > MAX_YAML_NODES:
            raise SafealignError(
                f"{source}: invalid YAML (aliases expand to more than {MAX_YAML_NODES:,} values)"
            )
        sizes[key] = total
        return total

    return size(node)


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document safely: no duplicate keys, no recursive or exploding aliases; every problem
    is one :class:`SafealignError` naming ``source`` (and the line).

    >>> parse_yaml("a: 1\\nb: [x, y]", "recipe.yaml")
    {'a': 1, 'b': ['x', 'y']}
    >>> parse_yaml("a: 1\\na: 2", "recipe.yaml")
    Traceback (most recent call last):
    ...
    alignment.errors.SafealignError: recipe.yaml, line 2: invalid YAML (duplicate key 'a', first on line 1)
    """
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SafealignError(f"{source}{line}: invalid YAML ({problem})") from exc
    except RecursionError as exc:
        raise SafealignError(f"{source}: invalid YAML (nested too deeply)") from exc
    finally:
        loader.dispose()


class Once(argparse.Action):
    """An option that may be given only once (``--config``): a second one would silently drop the first."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        previous = getattr(namespace, self.dest, None)
        if previous is not None and previous != self.default:
            raise SafealignError(
                f"{option_string} given twice ({previous}, {values}): pass one file and override single "
                "keys with flags"
            )
        setattr(namespace, self.dest, values)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping, with one clear error for a missing, unreadable, non-regular or empty file, bad
    YAML or a non-mapping."""
    from alignment.io import read_text_file

    path = Path(path)
    data = parse_yaml(read_text_file(path, "config file"), str(path))
    if data is None:
        raise SafealignError(f"{path}: the config file is empty; write at least one key")
    if not isinstance(data, dict):
        raise SafealignError(
            f"{path}: a config file must be a mapping of keys to values, not {type(data).__name__}"
        )
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where YAML is ambiguous.

    Ints are accepted as floats; strings that spell numbers are accepted for numeric fields
    (YAML reads ``1e-5`` as a string).

    >>> coerce("1e-5", float, "k")
    1e-05
    >>> coerce([1, 2], list[int], "k")
    [1, 2]
    >>> coerce("x", int, "recipe.yaml, key 'steps'")
    Traceback (most recent call last):
    ...
    alignment.errors.SafealignError: recipe.yaml, key 'steps': expected int, got str 'x'
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, where)
            except SafealignError as exc:
                errors.append(str(exc))
        raise SafealignError(
            errors[0] if len(errors) == 1 else f"{where}: {value!r} does not match {_type_name(tp)}"
        )
    if origin is Literal:
        if value in args:
            return value
        raise SafealignError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            if isinstance(value, str) and args:  # "a,b" shorthand for lists of strings
                value = [v.strip() for v in value.split(",") if v.strip()]
            else:
                raise SafealignError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item = args[0] if args else Any
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise SafealignError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise SafealignError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _fields(dataclass_types: tuple[type, ...]) -> dict[str, tuple[dataclasses.Field, Any]]:
    out = {}
    for dc in dataclass_types:
        hints = typing.get_type_hints(dc)
        for f in dataclasses.fields(dc):
            if f.init:
                out[f.name] = (f, hints[f.name])
    return out


def check_keys(values: dict[str, Any], dataclass_types: tuple[type, ...], source: str) -> dict[str, Any]:
    """Validate a mapping of config values (unknown keys, types) and return the coerced values."""
    fields = _fields(dataclass_types)
    checked = {}
    for key, value in values.items():
        key = str(key).replace("-", "_")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SafealignError(f"{source}: unknown key {key!r}{hint}")
        checked[key] = coerce(value, fields[key][1], f"{source}, key {key!r}")
    return checked


def _instantiate(dc: type[T], values: dict[str, Any], source: str) -> T:
    names = {f.name for f in dataclasses.fields(dc) if f.init}
    for key in names & set(values):
        value = values[key]
        if isinstance(value, float) and not math.isfinite(value):
            raise SafealignError(f"{source}, key {key!r}: expected a finite number, got {value}")
    try:
        return dc(**{k: v for k, v in values.items() if k in names})
    except (ValueError, TypeError) as exc:
        raise SafealignError(f"{source}: {exc}") from exc


def from_dict(dc: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Build one config dataclass from a mapping (a YAML section), validating keys and types."""
    return _instantiate(dc, check_keys(values, (dc,), source), source)


def parse_config(
    dataclass_types: type | tuple[type, ...],
    args: list[str] | None = None,
    prog: str | None = None,
    description: str | None = None,
) -> tuple:
    """Parse ``[--config FILE.yaml] [--field value ...]`` into instances of ``dataclass_types``.

    Precedence: field default < YAML value < command-line flag; the flags are those of
    :func:`add_dataclass_flags`. Returns a tuple with one instance per dataclass (a dataclass'
    ``__post_init__`` may validate and raise ``ValueError``, which becomes a clear one-line error).
    """
    if not isinstance(dataclass_types, tuple):
        dataclass_types = (dataclass_types,)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--config", action=Once, metavar="FILE.yaml", help="YAML recipe whose keys are the flags below"
    )
    for dataclass_type in dataclass_types:
        add_dataclass_flags(parser, dataclass_type)
    namespace = parser.parse_args(args)
    config = namespace.config
    values = check_keys(load_yaml(config), dataclass_types, config) if config else {}
    values.update(check_keys(flag_values(namespace), dataclass_types, "command line"))
    source = f"{config} + command line" if config else "command line"
    return tuple(_instantiate(dc, values, source) for dc in dataclass_types)


# ---- command-line flags generated from a config dataclass -----------------------------------------------

FLAG_PREFIX = "cfg_"  # namespace attributes of dataclass flags, so they never clash with a command's own


def parse_bool(text: str) -> bool:
    """A flag's boolean value.

    >>> parse_bool("Yes"), parse_bool("0")
    (True, False)
    """
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if text.lower() not in words:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return words[text.lower()]


class CommaList(argparse.Action):
    """The values after one flag, each also split at commas: ``--suites a b`` and ``--suites a,b`` agree."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        setattr(
            namespace,
            self.dest,
            [part.strip() for value in values for part in value.split(",") if part.strip()],
        )


def flag_kwargs(tp: Any) -> dict[str, Any]:
    """argparse settings for a field of type ``tp``: booleans take an optional value (``--flag`` alone is
    true), lists one or more values (strings also split at commas), literals their choices; other
    values are checked later.

    >>> flag_kwargs(int | None)
    {'type': <class 'int'>}
    >>> flag_kwargs(list[str])["nargs"]
    '+'
    """
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = options[0] if len(options) == 1 else str
    origin = typing.get_origin(tp)
    if tp is bool:
        return {"type": parse_bool, "nargs": "?", "const": True, "metavar": "BOOL"}
    if origin in (list, tuple):
        item = (typing.get_args(tp) or (str,))[0]
        if item in (int, float):
            return {"type": item, "nargs": "+"}
        return {"nargs": "+", "action": CommaList}
    if origin is Literal:
        return {"choices": typing.get_args(tp)}
    return {"type": tp if tp in (int, float) else str}


def add_dataclass_flags(
    parser: argparse.ArgumentParser, dataclass_type: type, skip: tuple[str, ...] = ()
) -> None:
    """One flag per dataclass field, with the field's help and default: ``--field-name`` (``--field_name``
    works too, as the recipe key is spelled); a boolean also gets ``--no-field-name``. Unset flags stay
    out of the namespace (see :func:`flag_values`), so they never override a recipe's values."""
    hints = typing.get_type_hints(dataclass_type)
    for f in dataclasses.fields(dataclass_type):
        if f.name in skip or not f.init:
            continue
        dashed = f.name.replace("_", "-")
        names = [f"--{dashed}"] + ([f"--{f.name}"] if dashed != f.name else [])
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = f" (default: {default})" if default not in (None, "") else ""
        kwargs = flag_kwargs(hints[f.name])
        kwargs.setdefault("metavar", f.name.upper())
        dest = FLAG_PREFIX + f.name
        help_text = (f.metadata.get("help") or "") + shown
        parser.add_argument(*names, dest=dest, default=argparse.SUPPRESS, help=help_text, **kwargs)
        if kwargs.get("type") is parse_bool:
            negated = [f"--no-{dashed}"] + ([f"--no_{f.name}"] if dashed != f.name else [])
            parser.add_argument(
                *negated,
                dest=dest,
                action="store_const",
                const=False,
                default=argparse.SUPPRESS,
                help=f"the same as --{dashed} false",
            )


def flag_values(namespace: argparse.Namespace) -> dict[str, Any]:
    """The dataclass fields set by flags of :func:`add_dataclass_flags`, by field name."""
    return {k[len(FLAG_PREFIX) :]: v for k, v in vars(namespace).items() if k.startswith(FLAG_PREFIX)}


def config_from_args(dataclass_type: type[T], args: argparse.Namespace, **fixed: Any) -> T:
    """Defaults < ``--config`` YAML < flags < ``fixed``, validated by :func:`from_dict`."""
    values = load_yaml(args.config) if getattr(args, "config", None) else {}
    flags = flag_values(args)
    source = f"{args.config} + command line" if getattr(args, "config", None) else "command line"
    return from_dict(dataclass_type, {**values, **flags, **fixed}, source)
