"""Horovod's ``hvd.load_model``: a saved Keras model, its optimizer wrapped for ``model.fit``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras

from ..compression import Compressor
from .optimizer import DistributedOptimizer


def load_model(
    filepath: Any,
    custom_optimizers: Iterable[type] | None = None,
    custom_objects: dict[str, Any] | None = None,
    compression: Compressor | None = None,
    **distributed: Any,
) -> keras.Model:
    """Load a Keras model (``keras.models.load_model``) and wrap its optimizer in
    :class:`dlion.keras.DistributedOptimizer` (with ``compression`` and the other keywords of
    that class), so that ``fit`` resumes distributed. A model saved with a dlion optimizer
    comes back with it as saved.

    Args:
        filepath: the ``.keras`` file.
        custom_optimizers: optimizer classes of your own the file refers to.
        custom_objects: other custom objects, as for ``keras.models.load_model``.
        compression: as for :class:`dlion.keras.DistributedOptimizer`.
    """
    objects = dict(custom_objects or {})
    for cls in custom_optimizers or ():
        objects.setdefault(cls.__name__, cls)
    model = keras.models.load_model(filepath, custom_objects=objects or None)
    opt = getattr(model, "optimizer", None)
    if isinstance(opt, keras.optimizers.Optimizer) and not isinstance(opt, DistributedOptimizer):
        model.optimizer = DistributedOptimizer(opt, compression=compression, **distributed)
    return model
