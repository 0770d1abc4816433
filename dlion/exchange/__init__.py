"""Exchange policies: how a worker combines its gradient with its peers'.

``Allreduce`` is the dense, Horovod-like baseline. The peer policies (per-link prioritized
exchange, and the Gaia and Ako baselines) implement the same :class:`Exchange` contract.
"""

from .ako import AkoExchange
from .allreduce import Allreduce
from .base import Exchange, Pending, from_config
from .cast import CastAllreduce
from .gaia import GaiaExchange
from .outer import OuterSync
from .peer import PeerExchange
from .perlink import PerLinkExchange

__all__ = [
    "AkoExchange",
    "Allreduce",
    "CastAllreduce",
    "Exchange",
    "GaiaExchange",
    "OuterSync",
    "PeerExchange",
    "Pending",
    "PerLinkExchange",
    "from_config",
]
