"""Reward functions by name: built-ins, ``module:function`` paths, ``file.py:function`` and plugins.

A spec is one of:

- a name: a built-in (``safealign reward list``), a plugin name registered under the entry-point
  group ``safealign.rewards``, ``my_pkg.rewards:fn`` or ``path/to/file.py:fn``;
- a mapping for one component (``reward``, ``args``, ``weight``, ``transform``, ``normalize``, ``name``);
- a mapping with ``components:`` (a list of such mappings) and optional ``normalize`` and ``name``,
  or a bare list of components: a :class:`~reward.composite.CompositeReward`;
- a path to a YAML file holding one of the above (plugin files are found relative to it).

The named object is loaded only when a spec names it. A class is instantiated with ``args``; a function
is called with ``args`` as extra keyword arguments on every call.

>>> fn = build_reward({"components": [{"reward": "non_empty", "weight": 2.0},
...                                   {"reward": "length_penalty", "args": {"max_words": 2}}]})
>>> fn(["q", "q"], ["one two three four", ""])
[1.0, 0.0]
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from alignment.config import from_dict, load_yaml
from alignment.errors import SafealignError
from reward import functions
from reward.composite import TRANSFORMS, Component, CompositeReward, RewardFn

ENTRY_POINT_GROUP = "safealign.rewards"


def _toxicity(**args: Any) -> RewardFn:
    return functions.ToxicityReward(**args)


def _non_toxic(**args: Any) -> RewardFn:
    return functions.ToxicityReward(invert=True, **args)


def _stereotype(**args: Any) -> RewardFn:
    return functions.StereotypeReward(**args)


def _anti_stereotype(**args: Any) -> RewardFn:
    return functions.StereotypeReward(invert=True, **args)


@dataclass(frozen=True)
class Builtin:
    factory: Callable[..., RewardFn]
    help: str
    plain: Callable[..., Any] | None = None  # a plain function: ``args`` are bound as keyword arguments


BUILTINS: dict[str, Builtin] = {
    "toxicity": Builtin(
        _toxicity, "toxicity in [0, 1] of the completion (args: scorer, label, include_prompt)"
    ),
    "non_toxic": Builtin(_non_toxic, "1 - toxicity (args as toxicity)"),
    "stereotype": Builtin(
        _stereotype, "P(stereotyped) from the trained classifier (args: model, include_prompt)"
    ),
    "anti_stereotype": Builtin(_anti_stereotype, "1 - P(stereotyped) (args as stereotype)"),
    "length_penalty": Builtin(
        functions.length_penalty,
        "0 up to max_words words, then -(excess / max_words)",
        functions.length_penalty,
    ),
    "non_empty": Builtin(functions.non_empty, "1 for a non-empty completion, else 0", functions.non_empty),
}


def entry_points() -> dict[str, metadata.EntryPoint]:
    """Installed plugin rewards (group ``safealign.rewards``), listed but not loaded."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def known_names() -> list[str]:
    """Built-in names followed by installed plugin names."""
    return list(BUILTINS) + sorted(set(entry_points()) - set(BUILTINS))


def _unknown(name: str) -> SafealignError:
    return SafealignError(
        f"unknown reward {name!r}; known: {', '.join(known_names())}, or name a function as "
        "'package.module:function' or 'path/to/file.py:function'"
    )


def _import_target(target: str, base_dir: Path | None) -> Any:
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise _unknown(target)
    if module_name.endswith(".py"):
        candidates = [Path(module_name)]
        if base_dir is not None and not Path(module_name).is_absolute():
            candidates.append(base_dir / module_name)
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise SafealignError(f"reward {target!r}: file {module_name} not found")
        unique = "safealign_reward_file_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(unique, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[unique] = module  # lets pickled reward objects find their class again
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(unique, None)
            raise SafealignError(
                f"reward {target!r}: importing {path} failed: {type(exc).__name__}: {exc}"
            ) from exc
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise SafealignError(
                f"reward {target!r}: cannot import {module_name!r} ({exc}); is it installed or on PYTHONPATH?"
            ) from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise SafealignError(f"reward {target!r}: module {module_name!r} has no attribute {attr!r}") from exc


