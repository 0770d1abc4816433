"""The contract every exchange policy follows."""

from __future__ import annotations

import abc
import math
from typing import Any, Protocol

import numpy as np


class Pending(Protocol):
    """An exchange in flight; ``wait()`` returns once the buffer holds the combined result."""

    def wait(self, timeout: float | None = None) -> bool: ...


class Parameters(Protocol):
    """The trainable tensors of a model as flat float32 pieces, for policies that change the
    parameters themselves (:class:`dlion.OuterSync`); ``dlion.tensorflow`` provides it over
    the optimizer's variables."""

    #: Elements of each tensor, in the optimizer's order.
    sizes: list[int]

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Tensors ``lo`` to ``hi - 1``, flattened and concatenated (a new float32 array)."""
        ...

    def write(self, lo: int, hi: int, values: np.ndarray) -> None:
        """Assign tensors ``lo`` to ``hi - 1`` from ``values`` (as :meth:`read` lays them out)."""
        ...


class Exchange(abc.ABC):
    """Combines one fused gradient buffer with the other ranks', in place.

    Contract:
      * ``start`` is called by every rank, for the same buffers in the same order, once per
        step and tensor group; ``buffer`` is a flat, C-contiguous float32/float64 array that
        the policy may overwrite until the returned handle's ``wait()`` returns;
      * after ``wait()``, ``buffer`` holds what the optimizer applies (for ``Allreduce``: the
        average over ranks, bit-identical on every rank);
      * ``signature`` identifies the layout of the fused tensors, so ranks that disagree get a
        ``MismatchError`` rather than a wrong sum.
    """

    _init_args: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})

    def __new__(cls, *args: Any, **kwargs: Any) -> Exchange:
        self = super().__new__(cls)
        self._init_args = (args, dict(kwargs))  # what get_config() saves
        return self

    def get_config(self) -> dict[str, Any] | None:
        """The class and constructor arguments that rebuild this policy (:func:`from_config`),
        as plain data; ``None`` when an argument is not plain data (``GaiaExchange``'s
        ``params``, which are model variables). Saved with a ``dlion.keras`` optimizer."""
        args, kwargs = self._init_args
        config = {"class": type(self).__name__, "args": list(args), "kwargs": dict(kwargs)}
        return config if _plain(config) else None

    #: True when every rank runs the exchange in lockstep (a collective, like Allreduce), so
    #: per-step agreement rounds may ride along; False for peer-to-peer policies.
    collective: bool = True

    @property
    def replicas_identical(self) -> bool:
        """Whether every rank applies the same combined gradient at every step, so replicas
        that start equal stay equal (collectives do; decentralized policies in general do not:
        then :func:`dlion.average_replicas` makes one model at the end)."""
        return self.collective

    #: True when the policy also changes the parameters around the optimizer's apply
    #: (:class:`dlion.OuterSync`); the optimizer wrappers then call :meth:`before_apply` and
    #: :meth:`after_apply` at every step.
    updates_parameters: bool = False

    def before_apply(self, params: Parameters, *, name: str) -> None:  # noqa: B027
        """Called before the optimizer applies a step's combined gradients (default: nothing)."""

    def after_apply(self, params: Parameters, *, name: str) -> None:  # noqa: B027
        """Called after the optimizer applied a step's combined gradients (default: nothing)."""

    def flush(self, params: Parameters) -> None:  # noqa: B027
        """Complete and apply what the policy still has in flight at the end of training
        (default: nothing)."""

    @abc.abstractmethod
    def start(self, buffer: np.ndarray, *, name: str, signature: int = 0) -> Pending:
        """Begin combining ``buffer`` with the other ranks'; returns a handle to wait on."""

    def describe(self) -> str:
        """Short human-readable description, for logs and benchmark tables."""
        return type(self).__name__


def checked_weight(value: Any, owner: str) -> float | None:
    """An aggregation weight as policies take it: ``None``, or a finite number >= 0."""
    if value is not None and not (
        isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
    ):
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError(f"{owner}(weight={value!r}): must be finite and >= 0")
    return None if value is None else float(value)


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def from_config(config: dict[str, Any]) -> Exchange:
    """The policy :meth:`Exchange.get_config` describes (a class of :mod:`dlion.exchange`)."""
    from .. import exchange as _policies
    from ..errors import InvalidArgumentError

    cls = getattr(_policies, str(config.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, Exchange)):
        raise InvalidArgumentError(
            f"dlion.exchange.from_config: {config.get('class')!r} is not an exchange policy of "
            f"dlion.exchange (saved config {config!r})"
        )
    return cls(*config.get("args", ()), **config.get("kwargs", {}))
