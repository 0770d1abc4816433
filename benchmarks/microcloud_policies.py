"""The policies of the micro-cloud benchmark: each name's exchange, batching and knowledge
transfer, and the Horovod-like flat allreduce baseline (see benchmarks/microcloud.py)."""

from __future__ import annotations

import argparse
from typing import Any

#: Policies trained with dlion.DynamicBatcher (weighted dynamic batching), and with
#: dlion.KnowledgeTransfer.
BATCHED = ("dlion", "dlion-ranks", "dlion-nokt", "dlion-overlap", "outer", "outer-kt")
TRANSFERRING = ("dlion", "dlion-ranks", "dlion-nobatch", "dlion-overlap", "outer-kt")


def check_policy(policy: str, dlion: Any) -> None:
    """SystemExit naming what is missing when ``policy`` cannot run with this dlion."""
    known = ("reference", "allreduce", "gaia", "ako", "horovod", *BATCHED, *TRANSFERRING)
    if policy not in known:
        raise SystemExit(f"unknown policy {policy!r}: use one of {sorted(set(known))}")
    if policy.startswith("outer") and getattr(dlion, "OuterSync", None) is None:
        raise SystemExit(
            f"policy {policy!r} needs dlion.OuterSync (local steps with outer synchronization, "
            f"issue 17), which this dlion ({dlion.__file__}) does not have"
        )


def counts_links(exchange: Any, dlion: Any) -> bool:
    """Whether ``exchange``'s bytes are in dlion.link_stats (peer-to-peer policies and those
    that say so with ``peer_links = True``); the collective engine's are not."""
    return isinstance(exchange, dlion.PeerExchange) or bool(getattr(exchange, "peer_links", False))


def describe(exchange: Any, args: argparse.Namespace) -> str:
    if exchange is None:
        return (
            f"no communication: 1 process, {args.threads} TF threads, batch {args.batch}, "
            "plain Keras SGD"
        )
    return str(exchange.describe())


def make_exchange(policy: str, args: argparse.Namespace, model: Any, dlion: Any) -> Any:
    """The exchange of ``policy`` (see benchmarks/microcloud.py); None for ``reference``."""
    s = args.staleness
    # DLion's T: --dlion-budget seconds, else --dlion-budget-fraction of the compute time;
    # 0 leaves the library's default
    budget: dict[str, float] = {}
    if args.dlion_budget:
        budget["budget_s"] = args.dlion_budget
    if args.dlion_budget_fraction:
        budget["budget_fraction"] = args.dlion_budget_fraction
    if policy == "reference":
        return None
    if policy == "allreduce":
        # The site-aware hierarchical allreduce; in-process its ring between sites is paced on
        # the shared site links like every peer message.
        return dlion.Allreduce()
    if policy == "gaia":
        # Gaia's threshold is on accumulated updates; momentum SGD's steady-state step is
        # lr / (1 - momentum) times the gradient, the learning rate the filter is given.
        return dlion.GaiaExchange(
            args.gaia_threshold,
            params=model.trainable_variables,
            learning_rate=args.lr / (1 - 0.9),
            bits=args.gaia_bits,
            staleness=s,
        )
    if policy == "ako":
        return dlion.AkoExchange(args.ako_partitions, staleness=s)
    if policy == "horovod":
        return _flat_allreduce_class(dlion)()
    if policy in ("dlion", "dlion-nobatch", "dlion-nokt"):
        return dlion.PerLinkExchange(staleness=s, **budget)
    if policy == "dlion-ranks":  # the paper's literal rank-to-rank form
        return dlion.PerLinkExchange(staleness=s, topology="ranks", **budget)
    if policy == "dlion-overlap":  # the wide-area phase one step behind the compute
        return dlion.PerLinkExchange(staleness=max(1, s), **budget)
    if policy in ("outer", "outer-kt"):  # local steps, outer synchronization across sites
        check_policy(policy, dlion)
        return dlion.OuterSync(
            every=args.outer_every,
            outer_lr=args.outer_lr,
            momentum=args.outer_momentum,
            fragments=args.outer_fragments,
            overlap=args.outer_overlap,
            codec="qsgd",
            bits=args.outer_bits,
        )
    raise ValueError(f"unknown policy {policy!r}: see benchmarks/microcloud.py POLICIES")


def _flat_allreduce_class(dlion):
    """FlatAllreduce as a dlion.Exchange (defined once dlion is imported)."""
    return type("FlatAllreduce", (_FlatAllreduce, dlion.Exchange), {})


class _FlatAllreduce:
    """Horovod's behaviour as a baseline: one flat, dense MPI allreduce of each fused buffer
    per step (mpi4py on COMM_WORLD: no site hierarchy, no per-step control rounds). Not paced
    by the in-process emulation; on the real network it meets the real links."""

    collective = False  # no dlion agreement rounds ride along
    weight = None

    def start(self, buffer, *, name: str, signature: int = 0):
        from mpi4py import MPI

        MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        buffer *= 1.0 / MPI.COMM_WORLD.size
        return self

    def wait(self, timeout=None) -> bool:
        return True

    def describe(self) -> str:
        return "flat MPI allreduce (Horovod-like)"
