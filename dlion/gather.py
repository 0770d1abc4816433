"""The tagged allgather under every gather-based collective, and refusals.

Every collective that travels as an engine allgather (``allgather``, ``allgather_object``,
``broadcast_object``, the gather path of ``allreduce``) sends its bytes in an envelope that
says which call produced them::

    b"dln\\x01" | len(kind) (1 byte) | kind (ascii, e.g. b"allgather_object") | payload

so two ranks that meet in one allgather from different calls (``allgather_object`` on one,
``broadcast_object`` on another, under the same name) get a ``MismatchError`` naming both
instead of each other's bytes taken for their own.

Refusals. A call that this rank rejects (wrong dtype, op, root, name, an unpicklable object)
must not leave the other ranks waiting for it until the stall timeout. So this rank still
takes part: it submits a *refusal*, an allgather of kind ``refused`` carrying its error, in
place of the operation, then raises its own error. The other ranks fail at once as well: in a
gather-based collective with ``InvalidArgumentError`` naming this rank and its error, in an
engine allreduce or broadcast with the engine's ``MismatchError`` (their operation meets an
allgather). When every rank refuses the same call, the ranks stay in step and the engine
stays usable. A refusal is a collective like the call it replaces: made on one rank only (a
collective the others never call), it waits for them up to the stall timeout, as the call would
have.
"""

from __future__ import annotations

from typing import Any, NoReturn

from . import runtime
from .errors import DlionError, InvalidArgumentError, MismatchError

_MAGIC = b"dln\x01"
REFUSED = "refused"
_INVALID_NAME = "<invalid name>"


def frame(kind: str, payload: bytes) -> bytes:
    """``payload`` in the envelope of ``kind``."""
    tag = kind.encode("ascii")
    return b"".join((_MAGIC, bytes([len(tag)]), tag, payload))


def _unframe(chunk: bytes) -> tuple[str, bytes]:
    if not chunk.startswith(_MAGIC) or len(chunk) < len(_MAGIC) + 1:
        return "raw bytes", chunk
    n = chunk[len(_MAGIC)]
    start = len(_MAGIC) + 1
    return chunk[start : start + n].decode("ascii", "replace"), chunk[start + n :]


def check_name(name: Any, what: str) -> str:
    """The operation name, which must be a ``str`` (it names the operation in every error)."""
    if not isinstance(name, str):
        raise InvalidArgumentError(
            f"rank {runtime.rank()}: {what}: name must be a str, got {type(name).__name__} "
            f"{name!r:.60}"
        )
    return name


def exchange(kind: str, payload: bytes, name: str, layout: str = "") -> list[bytes]:
    """Allgather ``payload`` tagged ``kind``; every rank's payload, in rank order.

    Raises ``InvalidArgumentError`` when some rank refused this call (naming it and its
    error) and ``MismatchError`` when some rank made another call under this name.
    """
    return Gathering(kind, payload, name, layout).result()


class Gathering:
    """An :func:`exchange` in flight: started at construction, ``result()`` waits for it (the
    ranks submit it in order with their other operations, and it moves while they do)."""

    def __init__(self, kind: str, payload: bytes, name: str, layout: str = "") -> None:
        self.kind = kind
        self.name = name
        framed = frame(kind, payload)
        handle = runtime.engine().allgather(framed, name, layout or kind)
        self._handle = handle
        self._waitable = runtime.emulated(handle, "allgather", len(framed))

    def result(self) -> list[bytes]:
        """Every rank's payload, in rank order (the errors of :func:`exchange`)."""
        kind, name = self.kind, self.name
        self._waitable.wait()
        chunks = [_unframe(c) for c in self._handle.result()]
        me = runtime.rank()
        refused = [
            (r, p.decode("utf-8", "replace")) for r, (k, p) in enumerate(chunks) if k == REFUSED
        ]
        if refused:
            detail = "; ".join(
                msg if msg.startswith("rank ") else f"rank {r}: {msg}" for r, msg in refused
            )
            raise InvalidArgumentError(
                f"rank {me}: {kind} '{name}': {_ranks(r for r, _ in refused)} refused the call, "
                f"so no rank ran it ({detail})"
            )
        other = [(r, k) for r, (k, _) in enumerate(chunks) if k != kind]
        if other:
            detail = ", ".join(f"rank {r} called {k}" for r, k in other)
            raise MismatchError(
                f"rank {me}: '{name}': ranks made different calls under one name: this rank "
                f"called {kind}, {detail}. Every rank must call the same collectives in the same "
                "order; the operation was dropped on every rank."
            )
        return [p for _, p in chunks]


class Refusal:
    """A refusal in flight (see the module docstring); ``wait()`` raises this rank's error."""

    def __init__(self, error: Exception, name: Any) -> None:
        self.error = error
        op = name if isinstance(name, str) else _INVALID_NAME
        message = str(error).encode("utf-8", "replace")
        self._handle: Any = None
        try:
            self._handle = runtime.engine().allgather(
                frame(REFUSED, message), op, f"refused (rank {runtime.rank()}'s error)"
            )
        except DlionError:  # the engine is shut down or stopped: nobody is waiting for us
            self._handle = None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the other ranks have seen the refusal, then raise this rank's error."""
        if self._handle is not None:
            try:
                self._handle.wait(timeout)
            except DlionError:
                pass  # the others were in another operation (MismatchError there too) or gone
        raise self.error


def refuse(error: Exception, name: Any) -> NoReturn:
    """Tell the other ranks that this rank refused the call ``name``, then raise ``error``."""
    Refusal(error, name).wait()
    raise error  # unreachable: wait() raises


def _ranks(ranks: Any) -> str:
    rs = list(ranks)
    return ("rank " if len(rs) == 1 else "ranks ") + ", ".join(str(r) for r in rs)
