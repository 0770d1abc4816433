"""``dlion.join()``: uneven data without deadlock (Horovod's ``hvd.join``).

A rank that runs out of data calls ``join()``. Until every rank has joined, it keeps taking
part in the other ranks' gradient exchanges with zero gradients, and the average counts only
the ranks that still train. ``join()`` returns on every rank once all have joined, with the rank
that joined last.

Protocol (runs whenever more than one rank exists; engine operations in quotes):

  1. Every gradient exchange (``DistributedOptimizer``, ``DistributedGradientTape``, the Keras
     ``DistributedOptimizer``) has one small control allgather "dlion.join.control", its first
     operation. A rank inside ``join()`` sends ``("joined", round it joined in, keys of the
     layouts it knows)`` and waits for the round. An active rank sends
     ``("active", exchanger name, digest of the gradient layout)`` and waits for the round
     before it starts its gradients (*separate* round: the first step of a layout on this rank),
     or ``("active", name, digest, non-finite vote)`` and starts its gradients right after the
     control without waiting (*merged* round: a layout it has exchanged before). A merged round
     carries the step's non-finite vote (:mod:`dlion.tensorflow.nonfinite`) too, so a step pays
     one small round trip, overlapped with the gradients, instead of a control round before
     them and a vote beside them. When any active rank sent a separate record, every rank runs
     the vote allreduce after the gradients, as before. A merged round that cannot go on (the
     active ranks' layouts differ, or a joined rank lacks theirs: gradients are in flight
     already) raises ``MismatchError`` on every rank. Every rank counts control rounds; all
     ranks take part in every round, so counts agree.
  2. No active record: everyone has joined; ``join()`` returns on every rank.
  3. Active records that disagree: with every rank active, the exchanger's layout check runs
     and names the first differing gradient; with some rank joined, ``MismatchError``.
  4. A joined rank that does not know the layout gets it from the lowest active rank
     ("dlion.join.layout", only in that case).
  5. Every rank runs the same fused exchange; joined ranks contribute zeros. An averaging
     exchange is rescaled by ``size / active``, so it averages over the active ranks only.
  6. A joined rank whose ``DistributedOptimizer`` applied this layout before applies the result
     too, so its weights stay identical to the active ranks' (a ``DistributedGradientTape`` user
     broadcasts the variables after ``join()`` instead, as in Horovod).

The cost, paid on every exchange step with more than one rank, is the control allgather of a
few dozen bytes: one small-operation latency at a layout's first step, then overlapped with the
gradients (across a 40 ms WAN it was about 120 ms before the gradients of every step).
Between a rank's ``join()`` and the last rank's, the active ranks may run only gradient
exchanges: any other collective meets the control round and fails with ``MismatchError`` on
every rank (never a hang).
"""

from __future__ import annotations

import hashlib
import pickle
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from . import gather, ops, runtime, timeline
from .errors import DlionError, InvalidArgumentError, MismatchError
from .exchange import Allreduce

CONTROL = "dlion.join.control"
LAYOUT = "dlion.join.layout"


class Responder(Protocol):
    """What a joined rank needs from a gradient exchanger (GradientExchanger implements it)."""

    name: str

    def known_layouts(self) -> list[tuple]: ...

    def join_step(self, layout: tuple, n_active: int, votes: np.ndarray | None) -> None: ...


@dataclass(frozen=True)
class StepControl:
    """What an active rank learns from a control round."""

    n_active: int
    check_layout: bool  # every rank is active but layouts differ: run the descriptive check
    votes: np.ndarray | None = None  # a merged round's non-finite votes (None: vote apart)


@dataclass
class JoinState:
    """What ``dlion.join`` keeps for one run (held by :func:`dlion.runtime.run_state`).

    ``responders`` only observes the exchangers (weak references): an exchanger its owner
    dropped, with its fused buffers, is not kept alive by being able to answer."""

    responders: weakref.WeakValueDictionary[str, Responder] = field(
        default_factory=weakref.WeakValueDictionary
    )
    rounds: int = 0  # control rounds so far (every rank counts the same)
    joined_at: int | None = None  # the round this rank joined in, while inside join()
    digests: dict[tuple, bytes] = field(default_factory=dict)


