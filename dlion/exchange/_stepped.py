"""A peer exchange whose link plans depend on the step and may carry a reference tensor.

:class:`dlion.PeerExchange` plans links from ``(n, group)`` only. The baselines need more:
Ako's partition rotates with the step, and Gaia's threshold selection reads a reference tensor
(the parameters' magnitudes) that must travel with the request. This base keeps
:class:`~dlion.PeerExchange`'s bookkeeping (one step counter per tensor group, shared with every
other peer policy so a group's steps strictly increase whoever exchanges it, and
``synchronize_next``) and asks the subclass for ``plan_step(n, group, step)`` and
``reference_for(name, n)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import runtime
from .peer import LinkPlan, PeerExchange, last_step
from .plans import SELECT_THRESHOLD, SelectPlan


class SteppedPeerExchange(PeerExchange):
    """Base of peer policies whose plans vary with the step (not public API)."""

    def plan_step(self, n: int, group: int, step: int) -> list[SelectPlan]:
        """One link plan per rank for step ``step`` of a group of ``n`` elements."""
        raise NotImplementedError(f"{type(self).__name__} must implement plan_step")

    def plan(self, n: int, group: int) -> list[SelectPlan]:  # type: ignore[override]
        """The link plans of the group's next step (what :meth:`start` would send)."""
        return self.plan_step(n, group, last_step(group) + 1)

    def reference_for(self, name: str, n: int) -> np.ndarray:
        """The float32 reference tensor (``n`` elements) of the exchange ``name``."""
        raise NotImplementedError(
            f"{type(self).__name__} selects by threshold but defines no reference_for"
        )

    def reference(self, name: str, n: int, plans: Sequence[LinkPlan]) -> np.ndarray | None:
        me = runtime.rank()
        threshold = any(
            len(p) == 8 and p[5] == SELECT_THRESHOLD for r, p in enumerate(plans) if r != me
        )
        return self.reference_for(name, n) if threshold else None
