"""The optimizer's variables as :class:`dlion.exchange.base.Parameters`, and the hooks that let a
policy change them around each apply (:class:`dlion.OuterSync`).

Both optimizer wrappers call :class:`ParameterHooks` before and after they apply a step: eagerly
it calls the policy directly; inside a ``tf.function`` (``model.fit``'s compiled step) it is one
``tf.py_function`` ordered after the apply's variable updates (it depends on the variables'
values read after them), which runs the policy eagerly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from ..exchange import Exchange
from .exchanger import evict_oldest


def _numpy_dtype(v: Any) -> np.dtype:
    dt = v.dtype
    return np.dtype(getattr(dt, "as_numpy_dtype", dt))


class VariableParameters:
    """Trainable variables as flat float32 pieces: ``read``/``write`` a range of them."""

    def __init__(self, variables: list[Any]) -> None:
        self.variables = list(variables)
        self.sizes = [int(np.prod(tuple(v.shape), dtype=np.int64)) for v in self.variables]

    def read(self, lo: int, hi: int) -> np.ndarray:
        parts = [np.asarray(v.numpy(), np.float32).reshape(-1) for v in self.variables[lo:hi]]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def write(self, lo: int, hi: int, values: np.ndarray) -> None:
        offset = 0
        for v, n in zip(self.variables[lo:hi], self.sizes[lo:hi]):
            piece = values[offset : offset + n].reshape(tuple(v.shape))
            v.assign(piece.astype(_numpy_dtype(v), copy=False))
            offset += n
        if offset != values.size:
            raise ValueError(f"write of {values.size} values into tensors of {offset} elements")


class ParameterHooks:
    """Calls ``exchange.before_apply`` / ``after_apply`` for a variable list, eagerly or from
    inside a ``tf.function``; nothing when the policy does not change parameters."""

    def __init__(self, exchange: Exchange, name: str) -> None:
        self.exchange = exchange
        self.name = name
        self._params: dict[tuple[int, ...], VariableParameters] = {}
        self._last: VariableParameters | None = None  # what the latest step's hooks used

    @property
    def active(self) -> bool:
        """Whether the policy changes parameters (only then do the hooks do anything)."""
        return self.exchange.updates_parameters

    def params(self, variables: list[Any]) -> VariableParameters:
        """The (cached) Parameters view of ``variables``."""
        key = tuple(id(v) for v in variables)
        held = self._params.get(key)
        if held is None:
            evict_oldest(self._params)
            held = self._params[key] = VariableParameters(variables)
        self._last = held
        return held

    def before(self, variables: list[Any]) -> Any:
        """Before the apply of a step. Inside a ``tf.function`` it returns a tensor that the
        apply must depend on (``tf.control_dependencies``); eagerly (or inactive) ``None``."""
        return self._call(self.exchange.before_apply, variables) if self.active else None

    def after(self, variables: list[Any]) -> None:
        """After the apply of a step (the policy may assign the variables)."""
        if self.active:
            self._call(self.exchange.after_apply, variables)

    def flush(self) -> None:
        """Complete and apply what the policy still has in flight (eagerly), on the variables
        the latest step used."""
        if self.active and self._last is not None:
            self.exchange.flush(self._last)

    def _call(self, hook: Any, variables: list[Any]) -> Any:
        params = self.params(variables)
        if tf.executing_eagerly():
            hook(params, name=self.name)
            return None

        def run() -> bool:
            hook(params, name=self.name)
            return True

        # The reads order the py_function after every update of these variables so far.
        with tf.control_dependencies([tf.convert_to_tensor(v) for v in variables]):
            return tf.py_function(run, [], tf.bool)
