"""Checkpoint and resume of every rank's training state, all or nothing.

::

    dlion.checkpoint.save(d, step, model=model, optimizer=opt, data=shard, extra={"x": arr})
    ...
    ckpt = dlion.checkpoint.load(d, model=model, optimizer=opt, data=shard)  # in place
    start = ckpt.step; extra = ckpt.state["extra"]

Every keyword of :func:`save` is one state entry (see :mod:`dlion.checkpoint.entries`): an
object with ``state()`` / ``set_state(dict)``, a mapping of names to numpy arrays or scalars, or
anything with ``.variables`` (a Keras model or optimizer, ``dlion.DistributedOptimizer``),
whose variables are restored by structure (order, shape, dtype), not by Keras' auto-generated
names. An optimizer that was not built yet is built at load with the trainable variables of the
model passed in the same call.

Layout of ``directory`` (a folder every rank can read and write; across hosts, a shared
filesystem)::

    owner.json                          the job that writes here (its id, host, pid, since)
    step-00000120/rank-00000.npz ...   one file per rank (numpy arrays, no pickle)
    step-00000120/manifest.json         format, job, world size, sites, step, entries, dlion
                                        version and the sha256 of every rank's file
    latest.json                         {"step": 120, "path": "step-00000120", "job": ...}

Job identity. Every job has an id (made by rank 0 at its first save). A directory
belongs to the job that first saved into it (``owner.json``, created exclusively); another job
that saves there is refused with ``CheckpointError`` before any rank writes, unless it resumed
(:func:`load`) from that directory's checkpoints, which makes it the new owner. Every rank file
and manifest carries the job id, and :func:`load` checks each file against the manifest's
checksum, so files of two jobs can never be loaded as one checkpoint.

Protocol of :func:`save` (every rank calls it at the same step):

1. Each rank checks its arguments and encodes its file in memory; rank 0 claims the directory
   (see above). The ranks agree (an allgather):
   if any failed, or the steps or entry names differ, every rank raises ``CheckpointError``
   naming the ranks and nothing is written.
2. Rank 0 removes the manifest of an older checkpoint of the same step, if any (it is rewritten
   now, and checksums keep its old and new files apart). Each rank writes its file under a
   temporary name, flushes it to disk and renames it into place (``os.replace``): a file is
   either absent or complete. The ranks exchange whether they
   succeeded and their files' checksums; if any failed, every rank raises and ``latest.json``
   still names the previous checkpoint.
3. Rank 0 writes the manifest, then ``latest.json`` (each through a temporary file and
   ``os.replace``), then removes checkpoints beyond ``keep``: the one just written always
   stays, with the ``keep - 1`` others of the highest steps.
4. The ranks agree once more: when ``save`` returns, the checkpoint is complete on every rank.

Protocol of :func:`load`:

1. Each rank reads the manifest (format, world size) and its own file, and checks the file
   against the manifest (checksum, job, rank, step, format), then checks every target against
   the saved entries (names, kinds, number of variables, shapes, dtypes). Nothing changes.
2. The ranks agree: unless every rank passed step 1, with the same step and job, every rank
   raises ``CheckpointError`` naming the failed ranks and why, and no rank changed anything.
3. Each rank restores its targets, keeping the previous values; the ranks agree again, and if
   any failed, every rank puts its previous values back before raising. A failed load leaves
   every rank's state as it was (an optimizer that was not built stays built, with fresh slots).

A checkpoint without a manifest is incomplete and never loaded. :func:`load` refuses a
checkpoint of another format, and one written by another number of ranks (naming both) unless
``elastic`` is given.

Another world size or site layout: ``load(d, elastic="average", **targets)`` (or ``"best"``)
restores every rank to the same merged state of the saved replicas, with the residuals of peer
exchanges folded into a pending gradient and the interrupted epoch's data re-sharded; see
:mod:`dlion.checkpoint.elastic`. Each rank reads every saved rank's file (and holds them in
memory during the load). At the saved world size and sites the same call is today's exact
per-rank resume, so a supervisor restarting on whatever hosts remain always calls ``load`` the
same way. The protocol is the one above (check everything, agree, apply, agree, undo on any
failure), and the ranks also agree that their merged variables are bit-identical.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import ops, runtime
from ..errors import CheckpointError
from . import elastic as _elastic
from . import entries, files
from .elastic import ElasticReport
from .files import FORMAT, LATEST, MANIFEST

__all__ = [
    "FORMAT",
    "LATEST",
    "MANIFEST",
    "Checkpoint",
    "ElasticReport",
    "latest_step",
    "load",
    "save",
]

_job: dict[str, str] | None = None
_resumed_from: dict[str, str] = {}  # resolved directory -> id of the job this one resumed


@dataclass
class Checkpoint:
    """What :func:`load` found: the step, the manifest, and every entry's saved state (after a
    restore at another world size: the merged state of the targets, saved rank 0's of the
    others; ``ranks``: every saved rank's state; ``elastic``: what was merged and folded)."""

    step: int
    path: Path
    manifest: dict[str, Any]
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    ranks: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    elastic: ElasticReport | None = None


