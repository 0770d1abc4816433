"""Restoring a checkpoint at another world size or site layout (``load(..., elastic=...)``).

Decentralized replicas differ, so every rank reads **every** saved rank's file and computes
the same merged state (the same arithmetic in the same order: every rank ends identical):

* **Weights and optimizer slots** (entries with ``.variables``): each float variable is the
  weighted average ``sum_i a_i x_i`` of the saved replicas (float64, then the variable's
  dtype); ``a_i`` is rank i's batch share ``b_i / sum b`` when a :class:`dlion.DynamicBatcher`
  state is in the checkpoint, else ``1 / N``. ``elastic="best"``: ``a`` is one-hot at the
  best replica of :class:`dlion.KnowledgeTransfer`'s last scores. Variables equal on every
  saved rank are taken as they are; integer ones (``iterations``) are rank 0's, and the report
  says so when they differ.
* **Residuals** of :class:`dlion.PeerExchange` (and subclasses) and :class:`dlion.OuterSync`
  are gradient mass a sender owed its receivers. A residual ``r`` on rank ``i`` for receiver
  ``p`` (rank to rank) reaches ``p``'s aggregate as ``w_i r`` (the engine weights messages by
  the sender's share ``w_i``); a site-aware piece ``S > T`` (weight 1: the site sum is
  weighted already) reaches every rank of ``T`` at its offset of the buffer. The restored
  model is ``sum_p a_p theta_p``, so the mass it lacks is
  ``D = sum_p a_p sum_i (what i owed p)``; a pending gradient not yet sent (``pending:``, of an
  earlier elastic restore) adds ``w_i x``. ``D`` becomes a **pending gradient** of the same
  exchange on every new rank: its first exchange adds ``D`` to its buffer; the exchange combines
  the ranks' buffers with weights summing to 1, so every new replica's first aggregate carries
  exactly ``D`` (what a lossy codec drops from it goes to the new links' residuals, as usual):
  the owed mass enters the optimizer as it would have, one step late; nothing is lost.
  Exchange step counters restart at 0; link statistics are measured afresh.
* **OuterSync**: anchors, outer momentum and the results and snapshots of rounds in flight are
  averaged like the weights; the step and round counters must agree (rank 0's).
* **Data** (:class:`dlion.data.ShardIterator`): the samples each saved rank's current pass had
  left are cut into one part per new rank (:func:`dlion.data.reshard_remaining`); each new rank
  first draws its part, then its own shard's epochs: within the interrupted epoch no sample is
  skipped or drawn twice.
* :class:`dlion.DynamicBatcher` restarts with an even split (its step counters kept);
  :class:`dlion.KnowledgeTransfer` keeps rank 0's history; any other entry is restored only
  when every saved rank saved the same values (else ``CheckpointError``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from ..errors import CheckpointError
from . import entries
from .fold import fold_exchange

MODES = ("average", "best")


@dataclass
class ElasticReport:
    """What a restore at another world size did (``Checkpoint.elastic``; rank 0 prints it)."""

    saved_size: int
    size: int
    saved_sites: list[str]
    sites: list[str]
    mode: str
    weights: list[float]  # a_i: each saved replica's weight in the merged state
    shares: list[float]  # w_i: each saved rank's message weight (batch share, or 1/N)
    best_rank: int | None = None
    residual_arrays: int = 0  # saved error-feedback residuals folded (and pending gradients)
    residual_elements: int = 0
    residual_norm: float = 0.0  # L2 norm of every saved residual, all concatenated
    folded: dict[str, dict[str, float]] = field(default_factory=dict)  # entry: name: |D|
    data: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the log."""
        folded = sum(v**2 for e in self.folded.values() for v in e.values()) ** 0.5
        how = f"best replica (rank {self.best_rank})" if self.mode == "best" else "average"
        data = "; ".join(
            f"{k}: {v['remaining']} samples of the interrupted epoch re-sharded"
            for k, v in self.data.items()
        )
        return (
            f"dlion: checkpoint of {self.saved_size} ranks restored on {self.size} ({how}, "
            f"weights {[round(w, 4) for w in self.weights]}); folded {self.residual_arrays} "
            f"residual arrays ({self.residual_elements} elements, norm "
            f"{self.residual_norm:.4g}) into pending gradients of norm {folded:.4g}"
            + (f"; {data}" if data else "")
            + "".join(f"; {n}" for n in self.notes)
        )


