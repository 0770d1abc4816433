"""Link plans the peer policies share: the tuple the peer engine takes, and the common ones.

No imports from the rest of dlion, so every exchange module may use it (the site-aware
exchange included) without an import cycle.
"""

from __future__ import annotations

import dlion_core as _core

#: A link plan with a selection rule: (encoding, k, bits, bucket, error_feedback, select,
#: threshold, offset); select 0 top-k, 1 threshold, 2 range (csrc/wire/encode.h).
SelectPlan = tuple[int, int, int, int, bool, int, float, int]
SELECT_TOPK, SELECT_THRESHOLD, SELECT_RANGE = 0, 1, 2


def sparse_encoding(bits: int) -> int:
    """The wire encoding of sparse values as float32 (``bits=32``) or 8-bit QSGD (``bits=8``)."""
    enc = _core.WIRE_ENCODINGS
    return int(enc["sparse_qsgd8"] if bits == 8 else enc["sparse_f32"])


def dense_plan(bucket: int, encoding: str = "dense_f32") -> SelectPlan:
    """A link that carries the dense gradient (no residual): float32, or with ``encoding``
    ``"fp16"``/``"bf16"`` every value in half precision."""
    return (int(_core.WIRE_ENCODINGS[encoding]), 0, 0, bucket, False, SELECT_TOPK, 0.0, 0)
