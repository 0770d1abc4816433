"""The one line ``dlion.init`` prints on rank 0: how the default exchange will run, and why.

:class:`dlion.PerLinkExchange` (the default of every optimizer and tape) runs as a dense
allreduce when the probe at ``init`` finds every link LAN-fast, and decentralized otherwise,
where replicas differ during training. Saying which, once, with the measured figure that
decided it, is what lets a user know whether rank 0's model is the model. ``quiet=True``
(``DLION_QUIET=1``) leaves the line out.
"""

from __future__ import annotations


def _rate(bytes_per_s: float) -> str:
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_s >= scale:
            return f"{bytes_per_s / scale:.3g} {unit}"
    return f"{bytes_per_s:.3g} B/s"


def exchange_mode(
    sites: list[str], lan_bandwidth_Bps: float, slowest_Bps: float | None, lan: bool
) -> str:
    """The line, from every rank's site, the LAN threshold, the slowest link the probe
    measured (``None``: none measured) and the probe's verdict (``lan``)."""
    size, n_sites = len(sites), len(set(sites))
    head = f"dlion: {size} ranks on {n_sites} site{'s' if n_sites != 1 else ''}"
    if lan_bandwidth_Bps <= 0:
        why = "the LAN test is off (lan_bandwidth_Bps=0)"
    elif slowest_Bps is None:
        why = "one site, no emulated links"
    else:
        sign = ">=" if lan else "<"
        why = (
            f"slowest link measured {_rate(slowest_Bps)} {sign} lan_bandwidth_Bps "
            f"{_rate(lan_bandwidth_Bps)}"
        )
    if lan:
        mode = "the default PerLinkExchange runs as a dense allreduce (replicas stay identical)"
    else:
        where = "site-aware" if 1 < n_sites < size else "rank to rank"
        mode = (
            f"the default PerLinkExchange runs decentralized ({where} top-k); replicas differ "
            "during training, dlion.average_replicas(model) makes one model"
        )
    return f"{head}; {why}: {mode} (DLION_QUIET=1 hides this line)"
