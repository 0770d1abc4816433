"""Direct knowledge transfer: replicas that fall behind are pulled toward the best one.

DLion's third technique (DESIGN.md section 2, docs/knowledge.md)::

    kt = dlion.KnowledgeTransfer(every=100, alpha=0.5, held_out=(x_val, y_val), loss_fn=loss)
    for step in range(steps):
        ...train one step...
        kt.maybe_transfer(step + 1, model)   # every rank, every step, the same step number

Protocol of :meth:`KnowledgeTransfer.maybe_transfer` (every rank calls it at the same steps):

1. Due? ``unit="steps"``: when ``step - last_transfer_step >= every``, decided locally (every
   rank passes the same step). ``unit="seconds"``: rank 0's clock decides, at check points the
   ranks agree on (one tiny broadcast from rank 0 per check point, scheduled from rank 0's step
   rate so a check lands about when the time is up; no per-step communication).
2. Score: each rank computes its score, lower is better (loss on the fixed held-out batch, the
   EWMA of the training loss, or the user's callable). A non-finite score counts as +inf.
3. One allgather of ``(score, error)``: every rank sees every score, and a rank whose scoring
   failed makes every rank raise, naming it (no rank is left waiting).
4. ``best`` = argmin of the scores (ties: the lowest rank). The receivers are the ranks with
   ``score - best > margin * |best|`` (relative margin; for losses, ``score > best * (1 +
   margin)``). Every rank derives the same lists from the same scores.
5. If there are receivers: ``model.weights`` (floating point; trainable and non-trainable, so
   BatchNorm moving statistics follow) are fused into one flat buffer per wire dtype (float64
   as is, every other float type as float32) and broadcast from ``best``, one broadcast per
   dtype, in dtype order, on every rank. Receivers merge ``theta <- alpha * theta_best + (1 -
   alpha) * theta`` with one vectorized numpy pass over the buffer and one ``assign`` per
   variable; the others (including ``best``) keep their values. Optimizer slots are not
   touched. Without receivers nothing is broadcast.
6. A :class:`TransferReport` is returned and appended to ``history``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from . import ops, runtime
from .errors import DlionError, InvalidArgumentError

ScoreFn = Callable[[Any], float]
Unit = Literal["steps", "seconds"]
_FLOATS = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class TransferReport:
    """What one transfer did, as seen by ``rank`` (every rank holds the same facts)."""

    step: int
    rank: int  #: the rank that holds this report
    best_rank: int
    scores: tuple[float, ...]  #: every rank's score, in rank order (+inf where non-finite)
    merged_ranks: tuple[int, ...]  #: the ranks that merged the best rank's parameters
    bytes_broadcast: int  #: parameter bytes the best rank broadcast (0 when nobody merged)
    alpha: float
    seconds: float  #: wall time of the transfer on this rank, scoring included

    @property
    def merged(self) -> bool:
        """Whether this rank merged the best rank's parameters."""
        return self.rank in self.merged_ranks


