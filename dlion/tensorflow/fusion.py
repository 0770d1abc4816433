"""Tensor fusion: many gradients packed into a few flat numpy buffers, and back.

Gradients are grouped by dtype (float32 and float64 travel as they are; other float types are
exchanged as float32) and, within a dtype, cut into groups of at most ``fusion_bytes``. Packing
is one ``np.concatenate`` over zero-copy views of the tensors into a buffer the plan keeps
between steps; unpacking makes one TF tensor per gradient (TF copies out of the buffer, so it
can be reused next step). No Python loop runs over elements.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class Slot:
    """Where one gradient lives in its group's buffer."""

    index: int  # position in the list of gradients
    name: str
    shape: tuple[int, ...]
    dtype: tf.DType
    offset: int
    size: int


@dataclass
class Group:
    """One fused buffer and the gradients packed into it."""

    dtype: np.dtype
    slots: list[Slot]
    buffer: np.ndarray = field(repr=False)


@dataclass
class FusionPlan:
    """The grouping of a fixed list of gradients; rebuilt when the layout changes."""

    layout: tuple[tuple[str, tuple[int, ...], str], ...]
    groups: list[Group]
    signature: int

    def pack(self, grads: list[tf.Tensor], group: Group) -> np.ndarray:
        """Copy the group's gradients into its buffer (one pass) and return the buffer."""
        parts = [_flat_view(grads[s.index], group.dtype) for s in group.slots]
        if len(parts) == 1:
            np.copyto(group.buffer, parts[0])
        else:
            np.concatenate(parts, out=group.buffer)
        return group.buffer

    def unpack(self, group: Group, out: list[tf.Tensor | None]) -> None:
        """Turn the group's buffer back into one tensor per gradient, in ``out``."""
        for s in group.slots:
            view = group.buffer[s.offset : s.offset + s.size].reshape(s.shape)
            out[s.index] = tf.cast(tf.convert_to_tensor(view), s.dtype)


_AUTO_NUMBER = re.compile(r"_\d+(?=[/:]|$)")


def structural_name(name: str) -> str:
    """``name`` without Keras' auto-numbering (``sequential_1/dense_2/kernel`` ->
    ``sequential/dense/kernel``): the same architecture built after a throwaway model has other
    numbers on one rank than on another, yet the same variables in the same order."""
    return _AUTO_NUMBER.sub("", name)


def layout_of(grads: list[tf.Tensor | None], names: list[str]) -> tuple:
    """(structural name, shape, dtype) of every gradient, in order; ``None`` gradients are
    listed as such. This is what ranks compare, so it holds no Keras auto-numbers."""
    return tuple(
        (
            structural_name(n),
            tuple(g.shape) if g is not None else (),
            g.dtype.name if g is not None else "none",
        )
        for g, n in zip(grads, names, strict=False)
    )


def plan(grads: list[tf.Tensor | None], names: list[str], fusion_bytes: int) -> FusionPlan:
    """Group the non-``None`` gradients by exchange dtype and size."""
    layout = layout_of(grads, names)
    digest = hashlib.blake2b(repr(layout).encode(), digest_size=8).digest()
    by_dtype: dict[np.dtype, list[int]] = {}
    for i, g in enumerate(grads):
        if g is None:
            continue
        wire = np.dtype(np.float64) if g.dtype == tf.float64 else np.dtype(np.float32)
        by_dtype.setdefault(wire, []).append(i)
    groups: list[Group] = []
    for dtype, indices in by_dtype.items():
        slots: list[Slot] = []
        offset = 0
        for i in indices:
            g = grads[i]
            assert g is not None  # indices hold only the non-None gradients
            size = int(np.prod(g.shape, dtype=np.int64))
            if slots and (offset + size) * dtype.itemsize > fusion_bytes:
                groups.append(Group(dtype, slots, np.empty(offset, dtype)))
                slots, offset = [], 0
            slots.append(Slot(i, names[i], tuple(g.shape), g.dtype, offset, size))
            offset += size
        groups.append(Group(dtype, slots, np.empty(offset, dtype)))
    return FusionPlan(layout, groups, int.from_bytes(digest, "little"))


def _flat_view(t: tf.Tensor, dtype: np.dtype) -> np.ndarray:
    if isinstance(t, tf.IndexedSlices):
        t = tf.convert_to_tensor(t)
    if t.dtype.as_numpy_dtype != dtype:
        t = tf.cast(t, tf.as_dtype(dtype))
    return np.asarray(t).reshape(-1)
