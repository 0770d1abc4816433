"""dlion's error types: one to one with ``csrc/common/error.h``.

``DlionError`` is the base of everything dlion raises on purpose. The engine's errors are
created by the C++ extension and re-exported here; ``NotInitializedError`` is Python-only.
"""

from __future__ import annotations

import dlion_core as _core

DlionError = _core.DlionError
"""Base class of every dlion error (a ``RuntimeError``)."""

InvalidArgumentError = _core.InvalidArgumentError
"""Bad input from the caller: dtype, layout, size or option value (also a ``ValueError``)."""

MismatchError = _core.MismatchError
"""Ranks submitted different operations (kind, name, dtype, size or layout) at the same point."""

PeerTimeoutError = _core.PeerTimeoutError
"""A peer did not take part in an operation within the stall timeout (also a ``TimeoutError``)."""

EngineShutdownError = _core.EngineShutdownError
"""The engine was shut down, or stopped after an earlier fatal error."""

MpiError = _core.MpiError
"""An MPI call failed."""


class NotInitializedError(DlionError):
    """A dlion call that needs the runtime was made before ``dlion.init()``."""


__all__ = [
    "DlionError",
    "EngineShutdownError",
    "InvalidArgumentError",
    "MismatchError",
    "MpiError",
    "NotInitializedError",
    "PeerTimeoutError",
]
