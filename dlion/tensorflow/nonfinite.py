"""What happens when a rank's gradients hold NaN or infinity: the step's agreed verdict.

Protocol, once per exchange step (every rank runs it, in this order):

1. After a fused buffer is packed and before it is handed to the exchange, the rank checks it
   (:func:`all_finite`); a buffer with a NaN or an infinity is zeroed, so that nothing
   non-finite ever leaves the rank (the exchange of that buffer still runs, to keep the ranks'
   operations paired, but its result is discarded).
2. After the step's buffers are started, every rank adds its verdict to a ``size()``-long
   float64 vector in one small sum-allreduce (or, at a layout's later steps of a collective
   exchange, sends it in the step's control round, :mod:`dlion.joining`, which every rank
   waits for anyway): entry ``r`` is 0 when rank ``r``'s gradients were
   finite, else 1 + the index of its first non-finite gradient (the gradient lists are the same
   on every rank, checked at the first exchange). So every rank learns which ranks were bad, and
   in which tensor, at the same step.
3. If any entry is non-zero, every rank either raises :class:`NonFiniteGradientError`
   (``nonfinite="raise"``, the default) or warns with :class:`NonFiniteGradientWarning` and skips
   the step (``nonfinite="skip"``): no rank applies it, so the replicas stay identical.

Cost per step: the check is one ``np.dot(x, x)`` over each buffer (any NaN or infinity makes the
sum of squares non-finite; only when it is, an exact ``np.isfinite`` pass tells an overflowing
but finite buffer apart), about a third of a memcpy of the gradients, plus one allreduce of
``size()`` float64 values at a layout's first step (later, a few bytes in the control round).
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

import dlion_core as _core

from .. import ops, runtime
from ..errors import InvalidArgumentError, NonFiniteGradientError, NonFiniteGradientWarning
from .fusion import FusionPlan, Group

NonFinitePolicy = Literal["raise", "skip"]
POLICIES: tuple[str, ...] = ("raise", "skip")


def check_policy(nonfinite: str, caller: str, allowed: tuple[str, ...] = POLICIES) -> str:
    """``nonfinite`` if it is one of ``allowed``, else ``InvalidArgumentError`` listing them."""
    if nonfinite not in allowed:
        choices = " or ".join(repr(a) for a in allowed)
        raise InvalidArgumentError(f"{caller}: nonfinite must be {choices}, got {nonfinite!r}")
    return nonfinite


def all_finite(buffer: np.ndarray) -> bool:
    """True when no element of the flat float buffer is NaN or infinite."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.dot(buffer, buffer)):
            return True
    return bool(np.isfinite(buffer).all())  # overflow of finite squares, or a real NaN/inf


def first_nonfinite(group: Group) -> tuple[int, int, float]:
    """(gradient index, element index within it, value) of the group's first bad element."""
    pos = int(np.flatnonzero(~np.isfinite(group.buffer))[0])
    slot = next(s for s in group.slots if s.offset <= pos < s.offset + s.size)
    return slot.index, pos - slot.offset, float(group.buffer[pos])


class _Decided:
    """The vote of a rank that decides alone: nothing to wait for."""

    def wait(self, timeout: float | None = None) -> bool:
        return True


class StepVerdict:
    """One step's check (steps 1-3 above): ``check`` each packed buffer, ``start`` the vote,
    ``wait`` on it with the exchange, then ``settle``."""

    def __init__(self, name: str, step: int, collective: bool = True) -> None:
        self.name = name
        self.step = step
        self.collective = collective
        self.local: tuple[int, int, float] | None = None
        self.votes = np.zeros(runtime.size(), np.float64)

    def check(self, group: Group) -> None:
        """Step 1: zero the buffer if it is not finite, remembering the first bad element."""
        if all_finite(group.buffer):
            return
        if self.local is None:
            self.local = first_nonfinite(group)
        group.buffer.fill(0)

    def vote(self) -> int:
        """This rank's entry of the vote: 0 when its buffers were finite, else 1 + the index
        of its first non-finite gradient."""
        return 0 if self.local is None else 1 + self.local[0]

    def start(self, votes: np.ndarray | None = None) -> _core.Handle | _Decided:
        """Step 2: the verdict allreduce (after every buffer of the step was started), or
        ``votes`` every rank already has (dlion.join's merged control round carried them). A
        decentralized exchange (``collective=False``) votes alone: peers are not held in
        lockstep, so only the bad rank raises or skips; its peers received zeros from it."""
        if votes is not None:
            self.votes[:] = votes
            return _Decided()
        self.votes[runtime.rank()] = self.vote()
        if not self.collective:
            return _Decided()
        return ops.allreduce_async(self.votes, "sum", f"{self.name}.finite")

    def settle(self, plan: FusionPlan, policy: str) -> bool:
        """Step 3, after the vote completed: True to apply the step, False to skip it."""
        bad = np.flatnonzero(self.votes)
        if bad.size == 0:
            return True
        where = ", ".join(
            f"rank {r} ({plan.layout[int(self.votes[r]) - 1][0]!r})" for r in bad.tolist()
        )
        text = f"non-finite gradient (NaN or infinity) at step {self.step} on {where}"
        if self.local is not None:
            index, element, value = self.local
            text += (
                f"; here on rank {runtime.rank()}: {plan.layout[index][0]!r} element {element} "
                f"is {value}"
            )
        text += ". No rank sent it to its peers and no rank applied this step"
        if policy == "raise":
            raise NonFiniteGradientError(
                f"{text}. Check the loss and learning rate, or pass nonfinite='skip' to skip "
                "such steps with a warning."
            )
        who = "every rank" if self.collective else f"rank {runtime.rank()}"
        warnings.warn(f"{text}: skipped on {who}.", NonFiniteGradientWarning, stacklevel=4)
        return False