Step = tuple[Callable[[], None], Callable[[], None]]


def _cls(obj: Any) -> set[str]:
    return {c.__name__ for c in type(obj).__mro__}


def _saved_class(entry: dict[str, Any], keys: set[str]) -> str:
    """The class an entry was saved from (recorded since this module; else by its keys)."""
    if "class" in entry:
        return str(entry["class"])
    if {"global_batch", "batches", "rates", "reference"} <= keys:
        return "DynamicBatcher"
    if {"history_best", "history_scores", "last_step"} <= keys:
        return "KnowledgeTransfer"
    return ""


def replica_weights(
    metas: list[dict[str, Any]], states: list[dict[str, dict[str, Any]]], mode: str
) -> tuple[list[float], list[float], int | None]:
    """(a, w, best): replica weights, message weights (batch shares) and the best rank."""
    n = len(states)
    shares = [1.0 / n] * n
    kinds = {name: _saved_class(e, set(e["keys"])) for name, e in metas[0]["entries"].items()}
    for name, cls in kinds.items():
        if cls == "DynamicBatcher":
            b = np.asarray(states[0][name]["batches"], np.float64).reshape(-1)
            if b.size == n and b.sum() > 0:
                shares = [float(x) for x in b / b.sum()]
    if mode == "average":
        return shares, shares, None
    for name, cls in kinds.items():
        if cls == "KnowledgeTransfer":
            best = np.asarray(states[0][name]["history_best"]).reshape(-1)
            if best.size:
                p = int(best[-1])
                return [1.0 if i == p else 0.0 for i in range(n)], shares, p
    raise CheckpointError(
        "load(elastic='best') needs the best replica by knowledge transfer's score, but the "
        f"checkpoint has no KnowledgeTransfer state with a score (entries {sorted(kinds)}): "
        "save the dlion.KnowledgeTransfer object as an entry after its first transfer, or use "
        "elastic='average'"
    )


def plan(
    targets: dict[str, Any],
    metas: list[dict[str, Any]],
    states: list[dict[str, dict[str, Any]]],
    extras: list[dict[str, dict[str, np.ndarray]]],
    layout: dict[str, Any],
    where: str,
) -> tuple[entries.Restore, dict[str, dict[str, Any]], ElasticReport]:
    """Check every target against every saved rank and compute its merged state; change
    nothing. ``layout``: mode, rank, size, sites, saved_sites."""
    names = metas[0]["entries"]
    for i, meta in enumerate(metas):
        if _structure(meta["entries"]) != _structure(names):
            raise CheckpointError(
                f"{where}: saved rank {i}'s entries differ from rank 0's (names, kinds or "
                "variables): the replicas are not of one model"
            )
    unknown = sorted(set(targets) - set(names))
    if unknown:
        raise CheckpointError(f"{where} has no entries {unknown}; it has {sorted(names)}")
    a, w, best = replica_weights(metas, states, layout["mode"])
    report = ElasticReport(
        len(states), layout["size"], layout["saved_sites"], layout["sites"], layout["mode"],
        a, w, best,
    )  # fmt: skip
    ctx = _Context(a, w, best, layout, report, where)
    models = [t for t in targets.values() if hasattr(t, "layers")]
    restore, merged = entries.Restore(), {n: dict(states[0][n]) for n in names}
    for name in sorted(targets, key=lambda n: entries.kind_of(targets[n]) != "stateful"):
        obj, entry = targets[name], names[name]
        kind = entries.kind_of(obj)
        if kind != entry["kind"]:
            raise CheckpointError(
                f"{where}: entry {name!r} holds {entry['kind']} state, got a {type(obj).__name__}"
            )
        per_rank = [s[name] for s in states]
        if kind == "variables":
            values = _merge_variables(name, entry, per_rank, ctx)
            restore.steps.append(entries._variables_step(name, obj, entry, values, models, where))
        elif kind == "arrays":
            values = _same(name, per_rank, where)
            old = dict(obj)
            restore.steps.append(
                (partial(entries._replace, obj, values), partial(entries._replace, obj, old))
            )
        else:
            try:
                values = _stateful(name, obj, per_rank, [e.get(name, {}) for e in extras], ctx)
            except KeyError as e:
                raise CheckpointError(
                    f"{where}: entry {name!r}: the saved state (of a {entry.get('class', '?')}) "
                    f"has no {e} that a {type(obj).__name__} needs"
                ) from e
            before = obj.state()
            restore.steps.append((partial(obj.set_state, values), partial(obj.set_state, before)))
        merged[name] = values
    return restore, merged, report


