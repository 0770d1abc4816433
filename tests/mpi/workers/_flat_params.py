"""A numpy stand-in for a model's trainable tensors, as dlion.OuterSync reads and writes them
(dlion.exchange.base.Parameters): consecutive tensors of ``sizes`` in one flat array."""

import numpy as np


class FlatParams:
    def __init__(self, flat: np.ndarray, sizes: list[int]) -> None:
        self.flat = flat
        self.sizes = list(sizes)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    def read(self, lo: int, hi: int) -> np.ndarray:
        return self.flat[self.offsets[lo] : self.offsets[hi]].copy()

    def write(self, lo: int, hi: int, values: np.ndarray) -> None:
        self.flat[self.offsets[lo] : self.offsets[hi]] = values