class KnowledgeTransfer:
    """Periodic best-replica selection and parameter merging (DLion's direct knowledge transfer).

    Args:
        every: transfer period, in steps (an int >= 1) or seconds (> 0, ``unit="seconds"``).
        alpha: merge weight of the best replica, in (0, 1]; 1 replaces the parameters.
        margin: relative margin >= 0: a rank merges when ``score - best > margin * |best|``.
        score: ``"heldout"`` (loss of the model on ``held_out`` with ``loss_fn``),
            ``"train_loss"`` (EWMA of the losses given to :meth:`observe_loss`), or a callable
            ``model -> float``. Lower is better.
        held_out: ``(x, y)``, the fixed batch that ``score="heldout"`` evaluates on.
        loss_fn: ``loss_fn(y_true, y_pred)`` for ``"heldout"``; default: the compiled model's
            loss.
        unit: ``"steps"`` or ``"seconds"``.
        smoothing: EWMA factor of ``"train_loss"`` in [0, 1): ``ewma = s * ewma + (1 - s) * loss``.
    """

    def __init__(
        self,
        every: float = 100,
        *,
        alpha: float = 0.5,
        margin: float = 0.02,
        score: str | ScoreFn = "heldout",
        held_out: tuple[Any, Any] | None = None,
        loss_fn: Callable[[Any, Any], Any] | None = None,
        unit: Unit = "steps",
        smoothing: float = 0.9,
    ) -> None:
        self.unit: Unit = _check_unit(unit)
        self.every = _check_every(every, unit)
        self.alpha = _check_fraction("alpha", alpha, low_open=True, high_open=False)
        self.margin = _check_number("margin", margin, minimum=0.0)
        self.smoothing = _check_fraction("smoothing", smoothing, low_open=False, high_open=True)
        self.score = _check_score(score)
        if loss_fn is not None and not callable(loss_fn):
            raise InvalidArgumentError(
                f"KnowledgeTransfer: loss_fn must be callable, not {type(loss_fn).__name__}"
            )
        self.loss_fn = loss_fn
        self.held_out = _check_held_out(held_out, self.score)
        self.history: list[TransferReport] = []
        self._last_step = 0
        self._last_time: float | None = None  # rank 0's clock (unit="seconds")
        self._next_check: int | None = None  # the next agreed check point (unit="seconds")
        self._rate_mark: tuple[int, float] | None = None  # (step, time) at the last check
        self._ewma: float | None = None

    # --- inputs -------------------------------------------------------------------------------

    def observe_loss(self, loss: Any) -> None:
        """Feed one training loss (a number or scalar tensor) to the ``"train_loss"`` score."""
        value = float(np.asarray(loss, dtype=np.float64).mean())
        s = self.smoothing
        self._ewma = value if self._ewma is None else s * self._ewma + (1.0 - s) * value

    # --- the transfer -------------------------------------------------------------------------

    def maybe_transfer(self, step: int, model: Any) -> TransferReport | None:
        """Transfer if one is due at ``step``; every rank must call it with the same steps.

        Returns the report of the transfer, or None when none was due (or there is one rank).
        """
        step = int(step)
        if runtime.size() == 1 or not self._due(step):
            return None
        return self.transfer(step, model)

    def transfer(self, step: int, model: Any) -> TransferReport:
        """Transfer now (protocol steps 2-6), whatever the schedule; every rank must call it."""
        start = time.perf_counter()
        rank = runtime.rank()
        scores = self._gather_scores(step, model)
        best = int(np.argmin(scores))  # the first minimum: ties go to the lowest rank
        receivers = _receivers(scores, best, self.margin)
        sent = (
            _send_parameters(model, best, rank in receivers, self.alpha, step) if receivers else 0
        )
        if rank in receivers:
            self._ewma = None  # the training loss so far describes the old parameters
        self._last_step = step
        report = TransferReport(
            step,
            rank,
            best,
            tuple(float(s) for s in scores),
            tuple(receivers),
            sent,
            self.alpha,
            time.perf_counter() - start,
        )
        self.history.append(report)
        return report

    def _due(self, step: int) -> bool:
        if self.unit == "steps":
            return step - self._last_step >= self.every
        if self._next_check is not None and step < self._next_check:
            return False
        decision = self._check(step) if runtime.rank() == 0 else None
        due, self._next_check = ops.broadcast_object(decision, 0, f"knowledge.check@{step}")
        return bool(due)

    def _check(self, step: int) -> tuple[bool, int]:
        """Rank 0 at a check point: is the transfer due, and when is the next check point."""
        now = time.monotonic()
        if self._last_time is None:
            self._last_time = now  # the clock starts at the first call
        elapsed = now - self._last_time
        due = elapsed >= self.every
        if due:
            self._last_time = now
        remaining = self.every if due else self.every - elapsed
        ahead = 1
        if self._rate_mark is not None and step > self._rate_mark[0] and now > self._rate_mark[1]:
            rate = (step - self._rate_mark[0]) / (now - self._rate_mark[1])
            ahead = max(1, math.ceil(remaining * rate))
        self._rate_mark = (step, now)
        return due, step + ahead

    def _gather_scores(self, step: int, model: Any) -> np.ndarray:
        value, error = math.inf, ""
        try:
            value = self._score(model)
        except Exception as e:  # noqa: BLE001 - every rank must learn of it, not only this one
            error = f"{type(e).__name__}: {e}"
        gathered = ops.allgather_object((value, error), f"knowledge.scores@{step}")
        bad = [(r, e) for r, (_, e) in enumerate(gathered) if e]
        if bad:
            detail = "; ".join(f"rank {r}: {e}" for r, e in bad)
            raise DlionError(
                f"rank {runtime.rank()}: knowledge transfer at step {step}: scoring failed on "
                f"{detail}"
            )
        scores = np.array([v for v, _ in gathered], dtype=np.float64)
        scores[~np.isfinite(scores)] = np.inf
        return scores

    def _score(self, model: Any) -> float:
        if callable(self.score):
            return float(self.score(model))
        if self.score == "train_loss":
            if self._ewma is None:
                raise InvalidArgumentError(
                    "score='train_loss' but observe_loss() was not called since the start or "
                    "the last merge"
                )
            return self._ewma
        assert self.held_out is not None  # checked in __init__
        x, y = self.held_out
        loss = _loss_of(model, self.loss_fn)(y, model(x, training=False))
        return float(np.asarray(loss, dtype=np.float64).mean())

    # --- checkpoints --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The schedule and history as numpy arrays and scalars (for ``dlion.checkpoint``)."""
        h = self.history
        width = len(h[0].scores) if h else 0
        merged = np.zeros((len(h), width), dtype=bool)
        for i, r in enumerate(h):
            merged[i, list(r.merged_ranks)] = True
        since = -1.0 if self._last_time is None else time.monotonic() - self._last_time
        return {
            "last_step": self._last_step,
            "seconds_since_last": float(since),
            "rank": runtime.rank() if runtime.is_initialized() else 0,
            "history_step": np.array([r.step for r in h], dtype=np.int64),
            "history_best": np.array([r.best_rank for r in h], dtype=np.int64),
            "history_scores": np.array([r.scores for r in h], dtype=np.float64).reshape(
                len(h), width
            ),
            "history_merged": merged,
            "history_bytes": np.array([r.bytes_broadcast for r in h], dtype=np.int64),
            "history_alpha": np.array([r.alpha for r in h], dtype=np.float64),
            "history_seconds": np.array([r.seconds for r in h], dtype=np.float64),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned; the next seconds-check happens at the next call."""
        self._last_step = int(state["last_step"])
        since = float(state["seconds_since_last"])
        self._last_time = None if since < 0 else time.monotonic() - since
        self._next_check, self._rate_mark = None, None
        columns = zip(
            state["history_step"],
            state["history_best"],
            state["history_scores"],
            state["history_merged"],
            state["history_bytes"],
            state["history_alpha"],
            state["history_seconds"],
        )
        rank = runtime.rank() if runtime.is_initialized() else int(state["rank"])
        self.history = [
            TransferReport(
                int(step),
                rank,
                int(best),
                tuple(float(s) for s in scores),
                tuple(int(r) for r in np.flatnonzero(merged)),
                int(sent),
                float(alpha),
                float(seconds),
            )
            for step, best, scores, merged, sent, alpha, seconds in columns
        ]


# --- parameters on the wire ---------------------------------------------------------------------


def _receivers(scores: np.ndarray, best: int, margin: float) -> list[int]:
    """Ranks worse than the best by more than the relative margin (none if best is not finite)."""
    b = float(scores[best])
    if not math.isfinite(b):
        return []
    return [r for r, s in enumerate(scores) if s - b > margin * abs(b)]


def _dtype_name(v: Any) -> str:
    return str(getattr(v.dtype, "name", v.dtype))


def _groups(model: Any) -> list[tuple[np.dtype, list[Any]]]:
    """``model.weights`` of floating dtype, grouped by wire dtype, in dtype order."""
    weights = getattr(model, "weights", None)
    if weights is None:
        raise InvalidArgumentError(
            f"knowledge transfer needs a Keras model or layer (with .weights), got "
            f"{type(model).__name__}"
        )
    by_dtype: dict[np.dtype, list[Any]] = {}
    for v in weights:
        name = _dtype_name(v)
        if name in _FLOATS:
            wire = np.dtype(np.float64) if name == "float64" else np.dtype(np.float32)
            by_dtype.setdefault(wire, []).append(v)
    return sorted(by_dtype.items(), key=lambda kv: kv[0].str)


def _pack(group: Sequence[Any], dtype: np.dtype) -> np.ndarray:
    return np.concatenate([np.asarray(v, dtype=dtype).reshape(-1) for v in group])


def _send_parameters(model: Any, best: int, receive: bool, alpha: float, step: int) -> int:
    """Protocol step 5 on every rank: broadcast from ``best``; merge where ``receive``."""
    root = runtime.rank() == best
    sent = 0
    for dtype, group in _groups(model):
        sizes = [int(np.prod(tuple(v.shape), dtype=np.int64)) for v in group]
        buffer = _pack(group, dtype) if root else np.empty(sum(sizes), dtype)
        name = f"knowledge.params[{dtype.name} x {len(group)}]@{step}"
        ops.broadcast(buffer, best, name)
        sent += buffer.nbytes
        if not receive:
            continue
        if alpha != 1.0:
            own = _pack(group, dtype)
            np.multiply(buffer, dtype.type(alpha), out=buffer)
            buffer += dtype.type(1.0 - alpha) * own
        offset = 0
        for v, n in zip(group, sizes):
            v.assign(buffer[offset : offset + n].reshape(tuple(v.shape)))
            offset += n
    return sent


def _loss_of(model: Any, loss_fn: Callable[[Any, Any], Any] | None) -> Callable[[Any, Any], Any]:
    if loss_fn is not None:
        return loss_fn
    loss = getattr(model, "loss", None)
    if isinstance(loss, str):
        import keras

        return keras.losses.get(loss)  # type: ignore[no-any-return]
    if callable(loss):
        return loss  # type: ignore[no-any-return]
    raise InvalidArgumentError(
        "KnowledgeTransfer(score='heldout') needs loss_fn=... (or a model compiled with a loss)"
    )


# --- option checks ------------------------------------------------------------------------------


def _check_unit(unit: Any) -> Unit:
    if unit not in ("steps", "seconds"):
        raise InvalidArgumentError(
            f"KnowledgeTransfer: unit must be 'steps' or 'seconds', not {unit!r}"
        )
    return unit  # type: ignore[no-any-return]


def _check_every(every: Any, unit: str) -> float:
    if unit == "steps":
        if isinstance(every, bool) or not isinstance(every, int | np.integer) or every < 1:
            raise InvalidArgumentError(
                f"KnowledgeTransfer: every must be an int >= 1 (steps), not {every!r}"
            )
        return int(every)
    return _check_number("every", every, minimum=0.0, open_=True)


def _check_number(name: str, value: Any, minimum: float, open_: bool = False) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if ok:
        ok = math.isfinite(value) and (value > minimum if open_ else value >= minimum)
    if not ok:
        rel = ">" if open_ else ">="
        raise InvalidArgumentError(
            f"KnowledgeTransfer: {name} must be a finite number {rel} {minimum:g}, not {value!r}"
        )
    return float(value)


def _check_fraction(name: str, value: Any, *, low_open: bool, high_open: bool) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if ok:
        above = value > 0 if low_open else value >= 0
        below = value < 1 if high_open else value <= 1
        ok = bool(above and below)
    if not ok:
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise InvalidArgumentError(
            f"KnowledgeTransfer: {name} must be a number in {interval}, not {value!r}"
        )
    return float(value)


def _check_score(score: Any) -> str | ScoreFn:
    if callable(score) or score in ("heldout", "train_loss"):
        return score  # type: ignore[no-any-return]
    raise InvalidArgumentError(
        "KnowledgeTransfer: score must be 'heldout', 'train_loss' or a callable model -> float, "
        f"not {score!r}"
    )


def _check_held_out(held_out: Any, score: Any) -> tuple[np.ndarray, np.ndarray] | None:
    if score != "heldout":
        if held_out is not None:
            raise InvalidArgumentError(
                f"KnowledgeTransfer: held_out is only used with score='heldout' (score={score!r})"
            )
        return None
    if held_out is None:
        raise InvalidArgumentError(
            "KnowledgeTransfer(score='heldout') needs held_out=(x, y): a small fixed batch, the "
            "same on every rank"
        )
    if not isinstance(held_out, tuple | list) or len(held_out) != 2:
        raise InvalidArgumentError("KnowledgeTransfer: held_out must be a pair (x, y)")
    x, y = np.asarray(held_out[0]), np.asarray(held_out[1])
    if x.ndim == 0 or y.ndim == 0 or len(x) == 0 or len(x) != len(y):
        raise InvalidArgumentError(
            f"KnowledgeTransfer: held_out x and y must have the same non-zero first dimension, "
            f"got shapes {x.shape} and {y.shape}"
        )
    return x, y
