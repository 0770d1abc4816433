"""Exchange policies: how a worker combines its gradient with its peers'.

``Allreduce`` is the dense, Horovod-like baseline. Later policies (per-link prioritized exchange,
Gaia, Ako) implement the same :class:`Exchange` contract.
"""

from .allreduce import Allreduce
from .base import Exchange, Pending
from .peer import PeerExchange
from .perlink import PerLinkExchange

__all__ = ["Allreduce", "Exchange", "PeerExchange", "Pending", "PerLinkExchange"]
