"""Keras callbacks with Horovod's semantics (``hvd.callbacks``), over dlion's collectives."""

from __future__ import annotations

import sys
from typing import Any

import keras
import numpy as np

from .. import ops, runtime
from ..tensorflow import broadcast_variables
from .schedule import LearningRateScheduleCallback, momentum_of, warn_no_momentum_correction


class BroadcastGlobalVariablesCallback(keras.callbacks.Callback):
    """Every rank takes ``root_rank``'s model and optimizer state before training diverges.

    A model that is built before ``fit`` (it has an ``Input``, or was called once) is broadcast
    in ``on_train_begin``, with the optimizer built first so that its slots go too and every
    rank starts the first step from identical state. A model built lazily by its first batch (a
    ``Sequential`` without ``Input``, as in Horovod's examples) has nothing to broadcast yet: it
    is broadcast after the first batch, as Horovod does.
    """

    def __init__(self, root_rank: int = 0) -> None:
        super().__init__()
        self.root_rank = int(root_rank)
        self.broadcast_done = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self.broadcast_done and self.model.built and self.model.variables:
            self._broadcast()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self.broadcast_done:
            self._broadcast()

    def _broadcast(self) -> None:
        model = self.model
        opt = getattr(model, "optimizer", None)
        variables = list(model.variables)
        if opt is not None:
            if not opt.built:
                opt.build(model.trainable_variables)
            local = {id(v) for v in getattr(opt, "local_variables", ())}
            variables += [v for v in opt.variables if id(v) not in local]
        broadcast_variables(variables, root_rank=self.root_rank)
        self.broadcast_done = True


class BestModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Horovod's ``BestModelCheckpoint``: ``ModelCheckpoint(save_best_only=True)`` that writes
    on rank 0 only (put it in every rank's callbacks; the others do nothing). Monitor a metric
    averaged by :class:`MetricAverageCallback` (listed before it) so that every rank agrees.
    With a decentralized exchange it saves rank 0's replica of that epoch; the model at the
    end of ``fit`` is the average of the replicas (see ``dlion.keras.DistributedOptimizer``)."""

    def __init__(
        self,
        filepath: str,
        monitor: str = "val_loss",
        verbose: int = 0,
        mode: str = "auto",
        save_freq: str | int = "epoch",
    ) -> None:
        super().__init__(
            filepath,
            monitor=monitor,
            verbose=verbose,
            save_best_only=True,
            save_weights_only=False,
            mode=mode,
            save_freq=save_freq,
        )

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if runtime.rank() == 0:
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if runtime.rank() == 0:
            super().on_epoch_end(epoch, logs)


class MetricAverageCallback(keras.callbacks.Callback):
    """At the end of every epoch, replace each metric in ``logs`` by its average over ranks.

    Put it before callbacks that read the metrics (checkpointing, early stopping, schedules).
    Every rank must log the same metrics; otherwise every rank raises ``MismatchError``.
    """

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None or runtime.size() == 1:
            return
        keys = sorted(k for k, v in logs.items() if np.ndim(v) == 0 and _is_number(v))
        if not keys:
            return
        values = np.array([float(logs[k]) for k in keys], dtype=np.float64)
        ops.allreduce(values, op="average", name=f"MetricAverageCallback[{','.join(keys)}]")
        for k, v in zip(keys, values):
            logs[k] = float(v)


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


class LearningRateWarmupCallback(keras.callbacks.Callback):
    """Ramp the learning rate from ``initial_lr / size`` to ``initial_lr`` over the first epochs.

    Horovod's warmup (Goyal et al., "Accurate, Large Minibatch SGD"): at fractional epoch
    ``e = epoch + batch / steps_per_epoch`` below ``warmup_epochs`` the learning rate is
    ``initial_lr / size * (e * (size - 1) / warmup_epochs + 1)``; afterwards it is left alone.

    Args:
        initial_lr: the learning rate at the end of the warmup (usually scaled by ``size``).
        warmup_epochs: epochs of warmup.
        momentum_correction: Horovod scales the momentum with each change of the learning rate.
            Keras 3 compiles an optimizer's momentum into the train step as a constant, so it
            cannot be changed per batch: with ``True`` (the default, as in Horovod) a warning says
            it is not applied; pass ``False`` to silence it.
        steps_per_epoch: batches per epoch; default: what ``model.fit`` reports.
        verbose: 1 prints a line when the warmup ends (rank 0).
    """

    def __init__(
        self,
        initial_lr: float,
        warmup_epochs: float = 5,
        momentum_correction: bool = True,
        steps_per_epoch: int | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__()
        if warmup_epochs <= 0:
            raise ValueError(f"warmup_epochs must be > 0, got {warmup_epochs}")
        self.initial_lr = float(initial_lr)
        self.warmup_epochs = float(warmup_epochs)
        self.momentum_correction = bool(momentum_correction)
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose
        self.current_epoch = 0
        self.finished = False

    def multiplier(self, epoch: float) -> float:
        """The learning-rate factor at fractional epoch ``epoch``."""
        size = runtime.size()
        return 1.0 / size * (epoch * (size - 1) / self.warmup_epochs + 1)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.steps_per_epoch is None:
            self.steps_per_epoch = (self.params or {}).get("steps")
        if not self.steps_per_epoch:
            raise ValueError(
                "LearningRateWarmupCallback needs steps_per_epoch: model.fit did not report it "
                "(e.g. a dataset of unknown length); pass steps_per_epoch="
            )
        if self.momentum_correction and momentum_of(self.model.optimizer):
            warn_no_momentum_correction("LearningRateWarmupCallback")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.current_epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        assert self.steps_per_epoch  # set in on_train_begin
        epoch = self.current_epoch + batch / self.steps_per_epoch
        if epoch < self.warmup_epochs:
            self.model.optimizer.learning_rate = self.initial_lr * self.multiplier(epoch)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch + 1 >= self.warmup_epochs and not self.finished:
            self.finished = True
            self.model.optimizer.learning_rate = self.initial_lr
            if self.verbose and runtime.rank() == 0:
                print(
                    f"\nEpoch {epoch + 1}: finished gradual learning rate warmup to "
                    f"{self.initial_lr:g}.",
                    file=sys.stdout,
                )


__all__ = [
    "BestModelCheckpoint",
    "BroadcastGlobalVariablesCallback",
    "LearningRateScheduleCallback",
    "LearningRateWarmupCallback",
    "MetricAverageCallback",
]
