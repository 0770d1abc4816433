"""TensorFlow 2 / Keras 3 integration: DistributedOptimizer and variable broadcast."""

from .broadcast import broadcast_variables
from .optimizer import DistributedOptimizer

__all__ = ["DistributedOptimizer", "broadcast_variables"]
