"""dlion's error types: one to one with ``csrc/common/error.h``.

* ``DlionError`` (a ``RuntimeError``): base of everything dlion raises on purpose.
* ``InvalidArgumentError`` (also a ``ValueError``): bad input from the caller: dtype, layout,
  size or option value.
* ``MismatchError``: ranks submitted different operations (kind, name, dtype, size or layout) at
  the same point; raised on every rank, the operation is dropped everywhere.
* ``PeerTimeoutError`` (also a ``TimeoutError``): a peer did not take part in an operation within
  the stall timeout; the engine then stops.
* ``RankLostError`` (a ``PeerTimeoutError``): a rank's process is gone: no heartbeat from it
  within ``liveness_timeout_s`` (died, frozen, or cut off by a dead link); names rank and site.
* ``EngineShutdownError``: the engine was shut down, or stopped after an earlier fatal error.
* ``MpiError``: an MPI call failed.
* ``ProtocolError``: a peer's wire message failed validation (bad magic, field, size, index or
  checksum); the message names the sender rank and the field, and was not applied.
* ``OptionTypeError`` (Python only, an ``InvalidArgumentError`` and a ``TypeError``): a
  ``dlion.Config`` option of the wrong type.
* ``CheckpointError`` (Python only): ``dlion.checkpoint`` could not save or load, on some rank.
* ``NotInitializedError`` (Python only): a call that needs the runtime came before
  ``dlion.init()``.
* ``NonFiniteGradientError`` (Python only, also an ``ArithmeticError``): some rank's gradients
  held NaN or infinity; raised on every rank at the same step, nothing was sent or applied.
  ``NonFiniteGradientWarning`` (a ``RuntimeWarning``) is its ``nonfinite="skip"`` counterpart.

The engine's errors are created by the C++ extension and re-exported here.
"""

from __future__ import annotations

from dlion_core import DlionError as DlionError
from dlion_core import EngineShutdownError as EngineShutdownError
from dlion_core import InvalidArgumentError as InvalidArgumentError
from dlion_core import MismatchError as MismatchError
from dlion_core import MpiError as MpiError
from dlion_core import PeerTimeoutError as PeerTimeoutError
from dlion_core import ProtocolError as ProtocolError
from dlion_core import RankLostError as RankLostError


class NotInitializedError(DlionError):
    """A dlion call that needs the runtime was made before ``dlion.init()``."""


class NonFiniteGradientError(DlionError, ArithmeticError):
    """Some rank's gradients held NaN or infinity at this step; nothing was applied anywhere.

    Raised on every rank at the same step (``nonfinite="raise"``, the default of
    ``DistributedOptimizer``); the message names each bad rank, the step and its first
    non-finite gradient. The engine stays usable: catch it to go on.
    """


class OptionTypeError(InvalidArgumentError, TypeError):
    """A dlion option was given a value of the wrong type (an ``InvalidArgumentError`` and a
    ``TypeError``); the message names the option, its environment variable and what it
    accepts (``dlion.Config``)."""


class CheckpointError(DlionError):
    """A checkpoint could not be written or read (``dlion.checkpoint``); raised on every rank,
    naming the ranks that failed and why (e.g. a checkpoint of another world size)."""


class NonFiniteGradientWarning(RuntimeWarning):
    """Some rank's gradients held NaN or infinity; every rank skipped the step
    (``nonfinite="skip"``)."""


__all__ = [
    "CheckpointError",
    "DlionError",
    "EngineShutdownError",
    "InvalidArgumentError",
    "MismatchError",
    "MpiError",
    "NonFiniteGradientError",
    "NonFiniteGradientWarning",
    "NotInitializedError",
    "OptionTypeError",
    "PeerTimeoutError",
    "ProtocolError",
    "RankLostError",
]
