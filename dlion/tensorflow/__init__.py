"""TensorFlow 2 / Keras 3 integration: DistributedOptimizer, DistributedGradientTape, broadcast."""

from .broadcast import broadcast_global_variables, broadcast_variables
from .optimizer import DistributedOptimizer
from .replicas import average_replicas
from .tape import DistributedGradientTape

__all__ = [
    "DistributedGradientTape",
    "DistributedOptimizer",
    "average_replicas",
    "broadcast_global_variables",
    "broadcast_variables",
]
