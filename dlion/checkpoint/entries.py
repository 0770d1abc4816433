"""Checkpoint entries: flattening them to arrays at save, and restoring them all or nothing.

An entry is one of three kinds:

* ``stateful``: anything with ``state()`` / ``set_state(dict)``;
* ``arrays``: a mapping of names to numpy arrays or Python scalars;
* ``variables``: anything with ``.variables`` (a Keras model or optimizer,
  ``dlion.DistributedOptimizer``). Variables are saved in order, each with its path, shape and
  dtype, and restored **by structure**: the i-th variable of the object takes the i-th saved
  value when the count, every shape and every dtype agree. Paths are only shown in errors, so
  Keras' auto-numbered names (``dense_3/kernel`` after a throwaway model) do not matter.

Restoring is two steps. :func:`plan` checks everything against the targets and changes nothing
(an optimizer that is not built yet is checked on a copy built from its config); the returned
:class:`Restore` then ``apply()`` s it, keeping the previous values, and can ``undo()`` it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from ..errors import CheckpointError

_SCALARS = (bool, int, float, np.generic)
_SCALAR_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool}


def kind_of(obj: Any) -> str:
    if callable(getattr(obj, "state", None)) and callable(getattr(obj, "set_state", None)):
        return "stateful"
    if isinstance(obj, Mapping):
        return "arrays"
    if hasattr(obj, "variables"):
        return "variables"
    raise CheckpointError(
        f"cannot checkpoint {type(obj).__name__}: pass an object with state()/set_state(), a "
        "dict of numpy arrays and scalars, or a Keras model or optimizer"
    )


def _dtype_name(v: Any) -> str:
    return str(getattr(v.dtype, "name", v.dtype))


def collect(state: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Flatten the entries to ``name/key`` arrays, with what is needed to check and rebuild
    them (the ``entries`` of the rank file's meta)."""
    arrays: dict[str, np.ndarray] = {}
    entries: dict[str, Any] = {}
    for name, obj in state.items():
        if "/" in name or name.startswith("__"):
            raise CheckpointError(
                f"checkpoint entry name {name!r} must not contain '/' or start with '__'"
            )
        kind = kind_of(obj)
        info: dict[str, Any] = {"kind": kind, "class": type(obj).__name__}
        if kind == "variables":
            variables = list(obj.variables)
            values = {f"{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
            info["variables"] = [
                {"path": str(getattr(v, "path", getattr(v, "name", i))), "shape": list(v.shape),
                 "dtype": _dtype_name(v)}
                for i, v in enumerate(variables)
            ]  # fmt: skip
        else:
            values = dict(obj.state() if kind == "stateful" else obj)
        scalars: dict[str, str] = {}
        for key, value in values.items():
            if not isinstance(key, str) or "/" in key:
                raise CheckpointError(
                    f"checkpoint entry {name!r}: key {key!r} must be a str without '/'"
                )
            if isinstance(value, _SCALARS):
                plain = value.item() if isinstance(value, np.generic) else value
                if type(plain).__name__ not in _SCALAR_TYPES:
                    raise CheckpointError(
                        f"checkpoint entry {name!r}: {key!r} is a {type(plain).__name__} scalar; "
                        "scalars must be int, float or bool"
                    )
                scalars[key] = type(plain).__name__
            elif not isinstance(value, np.ndarray) or value.dtype.hasobject:
                raise CheckpointError(
                    f"checkpoint entry {name!r}: {key!r} is a {type(value).__name__}"
                    f"{' of objects' if isinstance(value, np.ndarray) else ''}; values must be "
                    "numeric numpy arrays or int/float/bool"
                )
            arrays[f"{name}/{key}"] = np.asarray(value)
        extra = obj.elastic_state() if callable(getattr(obj, "elastic_state", None)) else {}
        for key, value in extra.items():  # for a restore at another world size only
            arrays[f"{name}/@{key}"] = np.asarray(value)
        if extra:
            info["elastic"] = list(extra)
        entries[name] = {**info, "keys": list(values), "scalars": scalars}
    return arrays, entries


def elastic_extras(
    meta: dict[str, Any], arrays: dict[str, np.ndarray]
) -> dict[str, dict[str, np.ndarray]]:
    """Every entry's ``elastic_state()`` arrays (not given to ``set_state``)."""
    return {
        name: {k: arrays[f"{name}/@{k}"] for k in e.get("elastic", []) if f"{name}/@{k}" in arrays}
        for name, e in meta["entries"].items()
    }


def saved_state(
    meta: dict[str, Any], arrays: dict[str, np.ndarray], where: str
) -> dict[str, dict[str, Any]]:
    """Every entry's saved values (scalars as Python scalars), checking that all are there."""
    state: dict[str, dict[str, Any]] = {}
    for name, entry in meta["entries"].items():
        values: dict[str, Any] = {}
        for key in entry["keys"]:
            if f"{name}/{key}" not in arrays:
                raise CheckpointError(f"{where}: entry {name!r} lacks {key!r}; the file is damaged")
            value = arrays[f"{name}/{key}"]
            kind = entry["scalars"].get(key)
            values[key] = _SCALAR_TYPES[kind](value) if kind else value
        state[name] = values
    return state


@dataclass
class Restore:
    """The checked restore of every target: ``apply()`` then, if needed, ``undo()``."""

    steps: list[tuple[Callable[[], None], Callable[[], None]]] = field(default_factory=list)
    _done: list[Callable[[], None]] = field(default_factory=list)

    def apply(self) -> None:
        """Do every step in order; when one raises, ``undo()`` puts back those done before."""
        for do, undo in self.steps:
            do()
            self._done.append(undo)

    def undo(self) -> None:
        """Put back what ``apply`` changed, newest first."""
        while self._done:
            self._done.pop()()


def plan(
    targets: dict[str, Any], meta: dict[str, Any], state: dict[str, dict[str, Any]], where: str
) -> Restore:
    """Check every target against this rank's saved entries; change nothing."""
    entries = meta["entries"]
    unknown = sorted(set(targets) - set(entries))
    if unknown:
        raise CheckpointError(f"{where} has no entries {unknown}; it has {sorted(entries)}")
    models = [t for t in targets.values() if hasattr(t, "layers")]  # Keras models
    restore = Restore()
    # Stateful objects first: their set_state may refuse, before any variable is assigned.
    order = sorted(targets, key=lambda n: kind_of(targets[n]) != "stateful")
    for name in order:
        obj, entry = targets[name], entries[name]
        kind = kind_of(obj)
        if kind != entry["kind"]:
            raise CheckpointError(
                f"{where}: entry {name!r} holds {entry['kind']} state, got a {type(obj).__name__}"
            )
        values = state[name]
        if kind == "stateful":
            before = obj.state()
            restore.steps.append((partial(obj.set_state, values), partial(obj.set_state, before)))
        elif kind == "arrays":
            old = dict(obj)
            restore.steps.append((partial(_replace, obj, values), partial(_replace, obj, old)))
        else:
            restore.steps.append(_variables_step(name, obj, entry, values, models, where))
    return restore


def _replace(target: Any, values: Mapping[str, Any]) -> None:
    target.clear()
    target.update(values)


def _variables_step(
    name: str,
    obj: Any,
    entry: dict[str, Any],
    values: dict[str, Any],
    models: list[Any],
    where: str,
) -> tuple[Callable[[], None], Callable[[], None]]:
    saved = entry["variables"]
    build: Callable[[], None] | None = None
    if _unbuilt_optimizer(obj):
        if not models:
            raise CheckpointError(
                f"{where}: entry {name!r}: the optimizer is not built yet; pass the model too "
                "(load(..., model=model, optimizer=opt)) or build it first"
            )
        trainable = models[0].trainable_variables
        variables = _variables_once_built(obj, trainable)
        build = lambda: obj.build(trainable)  # noqa: E731
    else:
        variables = list(obj.variables)
    _match(name, variables, saved, values, where)
    arrays = [values[f"{i:05d}"] for i in range(len(saved))]

    def do() -> None:
        if build is not None:
            build()  # the fresh variables are zeros, as if built at the first step
        for var, value in zip(obj.variables, arrays, strict=True):
            var.assign(value)

    old = [np.array(v.numpy(), copy=True) for v in variables] if build is None else None

    def undo() -> None:
        if old is not None:
            for var, value in zip(obj.variables, old, strict=True):
                var.assign(value)

    return do, undo


def _unbuilt_optimizer(obj: Any) -> bool:
    return (
        not hasattr(obj, "layers")
        and getattr(obj, "built", True) is False
        and callable(getattr(obj, "build", None))
    )


def _variables_once_built(obj: Any, trainable: list[Any]) -> list[Any]:
    """The variables an unbuilt optimizer will have, from a copy built from its config (so
    checking changes nothing); the optimizer itself only where it cannot be copied."""
    import keras

    inner = getattr(obj, "optimizer", obj)  # dlion.DistributedOptimizer wraps a Keras one
    try:
        twin = keras.optimizers.deserialize(keras.optimizers.serialize(inner))
        twin.build(trainable)
        return list(twin.variables)
    except Exception:  # noqa: BLE001 - a custom optimizer without a config: build the real one
        obj.build(trainable)
        return list(obj.variables)


def _match(
    name: str, variables: list[Any], saved: list[dict[str, Any]], values: dict[str, Any], where: str
) -> None:
    """Structure: the same number of variables, and each with the saved shape and dtype."""
    if len(variables) != len(saved):
        paths = [str(getattr(v, "path", "?")) for v in variables]
        raise CheckpointError(
            f"{where}: entry {name!r} holds {len(saved)} variables, the object has "
            f"{len(variables)} (saved: {[s['path'] for s in saved][:4]}...; here: {paths[:4]}...)"
        )
    for i, (var, s) in enumerate(zip(variables, saved, strict=True)):
        value = values[f"{i:05d}"]
        shape, dtype = tuple(var.shape), _dtype_name(var)
        if shape != tuple(s["shape"]) or shape != value.shape or dtype != s["dtype"]:
            raise CheckpointError(
                f"{where}: entry {name!r}, variable {i}: saved {s['path']!r} {s['dtype']} "
                f"{tuple(s['shape'])}, here {str(getattr(var, 'path', '?'))!r} {dtype} {shape}: "
                "not the same architecture (variables are matched in order by shape and dtype)"
            )
