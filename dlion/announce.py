"""The one line ``dlion.init`` prints on rank 0: how the default exchange will run, and why.

:class:`dlion.PerLinkExchange` (the default of every optimizer and tape) runs as a dense
allreduce when the probe at ``init`` finds every link LAN-fast, and decentralized otherwise,
where replicas differ during training. Saying which, once, with the measured figure that
decided it, is what lets a user know whether rank 0's model is the model. ``quiet=True``
(``DLION_QUIET=1``) leaves the line out.
"""

from __future__ import annotations

from . import runtime


def _rate(bytes_per_s: float) -> str:
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_s >= scale:
            return f"{bytes_per_s / scale:.3g} {unit}"
    return f"{bytes_per_s:.3g} B/s"


def exchange_mode() -> str:
    """The line: ranks and sites, the probe's verdict, and the mode it leads to."""
    size, sites = runtime.size(), runtime.sites()
    n_sites = len(set(sites))
    lan_Bps = runtime.config().lan_bandwidth_Bps
    slowest = runtime.slowest_link_Bps()
    head = f"dlion: {size} ranks on {n_sites} site{'s' if n_sites != 1 else ''}"
    if lan_Bps <= 0:
        why = "the LAN test is off (lan_bandwidth_Bps=0)"
    elif slowest is None:
        why = "one site, no emulated links"
    else:
        sign = ">=" if runtime.all_links_fast() else "<"
        why = f"slowest link measured {_rate(slowest)} {sign} lan_bandwidth_Bps {_rate(lan_Bps)}"
    if runtime.all_links_fast():
        mode = "PerLinkExchange runs as a dense allreduce (replicas stay identical)"
    else:
        where = "site-aware" if 1 < n_sites < size else "rank to rank"
        mode = (
            f"PerLinkExchange runs decentralized ({where} top-k); replicas differ during "
            "training, dlion.average_replicas(model) makes one model"
        )
    return f"{head}; {why}: {mode} (DLION_QUIET=1 hides this line)"
