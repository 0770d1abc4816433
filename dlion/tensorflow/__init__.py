"""TensorFlow 2 / Keras 3 integration: DistributedOptimizer, DistributedGradientTape, broadcast."""

from .broadcast import broadcast_variables
from .optimizer import DistributedOptimizer
from .tape import DistributedGradientTape

__all__ = ["DistributedGradientTape", "DistributedOptimizer", "broadcast_variables"]