def _state() -> JoinState:
    return runtime.run_state(JoinState)


def register(responder: Responder) -> None:
    """Make ``responder`` answer exchanges named ``responder.name`` while this rank is joined
    (until it is garbage, or the run ends). Before ``dlion.init`` it does nothing: exchangers
    register again at each exchange."""
    if not runtime.is_initialized():
        return
    responders = _state().responders
    if responders.get(responder.name) is not responder:
        responders[responder.name] = responder


def digest(layout: tuple) -> bytes:
    """A stable 8-byte digest of a gradient layout (same on every rank and process)."""
    digests = _state().digests
    d = digests.get(layout)
    if d is None:
        if len(digests) > 256:
            digests.clear()
        d = digests[layout] = hashlib.blake2b(repr(layout).encode(), digest_size=8).digest()
    return d


def before_exchange(name: str, layout: tuple) -> StepControl:
    """Step 1 on an active rank: the control round; returns how many ranks are active."""
    size = runtime.size()
    if size == 1:
        return StepControl(1, False)
    records = _gather(("active", name, digest(layout)))
    active = [r for r, rec in enumerate(records) if rec[0] == "active"]
    if any(len(records[r]) == 4 for r in active):  # a merged round: its rules
        return _merged_control(records, (name, digest(layout)))
    keys = {records[r][1:] for r in active}
    if len(keys) > 1:
        return StepControl(len(active), _differ(records, active, size))
    if _lacking(records, (name, digest(layout))):
        ops.broadcast_object(layout if runtime.rank() == active[0] else None, active[0], LAYOUT)
    return StepControl(len(active), False)


class PendingControl:
    """A merged control round in flight (protocol step 1, merged): started before the step's
    gradient buffers, finished after they were started."""

    def __init__(self, name: str, layout: tuple, vote: int) -> None:
        self.name = name
        self.key = (name, digest(layout))
        record = ("active", name, self.key[1], vote)
        state = _state()
        self._round = state.rounds
        state.rounds += 1
        self._span = timeline.span("join", "join", op=CONTROL, round=self._round)
        self._gathering = gather.Gathering("allgather_object", pickle.dumps(record), CONTROL)

    def finish(self) -> StepControl:
        """The round's records: how many ranks are active and every rank's vote (None when
        some rank runs the separate vote this round); raises ``MismatchError`` on every rank
        when the round cannot go on (see the module docstring, step 1)."""
        with self._span:
            records = [pickle.loads(b) for b in self._gathering.result()]
        return _merged_control(records, self.key)


def start_exchange(name: str, layout: tuple, vote: int) -> PendingControl:
    """Step 1, merged, on an active rank whose plan for ``layout`` exists: start the control
    round carrying this rank's non-finite ``vote``; ``finish()`` it after the gradients were
    started."""
    return PendingControl(name, layout, vote)


def _merged_control(records: list[Any], key: tuple) -> StepControl:
    """What a round with at least one merged record means, the same on every rank."""
    size = len(records)
    active = [r for r, rec in enumerate(records) if rec[0] == "active"]
    keys = {tuple(records[r][1:3]) for r in active}
    me = runtime.rank()
    if len(keys) > 1:
        other = next(r for r in active if tuple(records[r][1:3]) != tuple(records[active[0]][1:3]))
        raise MismatchError(
            f"rank {me}: ranks exchange different gradients in one step: rank {active[0]} "
            f"'{records[active[0]][1]}' layout {records[active[0]][2].hex()}, rank {other} "
            f"'{records[other][1]}' layout {records[other][2].hex()}. Every rank must pass the "
            "same variables in the same order at every step."
        )
    lacking = _lacking(records, key)
    if lacking:
        raise MismatchError(
            f"rank {me}: rank(s) {lacking} joined without knowing the gradients of "
            f"'{key[0]}' (layout {key[1].hex()}) that the active ranks exchange; a joined rank "
            "must have run the same exchanges before it joined"
        )
    if any(len(records[r]) == 3 for r in active):  # some rank votes apart this round
        return StepControl(len(active), False)
    votes = np.zeros(size, np.float64)
    for r in active:
        votes[r] = float(records[r][3])
    return StepControl(len(active), False, votes)


