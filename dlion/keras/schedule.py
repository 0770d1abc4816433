"""Horovod's ``LearningRateScheduleCallback``: a learning rate that follows a multiplier."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import keras


def momentum_of(optimizer: Any) -> float:
    """The momentum of ``optimizer`` or of the optimizer it wraps (0 when it has none)."""
    momentum = getattr(optimizer, "momentum", None)
    if momentum is None:
        momentum = getattr(getattr(optimizer, "inner_optimizer", None), "momentum", 0)
    return float(momentum or 0)


def warn_no_momentum_correction(callback: str) -> None:
    """Keras 3 compiles the momentum into the train step: it cannot follow the schedule."""
    warnings.warn(
        f"{callback}: momentum correction is not applied under Keras 3 (the momentum is a "
        "constant of the compiled train step); pass momentum_correction=False to silence this",
        RuntimeWarning,
        stacklevel=3,
    )


class LearningRateScheduleCallback(keras.callbacks.Callback):
    """Set the learning rate to ``initial_lr * multiplier(epoch)`` from ``start_epoch`` up to
    (not including) ``end_epoch``.

    Args:
        initial_lr: the base learning rate.
        multiplier: a number, or a function of the epoch (fractional when ``staircase`` is
            False) giving the factor.
        start_epoch, end_epoch: the epochs the schedule applies to (``end_epoch=None``: to the
            end of training).
        staircase: ``True`` changes the rate at the start of each epoch; ``False`` at every
            batch, with the fractional epoch ``epoch + batch / steps_per_epoch``.
        momentum_correction: as in :class:`LearningRateWarmupCallback`: not possible under
            Keras 3; ``True`` (Horovod's default) warns that it is not applied.
        steps_per_epoch: batches per epoch (``staircase=False``); default: what ``model.fit``
            reports.
    """

    def __init__(
        self,
        initial_lr: float,
        multiplier: float | Callable[[float], float],
        start_epoch: int = 0,
        end_epoch: int | None = None,
        staircase: bool = True,
        momentum_correction: bool = True,
        steps_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        self.initial_lr = float(initial_lr)
        self.multiplier: Callable[[float], float] = (
            multiplier if callable(multiplier) else _Constant(float(multiplier))
        )
        self.start_epoch = start_epoch
        self.end_epoch = end_epoch
        self.staircase = bool(staircase)
        self.momentum_correction = bool(momentum_correction)
        self.steps_per_epoch = steps_per_epoch
        self.current_epoch = 0

    def _in_range(self, epoch: float) -> bool:
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch < self.end_epoch)

    def _set(self, epoch: float) -> None:
        self.model.optimizer.learning_rate = self.initial_lr * self.multiplier(epoch)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self.staircase and self.steps_per_epoch is None:
            self.steps_per_epoch = (self.params or {}).get("steps")
            if not self.steps_per_epoch:
                raise ValueError(
                    "LearningRateScheduleCallback(staircase=False) needs steps_per_epoch: "
                    "model.fit did not report it; pass steps_per_epoch="
                )
        if self.momentum_correction and momentum_of(self.model.optimizer):
            warn_no_momentum_correction("LearningRateScheduleCallback")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.current_epoch = epoch
        if self.staircase and self._in_range(epoch):
            self._set(epoch)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.staircase:
            return
        assert self.steps_per_epoch  # set in on_train_begin
        epoch = self.current_epoch + batch / self.steps_per_epoch
        if self._in_range(epoch):
            self._set(epoch)


class _Constant:
    """A multiplier that does not change with the epoch."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, epoch: float) -> float:
        return self.value