def save(directory: str | os.PathLike[str], step: int, *, keep: int = 3, **state: Any) -> Path:
    """Write this rank's ``state`` entries as the checkpoint of ``step``; returns its folder.

    Every rank must call it with the same step and entry names. ``keep`` checkpoints are kept:
    this one and the others of the highest steps (0 keeps all). Raises ``CheckpointError`` on
    every rank when any rank fails.
    """
    rank, size = runtime.rank(), runtime.size()
    job = _job_identity()
    error, data, root, folder = "", b"", Path(), Path()
    try:
        step, keep = _check_step(step, "save"), _check_keep(keep)
        root = Path(directory)
        folder = files.step_folder(root, step)
        arrays, flat = entries.collect(state)
        meta = {"format": FORMAT, "job": job["id"], "rank": rank, "world_size": size}
        data = files.encode_rank_file(arrays, {**meta, "step": step, "entries": flat})
        if rank == 0:
            files.ensure_dir(root)
            files.claim(root, job, _resumed_from.get(_key(root)))
    except Exception as e:  # noqa: BLE001 - every rank must learn of it, not only this one
        error = _describe(e)
    _agree(error, f"checkpoint.save step {step!r}", "save", same=(repr(step), sorted(state)))
    try:
        files.ensure_dir(folder)
        if rank == 0:  # rewriting a step: incomplete until the new manifest is in place
            (folder / MANIFEST).unlink(missing_ok=True)
        files.atomic_write(folder / files.rank_file(rank), data)
    except OSError as e:
        error = _describe(e)
    digests = _agree(error, f"checkpoint.save step {step}", "write", each=files.checksum(data))
    if rank == 0:
        manifest = {
            "format": FORMAT,
            "dlion_version": _version(),
            "job": job,
            "world_size": size,
            "sites": runtime.sites(),
            "step": step,
            "entries": flat,
            "files": {files.rank_file(r): d for r, d in enumerate(digests)},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            files.write_manifest(root, folder, manifest, keep)
        except OSError as e:
            error = _describe(e)
    _agree(error, f"checkpoint.save step {step} (manifest)", "commit")
    return folder


def latest_step(directory: str | os.PathLike[str]) -> int | None:
    """The step of the newest complete checkpoint in ``directory``, or None."""
    return files.latest(Path(directory))


def load(
    directory: str | os.PathLike[str],
    step: int | None = None,
    *,
    elastic: str | None = None,
    **targets: Any,
) -> Checkpoint:
    """Read the checkpoint of ``step`` (default: the newest) and restore ``targets`` in place.

    Each keyword names an entry given to :func:`save` and the object to restore it into (a model,
    optimizer or stateful object of the same kind); every saved entry's state is also returned
    in ``Checkpoint.state``. All or nothing: raises ``CheckpointError`` on every rank when any
    rank fails, and then no rank's state has changed.

    ``elastic``: ``None`` refuses a checkpoint of another world size; ``"average"`` (the
    weighted average of the saved replicas) or ``"best"`` (knowledge transfer's best replica)
    restores one of another world size or site layout (:mod:`dlion.checkpoint.elastic`;
    ``Checkpoint.elastic`` reports what was merged and folded). At the saved world size and
    sites every value of ``elastic`` is the exact per-rank resume.
    """
    rank, size = runtime.rank(), runtime.size()
    error, ckpt, restore, found, owner = "", None, entries.Restore(), None, None
    root = Path()
    try:
        if elastic not in (None, *_elastic.MODES):
            raise CheckpointError(
                f"checkpoint.load(elastic={elastic!r:.40}): use None, 'average' or 'best'"
            )
        root = Path(directory)
        found = files.latest(root) if step is None else _check_step(step, "load")
        if found is None:
            raise CheckpointError(f"no complete checkpoint in {root} (no {LATEST})")
        folder = files.step_folder(root, found)
        manifest = files.read_manifest(folder, size, any_size=elastic is not None)
        owner = manifest["job"]["id"]
        moved = manifest["world_size"] != size or manifest["sites"] != runtime.sites()
        if elastic is not None and moved:
            restore, ckpt = _plan_elastic(folder, manifest, elastic, targets)
        else:
            meta, arrays = files.read_rank_file(folder, manifest, rank)
            where = f"checkpoint {folder} ({files.rank_file(rank)})"
            saved = entries.saved_state(meta, arrays, where)
            restore = entries.plan(targets, meta, saved, where)
            ckpt = Checkpoint(int(manifest["step"]), folder, manifest, saved)
    except Exception as e:  # noqa: BLE001 - every rank must learn of it, not only this one
        error = _describe(e)
    what = f"checkpoint.load from {root}"
    _agree(error, what, "load", same=(found, owner))
    merged = ckpt is not None and ckpt.elastic is not None
    try:
        restore.apply()
        digest = _digest(targets) if merged else ""
    except Exception as e:  # noqa: BLE001
        error, digest = _describe(e), ""
    try:
        digests = _agree(error, f"{what} (restore)", "restore", each=digest)
        if len(set(digests)) > 1:
            raise CheckpointError(
                f"rank {rank}: {what}: the merged variables differ between the ranks "
                f"(digests {[d[:12] for d in digests]}); every rank must load the same "
                "checkpoint into the same architecture"
            )
    except CheckpointError:
        restore.undo()  # every rank puts its previous state back
        raise
    assert ckpt is not None and owner is not None  # _agree raised otherwise
    _resumed_from[_key(root)] = owner
    if merged:
        assert ckpt.elastic is not None
        if rank == 0 and not runtime.config().quiet:
            print(ckpt.elastic.summary(), file=sys.stderr, flush=True)
    elif ckpt.manifest["sites"] != runtime.sites() and rank == 0:
        warnings.warn(
            f"checkpoint {ckpt.path} was written with sites {ckpt.manifest['sites']}, this job "
            f"has {runtime.sites()}",
            stacklevel=2,
        )
    return ckpt


def _plan_elastic(
    folder: Path, manifest: dict[str, Any], mode: str, targets: dict[str, Any]
) -> tuple[entries.Restore, Checkpoint]:
    """Read every saved rank's file and plan the merged restore (changes nothing)."""
    saved_size = int(manifest["world_size"])
    metas, states, extras = [], [], []
    for r in range(saved_size):
        meta, arrays = files.read_rank_file(folder, manifest, r)
        metas.append(meta)
        states.append(
            entries.saved_state(meta, arrays, f"checkpoint {folder} ({files.rank_file(r)})")
        )
        extras.append(entries.elastic_extras(meta, arrays))
    layout = {
        "mode": mode,
        "rank": runtime.rank(),
        "size": runtime.size(),
        "sites": list(runtime.sites()),
        "saved_sites": list(manifest["sites"]),
    }
    where = f"checkpoint {folder} (restore of {saved_size} ranks on {runtime.size()})"
    restore, merged, report = _elastic.plan(targets, metas, states, extras, layout, where)
    return restore, Checkpoint(int(manifest["step"]), folder, manifest, merged, states, report)


def _digest(targets: dict[str, Any]) -> str:
    """A digest of every variables target's values (the same on every rank after a merge)."""
    h = hashlib.sha256()
    for name in sorted(targets):
        if entries.kind_of(targets[name]) == "variables":
            for v in targets[name].variables:
                h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()


def _job_identity() -> dict[str, str]:
    """This job's id (rank 0 makes it at the first save; a collective then)."""
    global _job
    if _job is None:
        mine = {
            "id": f"job-{uuid.uuid4().hex[:16]}",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _job = ops.broadcast_object(
            mine if runtime.rank() == 0 else None, 0, "dlion.checkpoint.job"
        )
    return _job


def _check_step(step: Any, what: str) -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise CheckpointError(f"checkpoint.{what}: step must be an int >= 0, got {step!r:.60}")
    return int(step)


def _check_keep(keep: Any) -> int:
    if isinstance(keep, bool) or not isinstance(keep, int | np.integer) or keep < 0:
        raise CheckpointError(
            f"keep must be an int >= 0 (0 keeps every checkpoint), got {keep!r:.60}"
        )
    return int(keep)


def _key(root: Path) -> str:
    return str(root.resolve())


def _version() -> str:
    from .. import __version__

    return __version__


def _describe(e: BaseException) -> str:
    return str(e) if isinstance(e, CheckpointError) else f"{type(e).__name__}: {e}"


def _agree(error: str, what: str, phase: str, *, same: Any = None, each: Any = None) -> list[Any]:
    """Every rank learns every rank's ``error``, ``same`` and ``each`` (an allgather named after
    the ``phase`` only, so that arguments that differ by rank are named here): all raise
    ``CheckpointError`` if any rank failed, or if ``same`` differs between ranks (the step and
    entries of a save; the step and job of the checkpoint a load found). Returns every rank's
    ``each``, in rank order."""
    records = ops.allgather_object((error, same, each), f"dlion.checkpoint.{phase}")
    bad = [(r, rec[0]) for r, rec in enumerate(records) if rec[0]]
    if bad:
        detail = "; ".join(f"rank {r}: {e}" for r, e in bad)
        raise CheckpointError(f"rank {runtime.rank()}: {what} failed on {detail}")
    differ = [r for r, rec in enumerate(records) if rec[1] != records[0][1]]
    if differ:
        detail = "; ".join(f"rank {r}: {records[r][1]!r}" for r in [0, *differ])
        raise CheckpointError(
            f"rank {runtime.rank()}: {what}: the ranks disagree ({detail}). Every rank must pass "
            "the same step and entry names, and see the same checkpoint"
        )
    return [rec[2] for rec in records]
