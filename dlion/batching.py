"""Weighted dynamic batching (DESIGN.md section 2): each rank's batch follows its speed.

Every rank measures its compute throughput ``r_i`` (samples/s of forward+backward, an EWMA).
Every ``check_every`` steps the ranks allgather ``r``; they rebalance when ``rebalance_every``
steps have passed since the last rebalance, or when some ``r_i`` moved more than ``drift``
(relative) from its value at the last rebalance. The gather is started at the check step and
completed ``min(GATHER_LAG, check_every - 1)`` steps later, at the same step on every rank, so
its round trip (a wide-area one across sites) overlaps those steps' compute instead of holding
every rank at a barrier. The new split is :func:`split`: ``b_i``
proportional to ``r_i``, clipped to ``[min_batch, max_batch]``, summing to the global batch
``B`` exactly. Gradients are combined with weights ``w_i = b_i / B`` (the exchange's
``weight``), which makes the combination the mean gradient over the global batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import clocks, emulate, ops, runtime
from .errors import InvalidArgumentError, MismatchError

__all__ = ["DynamicBatcher", "split"]

GATHER_LAG = 2
"""Steps between starting a check's throughput gather and deciding on it (at most
``check_every - 1``: with ``check_every=1`` every check is decided at once)."""


def _water_fill(rates: Sequence[float], total: int, lo: int, hi: int) -> list[float]:
    """Real shares ``clip(lam * r_i, lo, hi)`` with the ``lam`` that makes them sum to ``total``.

    Exact in a few passes: a share above ``hi`` (or below ``lo``) stays there as the others are
    rescaled in the direction the violations push ``lam``, so it is fixed at the bound."""
    n = len(rates)
    fixed: dict[int, float] = {}
    while True:
        free = [i for i in range(n) if i not in fixed]
        if not free:
            return [fixed[i] for i in range(n)]
        left = total - sum(fixed.values())
        r_free = sum(rates[i] for i in free)
        share = {i: left * rates[i] / r_free for i in free}
        over = [i for i in free if share[i] > hi]
        under = [i for i in free if share[i] < lo]
        if not over and not under:
            return [fixed[i] if i in fixed else share[i] for i in range(n)]
        excess = sum(share[i] - hi for i in over)
        deficit = sum(lo - share[i] for i in under)
        # Clipping the overs gives others more (lam grows): the overs stay over. Else clip unders.
        for i in over if excess >= deficit else under:
            fixed[i] = float(hi if i in over else lo)


def split(
    rates: Sequence[float], global_batch: int, min_batch: int = 1, max_batch: int | None = None
) -> list[int]:
    """Batch sizes proportional to ``rates``, each in ``[min_batch, max_batch]``, summing to
    ``global_batch`` exactly.

    The real shares ``clip(lam * r_i, min_batch, max_batch)`` (``lam`` chosen so they sum to
    ``global_batch``) are rounded by largest remainder, ties to the lower rank. Deterministic:
    the same inputs give the same split on every rank. Raises ``InvalidArgumentError`` for
    rates that are not finite and positive, or bounds no split can meet.
    """
    n = len(rates)
    hi = global_batch if max_batch is None else max_batch
    if n == 0:
        raise InvalidArgumentError("split: no rates given")
    bad = [i for i, r in enumerate(rates) if not (math.isfinite(r) and r > 0)]
    if bad:
        raise InvalidArgumentError(
            f"split: rates must be finite and > 0; rank {bad[0]} has {rates[bad[0]]!r}"
        )
    if not 1 <= min_batch <= hi or not n * min_batch <= global_batch <= n * hi:
        raise InvalidArgumentError(
            f"split: cannot divide a global batch of {global_batch} among {n} ranks with "
            f"batches in [{min_batch}, {hi}]: need 1 <= min_batch <= max_batch and "
            f"{n} * min_batch <= global_batch <= {n} * max_batch"
        )
    shares = _water_fill([float(r) for r in rates], global_batch, min_batch, hi)
    out = [min(max(math.floor(s), min_batch), hi) for s in shares]
    frac = [s - math.floor(s) for s in shares]
    while (short := global_batch - sum(out)) != 0:  # one pass unless rounding error is large
        up = short > 0
        order = sorted(range(n), key=lambda i: (-frac[i], i) if up else (frac[i], i))
        room = [i for i in order if (out[i] < hi if up else out[i] > min_batch)]
        assert room, (shares, out)  # feasible bounds always leave room
        for i in room[: abs(short)]:
            out[i] += 1 if up else -1
    return out


class DynamicBatcher:
    """Weighted dynamic batching: sizes each rank's batch to its measured compute speed.

    Args:
        global_batch: ``B``, the sum of every rank's batch, kept exactly at every step.
        rebalance_every: rebalance at the first check at least this many steps after the last
            rebalance.
        check_every: every this many steps the ranks allgather their throughputs (one small
            collective, started at the check step and completed ``min(2, check_every - 1)``
            steps later, where every rank decides whether to rebalance).
        min_batch: smallest batch of a rank.
        max_batch: largest batch of a rank (default ``global_batch``).
        ewma: weight of the newest measurement in the throughput average, in (0, 1].
        drift: rebalance at a check (before ``rebalance_every``) when some rank's throughput
            moved by more than this fraction from its value at the last rebalance.
        exchange: an exchange with a ``weight`` attribute (:class:`dlion.PeerExchange`,
            :class:`dlion.Allreduce`); it gets ``weight = b_i / B`` now and at every rebalance,
            so the gradients it combines give the mean gradient over the global batch.
        clock: what :meth:`compute` measures (see :mod:`dlion.clocks`): ``"auto"`` (default)
            is wall time, unless the ranks on this host oversubscribe its cores and no CPU
            quota applies, then ``"cpu"``: this process's CPU time less dlion's engine
            threads. Wall time is what sees a CPU quota or a co-tenant. Resolved once, here;
            :attr:`clock` holds the concrete choice.
        name: prefix of the engine operation names (shown in errors and stall warnings).

    Needs ``dlion.init()``. Every rank must call :meth:`step_done` once per step; the first
    split is even. Use it as::

        batcher = dlion.DynamicBatcher(256, exchange=exchange)
        for step in range(steps):
            x, y = shard.next(batcher.local_batch)
            with batcher.compute():  # forward + backward only
                grads = grads_of(x, y)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            batcher.step_done(len(x))

    The first step after this rank's batch changed is not measured (a ``tf.function`` may
    retrace for the new shape); give the forward/backward a ``None`` batch dimension
    (``input_signature`` or ``reduce_retracing=True``) so it does not retrace every time.
    """

    def __init__(
        self,
        global_batch: int,
        *,
        rebalance_every: int = 50,
        check_every: int = 10,
        min_batch: int = 1,
        max_batch: int | None = None,
        ewma: float = 0.3,
        drift: float = 0.2,
        exchange: Any = None,
        clock: emulate.Clock = "auto",
        name: str = "DynamicBatcher",
    ) -> None:
        me, n = runtime.rank(), runtime.size()
        where = f"rank {me}: DynamicBatcher"
        for key, value in (
            ("global_batch", global_batch),
            ("rebalance_every", rebalance_every),
            ("check_every", check_every),
            ("min_batch", min_batch),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{where}({key}={value!r}): must be an int >= 1")
        hi = global_batch if max_batch is None else max_batch
        if isinstance(hi, bool) or not isinstance(hi, int) or hi < min_batch:
            raise InvalidArgumentError(
                f"{where}(max_batch={max_batch!r}): must be an int >= min_batch={min_batch}"
            )
        if not n * min_batch <= global_batch <= n * hi:
            raise InvalidArgumentError(
                f"{where}(global_batch={global_batch}): with {n} ranks and batches in "
                f"[{min_batch}, {hi}] the global batch must lie in [{n * min_batch}, {n * hi}]"
            )
        if not (isinstance(ewma, (int, float)) and 0.0 < ewma <= 1.0):
            raise InvalidArgumentError(f"{where}(ewma={ewma!r}): must be in (0, 1]")
        if not (isinstance(drift, (int, float)) and drift > 0.0 and math.isfinite(drift)):
            raise InvalidArgumentError(f"{where}(drift={drift!r}): must be finite and > 0")
        if clock not in clocks.CLOCKS:
            raise InvalidArgumentError(f"{where}(clock={clock!r}): use one of {clocks.CLOCKS}")
        if exchange is not None and not hasattr(exchange, "weight"):
            raise InvalidArgumentError(
                f"{where}(exchange={exchange!r}): the exchange has no 'weight' attribute; use "
                "dlion.PeerExchange or dlion.Allreduce, or pass exchange=None"
            )
        self.global_batch, self.min_batch, self.max_batch = global_batch, min_batch, hi
        self.rebalance_every, self.check_every = rebalance_every, check_every
        self.ewma, self.drift = float(ewma), float(drift)
        self.exchange, self.name = exchange, name
        self.clock: emulate.Clock = clocks.resolve(clock, runtime.local_size())
        self._rank, self._size = me, n
        self.step = 0
        self.samples_seen = 0
        self.rebalances = 0
        self.last_rebalance = 0
        self.batches: list[int] = split([1.0] * n, global_batch, min_batch, hi)
        self.rate: float = 0.0  # this rank's EWMA throughput, samples/s (0: none yet)
        self.rates: list[float] = [0.0] * n  # every rank's, as gathered at the last check
        self.reference: list[float] = [0.0] * n  # every rank's at the last rebalance
        self.last_compute: emulate.ComputeTime | None = None
        self._skip_next = True
        # The check gather in flight: (its step, its handle or None once waited, the buffer).
        self._gather: tuple[int, Any, np.ndarray] | None = None
        self._apply_weight()

    # -- what a training loop reads ----------------------------------------------------------
    @property
    def local_batch(self) -> int:
        """This rank's batch size ``b_i`` for the current step."""
        return self.batches[self._rank]

    @property
    def weight(self) -> float:
        """This rank's aggregation weight ``b_i / sum(b)``."""
        return self.local_batch / sum(self.batches)

    # -- measuring -------------------------------------------------------------------------
    @contextlib.contextmanager
    def compute(self) -> Iterator[emulate.ComputeTime]:
        """Wrap forward+backward only: measures the block's time (what :meth:`step_done` uses by
        default) and applies the ``DLION_EMULATE`` compute slowdown of this rank at
        this step (see :func:`dlion.emulate.slowdown`)."""
        with emulate.slowdown(self.step, self._rank, self.clock) as timing:
            yield timing
        self.last_compute = timing

    def step_done(self, samples: int, compute_s: float | None = None) -> None:
        """End of a step in which this rank computed ``samples`` samples in ``compute_s``
        seconds (default: the last :meth:`compute` block). Updates the throughput, advances
        the step and, at a check step, gathers every rank's throughput and maybe rebalances
        (a collective: every rank must call it at every step)."""
        if compute_s is None:
            if self.last_compute is None:
                raise InvalidArgumentError(
                    f"rank {self._rank}: {self.name}.step_done at step {self.step}: no "
                    "compute_s given and no `with batcher.compute():` block measured this step"
                )
            compute_s = self.last_compute.total_s
        self.last_compute = None
        if samples > 0 and compute_s > 0 and math.isfinite(compute_s) and not self._skip_next:
            r = samples / compute_s
            self.rate = r if self.rate == 0.0 else self.ewma * r + (1.0 - self.ewma) * self.rate
        self._skip_next = False
        self.step += 1
        self.samples_seen += self.global_batch
        lag = min(GATHER_LAG, self.check_every - 1)
        if self._gather is not None and self.step >= self._gather[0] + lag:
            self._decide()
        if self.step % self.check_every == 0:
            self._start_gather()
            if lag == 0:
                self._decide()

    # -- deciding --------------------------------------------------------------------------
    def _start_gather(self) -> None:
        """Start gathering every rank's (throughput, step): a sum of rows that are zero but
        this rank's, which adds only zeros to each value (exact)."""
        rows = np.zeros((self._size, 2), np.float64)
        rows[self._rank] = (self.rate, float(self.step))
        handle = ops.allreduce_async(rows, "sum", f"{self.name}.rates")
        self._gather = (self.step, handle, rows)

    def _gathered(self) -> tuple[int, np.ndarray]:
        """The check gather in flight, waited for (its step, every rank's row)."""
        assert self._gather is not None
        step, handle, rows = self._gather
        if handle is not None:
            handle.wait()
            self._gather = (step, None, rows)
        return step, rows

    def _decide(self) -> None:
        started, gathered = self._gathered()
        self._gather = None
        steps = gathered[:, 1]
        if (steps != started).any():
            r = int(np.argmax(steps != started))
            raise MismatchError(
                f"rank {self._rank}: {self.name}: rank {r} is at step {int(steps[r])}, this rank "
                f"at step {started}; every rank must call step_done once per step"
            )
        self.rates = [float(v) for v in gathered[:, 0]]
        if not all(v > 0 and math.isfinite(v) for v in self.rates):
            return  # some rank has no measurement yet: decide at a later check
        due = self.step - self.last_rebalance >= self.rebalance_every
        if due or self.reference[0] == 0.0 or self._drifted():
            self._rebalance()

    def _drifted(self) -> bool:
        return any(abs(r - ref) > self.drift * ref for r, ref in zip(self.rates, self.reference))

    def _rebalance(self) -> None:
        before = self.local_batch
        self.batches = split(self.rates, self.global_batch, self.min_batch, self.max_batch)
        self.reference = list(self.rates)
        self.last_rebalance = self.step
        self.rebalances += 1
        self._skip_next = self.local_batch != before
        self._apply_weight()

    def _apply_weight(self) -> None:
        if self.exchange is not None:
            self.exchange.weight = self.weight
            set_batches = getattr(self.exchange, "set_batches", None)
            if set_batches is not None:  # dlion.OuterSync weights the site's ranks by batch
                set_batches(list(self.batches))

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Checkpointable state: step, samples seen, every rank's batch, throughputs, and a
        check gather in flight (waited for here: decided at the same step after a resume)."""
        gather_step, gather = (
            self._gathered()
            if self._gather is not None
            else (-1, np.zeros((self._size, 2), np.float64))
        )
        return {
            "global_batch": self.global_batch,
            "step": self.step,
            "samples_seen": self.samples_seen,
            "rebalances": self.rebalances,
            "last_rebalance": self.last_rebalance,
            "rate": self.rate,
            "batches": np.array(self.batches, np.int64),
            "rates": np.array(self.rates, np.float64),
            "reference": np.array(self.reference, np.float64),
            "gather_step": gather_step,
            "gather": gather,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume from a :meth:`state` dict of a batcher with the same global batch and ranks."""
        batches = [int(b) for b in np.asarray(state["batches"]).reshape(-1)]
        where = f"rank {self._rank}: {self.name}.set_state"
        if int(state["global_batch"]) != self.global_batch or sum(batches) != self.global_batch:
            raise InvalidArgumentError(
                f"{where}: the state is for a global batch of {int(state['global_batch'])} "
                f"(batches {batches}), this batcher has {self.global_batch}"
            )
        if len(batches) != self._size:
            raise InvalidArgumentError(
                f"{where}: the state is for {len(batches)} ranks, this job has {self._size}"
            )
        self.step, self.samples_seen = int(state["step"]), int(state["samples_seen"])
        self.rebalances = int(state["rebalances"])
        self.last_rebalance = int(state["last_rebalance"])
        self.rate, self.batches = float(state["rate"]), batches
        self.rates = [float(v) for v in np.asarray(state["rates"]).reshape(-1)]
        self.reference = [float(v) for v in np.asarray(state["reference"]).reshape(-1)]
        self._gather = None
        gather_step = int(state.get("gather_step", -1))  # (absent in older checkpoints)
        if gather_step >= 0:
            rows = np.array(state["gather"], np.float64).reshape(self._size, 2)
            self._gather = (gather_step, None, rows)
        self._skip_next = True
        self._apply_weight()

    def __repr__(self) -> str:
        return (
            f"DynamicBatcher(global_batch={self.global_batch}, step={self.step}, "
            f"batches={self.batches}, rebalances={self.rebalances})"
        )