def join() -> int:
    """Take part in the other ranks' exchanges with zeros until every rank has joined.

    Returns the rank that joined last (the same on every rank). Call it when this rank has no
    more data, eagerly, from the thread that runs the training loop.
    """
    if runtime.size() == 1:
        return runtime.rank()
    state = _state()
    decentralized = sorted(
        r.name for r in state.responders.values() if not getattr(r, "collective", True)
    )
    if decentralized:
        raise InvalidArgumentError(
            f"rank {runtime.rank()}: dlion.join() works with the collective exchange "
            f"(exchange=dlion.Allreduce()), but {decentralized} exchange peer to peer "
            "(PerLinkExchange/PeerExchange), where the ranks are not in lockstep. With those, "
            "uneven data is handled by dlion.DynamicBatcher (an epoch is a global sample "
            "count) or by giving every rank the same number of steps."
        )
    state.joined_at = state.rounds
    try:
        while True:
            known = frozenset(
                (r.name, digest(layout))
                for r in state.responders.values()
                for layout in r.known_layouts()
            )
            records = _gather(("joined", state.joined_at, known))
            active = [r for r, rec in enumerate(records) if rec[0] == "active"]
            if not active:
                return max(range(len(records)), key=lambda r: (records[r][1], r))
            _answer(records, active)
    finally:
        state.joined_at = None


def _answer(records: list[Any], active: list[int]) -> None:
    """Steps 3-6 on a joined rank: take part in the active ranks' exchange with zeros."""
    name, key = records[active[0]][1:3]
    votes = None
    layout = None
    if any(len(records[r]) == 4 for r in active):  # a merged round: its rules
        votes = _merged_control(records, (name, key)).votes
    else:
        if len({records[r][1:] for r in active}) > 1:
            _differ(records, active, len(records))
        if _lacking(records, (name, key)):
            layout = ops.broadcast_object(None, active[0], LAYOUT)
    responder = _state().responders.get(name)
    if responder is None:
        raise DlionError(
            f"rank {runtime.rank()}: joined, and rank {active[0]} exchanges gradients of "
            f"'{name}', which this rank never created. Create the same DistributedOptimizer "
            "(or tape) with the same name on every rank before training."
        )
    if layout is None:
        layout = next(lay for lay in responder.known_layouts() if digest(lay) == key)
    responder.join_step(layout, len(active), votes)


def _gather(record: tuple) -> list[Any]:
    state = _state()
    with timeline.span("join", "join", op=CONTROL, round=state.rounds):
        records = ops.allgather_object(record, CONTROL)
    state.rounds += 1
    return records


def _lacking(records: list[Any], key: tuple) -> list[int]:
    """The joined ranks whose records do not list ``key`` among the layouts they know."""
    return [r for r, rec in enumerate(records) if rec[0] == "joined" and key not in rec[2]]


def _differ(records: list[Any], active: list[int], size: int) -> bool:
    """Active ranks exchange different layouts: let the layout check explain, or raise."""
    if len(active) == size:
        return True
    ref = records[active[0]]
    other = next(r for r in active if records[r][1:] != ref[1:])
    joined = [r for r in range(size) if r not in active]
    raise MismatchError(
        f"rank {runtime.rank()}: while rank(s) {joined} have joined, the active ranks exchange "
        f"different gradients: rank {active[0]} '{ref[1]}' layout {ref[2].hex()}, rank {other} "
        f"'{records[other][1]}' layout {records[other][2].hex()}"
    )


def rescale_factor(exchange: Any, n_active: int, size: int) -> float:
    """Step 5: the factor that turns the exchange's result into one over the active ranks."""
    if n_active == size:
        return 1.0
    if isinstance(exchange, Allreduce) and exchange.weight is not None:
        raise NotImplementedError(
            "dlion.join with a weighted dlion.Allreduce (dynamic batching): the joined ranks' "
            "weights are not known here; with dlion.DynamicBatcher define epochs on the global "
            "sample count (batcher.samples_seen) so that no rank runs out of data"
        )
    if isinstance(exchange, Allreduce):
        return size / n_active if exchange.op == "average" else 1.0
    raise NotImplementedError(
        f"dlion.join with exchange {exchange.describe()}: only dlion.Allreduce knows how to "
        "leave joined ranks out of its result"
    )