def _check_named_args(fn: Callable[..., Any], args: dict[str, Any], name: str) -> None:
    """Bound ``args`` must name parameters of ``fn`` (``**kwargs`` takes TRL's columns, not options)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = [p.name for p in list(inspect.signature(fn).parameters.values())[2:] if p.kind in kinds]
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise SafealignError(
            f"reward {name!r}: bad args {unknown}; it takes {', '.join(params) or 'no arguments'}"
        )


def _instantiate(obj: Any, args: dict[str, Any], name: str) -> RewardFn:
    if inspect.isclass(obj):
        try:
            fn = obj(**args)
        except TypeError as exc:
            raise SafealignError(f"reward {name!r}: bad args {sorted(args)}: {exc}") from exc
    elif callable(obj):
        if args:
            _check_named_args(obj, args, name)
            fn = functools.update_wrapper(functools.partial(obj, **args), obj)
        else:
            fn = obj
    else:
        raise SafealignError(f"reward {name!r} is a {type(obj).__name__}, not a function or class")
    if not callable(fn):
        raise SafealignError(f"reward {name!r}: {type(fn).__name__} instances are not callable")
    return fn


def resolve_reward(name: str, args: dict[str, Any] | None = None, base_dir: Path | None = None) -> RewardFn:
    """One reward callable from a built-in name, a plugin name or a ``module:function`` path."""
    args = dict(args or {})
    name = str(name).strip()
    if name in BUILTINS:
        builtin = BUILTINS[name]
        if builtin.plain is not None:
            return _instantiate(builtin.plain, args, name)
        try:
            return builtin.factory(**args)
        except TypeError as exc:
            raise SafealignError(f"reward {name!r}: bad args {sorted(args)}: {exc}") from exc
    plugins = entry_points()
    if name in plugins:
        try:
            obj = plugins[name].load()
        except Exception as exc:
            raise SafealignError(
                f"reward plugin {name!r} ({plugins[name].value}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        return _instantiate(obj, args, name)
    if ":" in name:
        return _instantiate(_import_target(name, base_dir), args, name)
    raise _unknown(name)


@dataclass
class ComponentSpec:
    """One reward term as written in a YAML recipe."""

    reward: str = field(metadata={"help": "built-in or plugin name, 'pkg.module:fn' or 'file.py:fn'"})
    name: str | None = field(default=None, metadata={"help": "label for logging (default: the reward name)"})
    weight: float = field(default=1.0, metadata={"help": "multiplier in the weighted sum"})
    transform: str = field(default="identity", metadata={"help": f"one of {', '.join(TRANSFORMS)}"})
    normalize: bool = field(default=False, metadata={"help": "normalize with running mean/std"})
    args: dict[str, Any] = field(default_factory=dict, metadata={"help": "keyword arguments for the reward"})

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.transform!r}; known: {', '.join(TRANSFORMS)}")


@dataclass
class CompositeSpec:
    """A composite reward as written in a YAML recipe."""

    components: list[Any] = field(metadata={"help": "list of component mappings (or names)"})
    normalize: bool = field(
        default=False, metadata={"help": "normalize every component with running mean/std"}
    )
    name: str = field(default="composite", metadata={"help": "name under which trainers log the total"})


def _default_name(reward: str) -> str:
    return reward.rpartition(":")[2] or reward


def _component_spec(entry: Any, source: str) -> ComponentSpec:
    """One composite component (a reward name or a mapping with ``reward``), keys and types checked."""
    if isinstance(entry, str):
        entry = {"reward": entry}
    if not isinstance(entry, dict):
        raise SafealignError(f"{source}: expected a reward name or mapping, got {type(entry).__name__}")
    if "reward" not in entry:
        raise SafealignError(f"{source}: missing key 'reward' (the reward's name)")
    return from_dict(ComponentSpec, entry, source)


def _component(entry: Any, source: str, base_dir: Path | None) -> Component:
    spec = _component_spec(entry, source)
    try:
        fn = resolve_reward(spec.reward, spec.args, base_dir)
    except SafealignError as exc:
        raise SafealignError(f"{source}: {exc}") from exc
    return Component(
        name=spec.name or _default_name(spec.reward),
        fn=fn,
        weight=spec.weight,
        transform=spec.transform,
        normalize=spec.normalize,
        source=spec.reward,
    )


def _read_spec(spec: Any, source: str, base_dir: str | Path | None) -> tuple[str | dict, str, Path | None]:
    """``(spec, source, base_dir)`` with a YAML file read (its folder becomes the base) and a list made a
    composite: what is left is a reward name or a mapping."""
    base = Path(base_dir) if base_dir is not None else None
    if isinstance(spec, Path) or (isinstance(spec, str) and spec.strip().lower().endswith((".yaml", ".yml"))):
        path = Path(spec)
        return _read_spec(load_yaml(path), str(path), path.resolve().parent)
    if isinstance(spec, list):
        spec = {"components": spec}
    if not isinstance(spec, (str, dict)):
        raise SafealignError(
            f"{source}: a reward spec is a name, a mapping or a list, not {type(spec).__name__}"
        )
    return spec, source, base


def build_reward(spec: Any, source: str = "reward spec", base_dir: str | Path | None = None) -> RewardFn:
    """A reward callable (TRL signature) from a name, a mapping, a list or a YAML file (module doc)."""
    spec, source, base = _read_spec(spec, source, base_dir)
    if isinstance(spec, str):
        return resolve_reward(spec, base_dir=base)
    if "components" not in spec:
        component = _component(spec, source, base)
        plain = component.weight == 1.0 and component.transform == "identity" and not component.normalize
        return component.fn if plain else CompositeReward([component], name=component.name)
    composite = from_dict(CompositeSpec, spec, source)
    components = [
        _component(c, f"{source}, components[{i}]", base) for i, c in enumerate(composite.components)
    ]
    return CompositeReward(components, normalize=composite.normalize, name=composite.name)


def check_reward_spec(spec: Any, source: str = "reward spec", base_dir: str | Path | None = None) -> None:
    """Validate a reward spec (names, keys, types, plugin files) without loading any model or plugin.

    Run it where a recipe is read, so a misspelt reward fails before any work; :func:`build_reward`
    loads the rewards later.

    >>> check_reward_spec({"components": [{"reward": "non_empty"}, {"reward": "toxicty"}]}, "recipe.yaml")
    Traceback (most recent call last):
    ...
    alignment.errors.SafealignError: recipe.yaml, components[1]: unknown reward 'toxicty'; known: ...
    """
    spec, source, base = _read_spec(spec, source, base_dir)
    if isinstance(spec, str):
        _check_name(spec, source, base)
        return
    if "components" not in spec:
        entries, where_ = [spec], [source]
    else:
        composite = from_dict(CompositeSpec, spec, source)
        entries = composite.components
        where_ = [f"{source}, components[{i}]" for i in range(len(entries))]
    for entry, at in zip(entries, where_, strict=True):
        _check_name(_component_spec(entry, at).reward, at, base)


def _check_name(name: str, source: str, base_dir: Path | None) -> None:
    """A built-in, an installed plugin, an importable ``module:fn`` or an existing ``file.py:fn``."""
    name = str(name).strip()
    if name in BUILTINS or name in entry_points():
        return
    module_name, _, attr = name.rpartition(":")
    if not module_name or not attr:
        raise SafealignError(f"{source}: {_unknown(name)}")
    if module_name.endswith(".py"):
        candidates = [Path(module_name)]
        if base_dir is not None and not Path(module_name).is_absolute():
            candidates.append(base_dir / module_name)
        if not any(p.is_file() for p in candidates):
            raise SafealignError(f"{source}: reward {name!r}: file {module_name} not found")
        return
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise SafealignError(
            f"{source}: reward {name!r}: cannot find module {module_name!r}; "
            "is it installed or on PYTHONPATH?"
        )