def _structure(meta_entries: dict[str, Any]) -> Any:
    return sorted(
        (n, e["kind"], [(v["shape"], v["dtype"]) for v in e.get("variables", [])])
        for n, e in meta_entries.items()
    )


@dataclass
class _Context:
    weights: list[float]
    shares: list[float]
    best: int | None
    layout: dict[str, Any]
    report: ElasticReport
    where: str

    def average(self, arrays: list[np.ndarray]) -> np.ndarray:
        """The weighted replica average (exact copy where all agree, or of the best)."""
        first = np.asarray(arrays[0])
        if all(np.array_equal(first, x) for x in arrays[1:]):
            return first.copy()
        if self.best is not None:
            return np.asarray(arrays[self.best]).copy()
        acc = np.zeros(first.shape, np.float64)
        for a, x in zip(self.weights, arrays, strict=True):
            acc += a * np.asarray(x, np.float64)
        return acc.astype(first.dtype)


def _merge_variables(
    name: str, entry: dict[str, Any], per_rank: list[dict[str, Any]], ctx: _Context
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, info in enumerate(entry["variables"]):
        key = f"{i:05d}"
        values = [np.asarray(s[key]) for s in per_rank]
        if values[0].dtype.kind == "f" or values[0].dtype.name == "bfloat16":
            out[key] = ctx.average(values)
            continue
        out[key] = values[0].copy()
        if not all(np.array_equal(values[0], v) for v in values[1:]):
            seen = [v.reshape(-1)[:3].tolist() for v in values]
            ctx.report.notes.append(
                f"entry {name!r}, variable {i} ({info['path']}): the saved ranks differ "
                f"({seen}); took rank 0's"
            )
    return out


def _same(name: str, per_rank: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """Rank 0's values, when every saved rank saved the same."""
    first = per_rank[0]
    for i, other in enumerate(per_rank[1:], start=1):
        differ = sorted(
            k for k in set(first) | set(other)
            if k not in first or k not in other or not np.array_equal(first[k], other[k])
        )  # fmt: skip
        if differ:
            raise CheckpointError(
                f"{where}: entry {name!r} differs between saved ranks 0 and {i} (keys "
                f"{differ[:5]}): at another world size an entry of per-rank values cannot be "
                "restored; leave it out of load() and merge the saved ranks' values "
                "(Checkpoint.ranks) yourself"
            )
    return dict(first)


def _stateful(
    name: str,
    obj: Any,
    per_rank: list[dict[str, Any]],
    extras: list[dict[str, np.ndarray]],
    ctx: _Context,
) -> dict[str, Any]:
    classes, where = _cls(obj), ctx.where
    if "ShardIterator" in classes:
        return _data(name, obj, per_rank, extras, ctx)
    if "OuterSync" in classes:
        return _outer(name, per_rank, ctx)
    if "PeerExchange" in classes:
        return _peer(name, per_rank, ctx, "")
    if "DynamicBatcher" in classes:
        new = dict(obj.state())
        if int(per_rank[0]["global_batch"]) != int(new["global_batch"]):
            raise CheckpointError(
                f"{where}: entry {name!r}: the checkpoint's global batch is "
                f"{per_rank[0]['global_batch']}, this batcher's {new['global_batch']}"
            )
        step = int(per_rank[0]["step"])
        total = sum(int(s["samples_seen"]) for s in per_rank)
        rank, size = ctx.layout["rank"], ctx.layout["size"]
        new.update(step=step, rebalances=int(per_rank[0]["rebalances"]), last_rebalance=step)
        new["samples_seen"] = total // size + (1 if rank < total % size else 0)
        split = [int(b) for b in new["batches"]]
        ctx.report.notes.append(f"{name}: even split {split}, step {step}")
        return new
    if "KnowledgeTransfer" in classes:
        return dict(per_rank[0])
    return _same(name, per_rank, where)


def _data(
    name: str,
    obj: Any,
    per_rank: list[dict[str, Any]],
    extras: list[dict[str, np.ndarray]],
    ctx: _Context,
) -> dict[str, Any]:
    from ..data import reshard_remaining

    if any("remaining" not in e for e in extras):
        raise CheckpointError(
            f"{ctx.where}: entry {name!r}: the checkpoint does not record which samples the "
            "interrupted epoch had left (written by an older dlion); resume at the saved size"
        )
    rank, size = ctx.layout["rank"], ctx.layout["size"]
    remaining = [np.asarray(e["remaining"], np.int64) for e in extras]
    try:
        parts = reshard_remaining(remaining, size, seed=int(per_rank[0]["seed"]))
    except ValueError as e:
        raise CheckpointError(f"{ctx.where}: entry {name!r}: {e}") from e
    if parts[rank].size and int(parts[rank].max()) >= len(obj.x):
        raise CheckpointError(
            f"{ctx.where}: entry {name!r}: the checkpoint's samples reach index "
            f"{int(parts[rank].max())}, this iterator's data has {len(obj.x)}"
        )
    total = sum(int(s["samples_seen"]) for s in per_rank)
    new = dict(obj.state())
    new.pop("order", None)
    new.update(
        epoch=min(int(s["epoch"]) for s in per_rank),
        position=0,
        samples_seen=total // size + (1 if rank < total % size else 0),
        order=parts[rank],
    )
    ctx.report.data[name] = {
        "remaining": int(sum(r.size for r in remaining)),
        "consumed": int(sum(int(s["position"]) for s in per_rank)),
        "part": int(parts[rank].size),
    }
    return new


def _peer(name: str, per_rank: list[dict[str, Any]], ctx: _Context, prefix: str) -> dict[str, Any]:
    """A peer policy's state at the new layout: the folded pending gradients only (step
    counters restart at 0), and the mean step-time estimate of :class:`PerLinkExchange`."""
    pending, stats = fold_exchange(
        per_rank, ctx.layout["saved_sites"], ctx.weights, ctx.shares, f"{ctx.where}: {name!r}"
    )
    report = ctx.report
    report.residual_arrays += stats[0]
    report.residual_elements += stats[1]
    report.residual_norm = math.hypot(report.residual_norm, stats[2])
    folded = report.folded.setdefault(name, {})
    for top, d in pending.items():
        folded[prefix + top] = float(np.linalg.norm(d.astype(np.float64)))
    out: dict[str, Any] = {f"{prefix}pending:{top}": d for top, d in pending.items()}
    times = [float(s["compute_s"]) for s in per_rank if "compute_s" in s]
    if times:
        out[f"{prefix}compute_s"] = sum(times) / len(times)
    return out


def _outer(name: str, per_rank: list[dict[str, Any]], ctx: _Context) -> dict[str, Any]:
    first = per_rank[0]
    fragments = int(first["fragments"])
    out: dict[str, Any] = {k: int(first[k]) for k in ("every", "fragments", "overlap")}
    for key in ("every", "fragments", "overlap", "step", "rounds_done"):
        if any(int(s[key]) != int(first[key]) for s in per_rank):
            ctx.report.notes.append(f"{name}: saved ranks differ in {key}; took rank 0's")
        out[key] = int(first[key])
    count = np.array(first["count"], np.int64).reshape(-1)
    out["count"] = count
    out["share"] = count.astype(np.float64) / ctx.layout["size"]
    for f in range(fragments):
        out[f"anchor:{f}"] = ctx.average([s[f"anchor:{f}"] for s in per_rank])
        moments = [s.get(f"moment:{f}") for s in per_rank]
        if any(m is not None for m in moments):
            shape = np.shape(next(m for m in moments if m is not None))
            zeros = np.zeros(shape, np.float32)  # no momentum yet: as zeros
            out[f"moment:{f}"] = ctx.average([zeros if m is None else m for m in moments])
        if f"round:{f}:due" in first:
            out[f"round:{f}:due"] = int(first[f"round:{f}:due"])
            for part in ("result", "snapshot"):
                if f"round:{f}:{part}" in first:
                    out[f"round:{f}:{part}"] = ctx.average(
                        [s[f"round:{f}:{part}"] for s in per_rank]
                    )
    for prefix in ("outer:", "inner:"):
        subs = [
            {k[len(prefix) :]: v for k, v in s.items() if k.startswith(prefix)} for s in per_rank
        ]
        out.update(_peer(name, subs, ctx, prefix))
    return out
