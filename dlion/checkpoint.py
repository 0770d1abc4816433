"""Checkpoint and resume of every rank's training state.

::

    dlion.checkpoint.save(d, step, model=model, optimizer=opt, data=shard, extra={"x": arr})
    ...
    ckpt = dlion.checkpoint.load(d, model=model, optimizer=opt, data=shard)  # in place
    start = ckpt.step; extra = ckpt.state["extra"]

Every keyword of :func:`save` is one state entry, of one of these kinds:

* anything with ``state()`` / ``set_state(dict)`` (``dlion.data.ShardIterator``, ...): its state
  dict;
* a mapping of names to numpy arrays or Python scalars (``int``, ``float``, ``bool``);
* anything with ``.variables`` (a Keras model, a Keras optimizer, ``dlion.DistributedOptimizer``):
  the value of every variable, by path (optimizer slots, iteration count and learning rate
  included). An optimizer that was not built yet is built at load with the trainable variables
  of the model passed in the same call.

Layout of ``directory`` (a folder every rank can read and write; across hosts, a shared
filesystem)::

    step-00000120/rank-00000.npz ...   one file per rank (numpy arrays, no pickle)
    step-00000120/manifest.json         world size, sites, step, entries, dlion version
    latest.json                         {"step": 120, "path": "step-00000120"}

Protocol of :func:`save` (every rank calls it at the same step):

1. Each rank writes its file under a temporary name, flushes it to disk and renames it into
   place (``os.replace``): a file is either absent or complete.
2. The ranks exchange whether they succeeded (an allgather, so also a barrier); if any failed,
   every rank raises ``CheckpointError`` naming it and ``latest.json`` still names the previous
   checkpoint.
3. Rank 0 writes the manifest, then ``latest.json`` (each through a temporary file and
   ``os.replace``), then removes checkpoints older than the ``keep`` newest.
4. A barrier: when ``save`` returns, the checkpoint is complete on every rank.

A checkpoint without a manifest is incomplete and never loaded. :func:`load` refuses a
checkpoint written by another number of ranks (``CheckpointError`` naming both).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import ops, runtime
from .errors import CheckpointError

FORMAT = 1
LATEST = "latest.json"
MANIFEST = "manifest.json"
_META = "__meta__"
_SCALARS = (bool, int, float, np.generic)


@dataclass
class Checkpoint:
    """What :func:`load` found: the step, the manifest, and every entry's saved state."""

    step: int
    path: Path
    manifest: dict[str, Any]
    state: dict[str, dict[str, Any]] = field(default_factory=dict)


