"""Folding a peer policy's error-feedback residuals into one pending gradient per exchange.

Used by :mod:`dlion.checkpoint.elastic` when a checkpoint is restored at another world size or
site layout, where the saved links (rank pairs, site pairs and their pieces) no longer exist.

The saved state of rank ``i`` holds ``residual:P:NAME`` arrays: what the link to rank ``P``
of the exchange ``NAME`` has not carried yet (``x = grad + residual`` is encoded, and what the
message did not carry stays). The peer engine weights a message by its sender's weight, so

* rank to rank (``NAME`` without ``@``): ``r`` reaches receiver ``P``'s aggregate as
  ``w_i r`` over the whole buffer;
* site-aware (``TOP@S>T#a.b``): the piece carries the weighted site sum of site ``S`` (message
  weight 1) to site ``T``, whose ranks all apply it (the site's allgather), at the offset of
  the overlap of shard ``a`` of ``S``'s cut and shard ``b`` of ``T``'s cut of ``TOP``'s
  ``n = size:TOP`` elements (:mod:`dlion.exchange.sites`).

The merged model is ``sum_p a_p theta_p``; each replica ``p`` lacks the mass owed to it, so
the merged model lacks ``D = sum_p a_p (mass owed to p)``. A pending gradient ``x`` of an
earlier elastic restore, not yet sent (``pending:TOP``), was owed to every replica as
``w_i x``. :func:`fold_exchange` returns ``D`` per top-level exchange, in float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CheckpointError
from ..exchange.sites import SiteLayout, overlap, shards


def _pieces(top: str, layout: SiteLayout) -> dict[str, tuple[str, str, int, int]]:
    """Every wide-area piece name of ``top`` in ``layout``: (sender site, receiver site,
    sender's shard, receiver's shard)."""
    sizes = {s: len(m) for s, m in layout.members.items()}
    return {
        f"{top}@{s}>{t}#{a}.{b}": (s, t, a, b)
        for s in layout.sites
        for t in layout.sites
        if t != s
        for a in range(sizes[s])
        for b in range(sizes[t])
    }


def fold_exchange(
    states: list[dict[str, Any]],
    saved_sites: list[str],
    weights: list[float],
    shares: list[float],
    where: str,
) -> tuple[dict[str, np.ndarray], tuple[int, int, float]]:
    """``D`` per top-level exchange name, from every saved rank's policy state, and
    (residual arrays, their elements, the L2 norm of them all) of what was folded.

    ``weights``: ``a_p``, each saved replica's weight in the merged model; ``shares``:
    ``w_i``, each saved rank's message weight. Unknown keys raise ``CheckpointError``."""
    layout = SiteLayout.of(list(saved_sites), 0)
    sizes: dict[str, int] = {}
    for s in states:
        for key, value in s.items():
            if key.startswith("size:"):
                sizes[key[5:]] = int(value)
    pieces: dict[str, tuple[str, str, int, int]] = {}
    for top in sizes:
        pieces.update(_pieces(top, layout))
    acc: dict[str, np.ndarray] = {}
    arrays, elements, sumsq = 0, 0, 0.0

    def add(top: str, n: int, off: int, values: np.ndarray, coeff: float) -> None:
        d = acc.setdefault(top, np.zeros(n, np.float64))
        if d.size != n or off + values.size > n:
            raise CheckpointError(
                f"{where}: the residuals of {top!r} disagree on its size ({d.size} and {n})"
            )
        d[off : off + values.size] += coeff * values

    for i, s in enumerate(states):
        for key, value in s.items():
            kind, _, rest = key.partition(":")
            if kind in ("step", "link", "size", "compute_s"):
                continue
            r = np.asarray(value, np.float64).reshape(-1)
            if kind == "pending":
                add(rest, r.size, 0, r, shares[i])
                continue
            if kind != "residual":
                raise CheckpointError(
                    f"{where}: saved rank {i}'s state has {key!r}, which a restore at another "
                    "world size does not know how to fold"
                )
            peer_text, _, name = rest.partition(":")
            arrays, elements, sumsq = arrays + 1, elements + r.size, sumsq + float(r @ r)
            if "@" not in name:  # rank to rank: owed to replica `peer`, as w_i r
                peer = int(peer_text)
                if not 0 <= peer < len(weights):
                    raise CheckpointError(f"{where}: {key!r} names a rank outside the checkpoint")
                add(name, r.size, 0, r, weights[peer] * shares[i])
                continue
            top = name.partition("@")[0]
            if name not in pieces or top not in sizes:
                raise CheckpointError(
                    f"{where}: saved rank {i}'s residual {name!r} is not a wide-area piece of a "
                    f"site layout {saved_sites} with known sizes (saved by an older dlion?)"
                )
            src, dst, a, b = pieces[name]
            n = sizes[top]
            off, length = overlap(
                shards(n, len(layout.members[src]))[a], shards(n, len(layout.members[dst]))[b]
            )
            if length != r.size:
                raise CheckpointError(
                    f"{where}: residual {name!r} has {r.size} elements, its piece {length}"
                )
            owed = sum(weights[q] for q in layout.members[dst])  # every rank of dst applies it
            add(top, n, off, r, owed)
    pending = {top: d.astype(np.float32) for top, d in acc.items() if np.any(d)}
    return pending, (arrays, elements, float(np.sqrt(sumsq)))