def save(directory: str | os.PathLike[str], step: int, *, keep: int = 3, **state: Any) -> Path:
    """Write this rank's ``state`` entries as the checkpoint of ``step``; returns its folder.

    Every rank must call it with the same step and entry names. ``keep`` newest checkpoints are
    kept (0 keeps all).
    """
    if not isinstance(step, int | np.integer) or step < 0:
        raise CheckpointError(f"checkpoint step must be an int >= 0, got {step!r}")
    if keep < 0:
        raise CheckpointError(f"keep must be >= 0 (0 keeps every checkpoint), got {keep}")
    root = Path(directory)
    folder = root / f"step-{int(step):08d}"
    rank, size = runtime.rank(), runtime.size()
    arrays, meta = _collect(state)
    meta.update(rank=rank, world_size=size, step=int(step))
    error = ""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        arrays[_META] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        _atomic_write(folder / _rank_file(rank), lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    _agree(error, f"checkpoint.save step {step}")
    if rank == 0:
        try:
            _commit(root, folder, int(step), size, meta["entries"], keep)
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
    _agree(error, f"checkpoint.save step {step} (manifest)")
    return folder


def _commit(
    root: Path, folder: Path, step: int, size: int, entries: dict[str, Any], keep: int
) -> None:
    """Rank 0, after every rank wrote its file: the manifest, then latest.json, then pruning."""
    manifest = {
        "format": FORMAT,
        "dlion_version": _version(),
        "world_size": size,
        "sites": runtime.sites(),
        "step": step,
        "entries": entries,
        "files": [_rank_file(r) for r in range(size)],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _atomic_write(folder / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    latest = {"step": step, "path": folder.name}
    _atomic_write(root / LATEST, lambda f: f.write(json.dumps(latest).encode()))
    _prune(root, keep)


def latest_step(directory: str | os.PathLike[str]) -> int | None:
    """The step of the newest complete checkpoint in ``directory``, or None."""
    path = Path(directory) / LATEST
    if not path.exists():
        return None
    return int(json.loads(path.read_text())["step"])


def load(directory: str | os.PathLike[str], step: int | None = None, **targets: Any) -> Checkpoint:
    """Read the checkpoint of ``step`` (default: the newest) and restore ``targets`` in place.

    Each keyword names an entry given to :func:`save` and the object to restore it into (a model,
    optimizer or stateful object of the same kind); every saved entry's state is also returned
    in ``Checkpoint.state``. Raises ``CheckpointError`` on every rank when any rank fails.
    """
    root = Path(directory)
    error, ckpt = "", None
    try:
        ckpt = _read(root, step)
        _restore(ckpt, targets)
    except Exception as e:  # noqa: BLE001 - every rank must learn of it, not only this one
        error = str(e) if isinstance(e, CheckpointError) else f"{type(e).__name__}: {e}"
    _agree(error, f"checkpoint.load from {root}")
    assert ckpt is not None  # _agree raised otherwise
    return ckpt


def _rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.npz"


def _version() -> str:
    from . import __version__

    return __version__


def _agree(error: str, what: str) -> None:
    """Every rank learns every rank's error; all raise if any failed."""
    errors = ops.allgather_object(error, f"{what}.agree")
    bad = [(r, e) for r, e in enumerate(errors) if e]
    if bad:
        detail = "; ".join(f"rank {r}: {e}" for r, e in bad)
        raise CheckpointError(f"rank {runtime.rank()}: {what} failed on {detail}")


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _prune(root: Path, keep: int) -> None:
    if keep == 0:
        return
    done = sorted(p for p in root.glob("step-*") if (p / MANIFEST).exists())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _kind(obj: Any) -> str:
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


def _collect(state: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Flatten the entries to ``name/key`` arrays, with what is needed to rebuild them."""
    arrays: dict[str, np.ndarray] = {}
    entries: dict[str, Any] = {}
    for name, obj in state.items():
        if "/" in name or name == _META:
            raise CheckpointError(f"checkpoint entry name {name!r} must not contain '/'")
        kind = _kind(obj)
        if kind == "variables":
            variables = list(obj.variables)
            values = {str(v.path): np.asarray(v.numpy()) for v in variables}
            if len(values) != len(variables):
                values = {f"{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
        else:
            values = dict(obj.state() if kind == "stateful" else obj)
        scalars: dict[str, str] = {}
        for key, value in values.items():
            if isinstance(value, _SCALARS):
                scalars[key] = type(
                    value.item() if isinstance(value, np.generic) else value
                ).__name__
            elif not isinstance(value, np.ndarray):
                raise CheckpointError(
                    f"checkpoint entry {name!r}: {key!r} is a {type(value).__name__}; values "
                    "must be numpy arrays or int/float/bool"
                )
            arrays[f"{name}/{key}"] = np.asarray(value)
        entries[name] = {"kind": kind, "keys": list(values), "scalars": scalars}
    return arrays, {"entries": entries}


def _read(root: Path, step: int | None) -> Checkpoint:
    if step is None:
        step = latest_step(root)
        if step is None:
            raise CheckpointError(f"no complete checkpoint in {root} (no {LATEST})")
    folder = root / f"step-{int(step):08d}"
    if not (folder / MANIFEST).exists():
        raise CheckpointError(f"{folder} is not a complete checkpoint (no {MANIFEST})")
    manifest = json.loads((folder / MANIFEST).read_text())
    size, rank = runtime.size(), runtime.rank()
    if manifest["world_size"] != size:
        raise CheckpointError(
            f"the checkpoint {folder} was written by {manifest['world_size']} ranks, this job "
            f"has {size}: resume with {manifest['world_size']} ranks (re-sharding a checkpoint "
            "to another world size is not supported)"
        )
    if manifest["sites"] != runtime.sites() and rank == 0:
        warnings.warn(
            f"checkpoint {folder} was written with sites {manifest['sites']}, this job has "
            f"{runtime.sites()}",
            stacklevel=3,
        )
    with np.load(folder / _rank_file(rank), allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    meta = json.loads(data.pop(_META).tobytes())
    if meta["step"] != manifest["step"] or meta["rank"] != rank:
        raise CheckpointError(f"{folder / _rank_file(rank)} is not rank {rank}'s file of it")
    state: dict[str, dict[str, Any]] = {}
    for name, entry in meta["entries"].items():
        values: dict[str, Any] = {}
        for key in entry["keys"]:
            value = data[f"{name}/{key}"]
            kind = entry["scalars"].get(key)
            values[key] = {"int": int, "float": float, "bool": bool}[kind](value) if kind else value
        state[name] = values
    return Checkpoint(int(manifest["step"]), folder, manifest, state)


def _restore(ckpt: Checkpoint, targets: dict[str, Any]) -> None:
    entries = ckpt.manifest["entries"]
    unknown = sorted(set(targets) - set(entries))
    if unknown:
        raise CheckpointError(
            f"checkpoint {ckpt.path} has no entries {unknown}; it has {sorted(entries)}"
        )
    models = [t for t in targets.values() if hasattr(t, "layers")]  # Keras models
    for name, obj in targets.items():
        kind = _kind(obj)
        if kind != entries[name]["kind"]:
            raise CheckpointError(
                f"checkpoint entry {name!r} holds {entries[name]['kind']} state, got a "
                f"{type(obj).__name__}"
            )
        values = ckpt.state[name]
        if kind == "stateful":
            obj.set_state(values)
        elif kind == "arrays":
            obj.clear()
            obj.update(values)
        else:
            _assign(name, obj, values, models)


def _assign(name: str, obj: Any, values: dict[str, Any], models: list[Any]) -> None:
    unbuilt_optimizer = not hasattr(obj, "layers") and getattr(obj, "built", True) is False
    if unbuilt_optimizer and callable(getattr(obj, "build", None)):
        if not models:
            raise CheckpointError(
                f"checkpoint entry {name!r}: the optimizer is not built yet; pass the model too "
                "(load(..., model=model, optimizer=opt)) or build it first"
            )
        obj.build(models[0].trainable_variables)
    variables = list(obj.variables)
    by_path = {str(v.path): v for v in variables}
    if len(by_path) == len(variables) == len(values) and set(by_path) == set(values):
        pairs = [(by_path[k], values[k]) for k in values]
    elif len(variables) == len(values) and all(k.isdigit() for k in values):
        pairs = [(variables[int(k)], values[k]) for k in values]
    else:
        missing = sorted(set(values) - set(by_path))[:3]
        extra = sorted(set(by_path) - set(values))[:3]
        raise CheckpointError(
            f"checkpoint entry {name!r} holds {len(values)} variables, the object has "
            f"{len(variables)} (saved but not here: {missing}; here but not saved: {extra})"
        )
    for var, value in pairs:
        if tuple(var.shape) != value.shape:
            raise CheckpointError(
                f"checkpoint entry {name!r}: {var.path} has shape {tuple(var.shape)}, the "
                f"checkpoint {value.shape}"
            )
        var.assign(value)
