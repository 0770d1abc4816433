"""Dataset loading (Fashion-MNIST, digits fallback) and per-rank sharding.

Pure numpy: no MPI, no TensorFlow at import time. Keras is imported only by
:func:`_keras_download`, the last resort before the scikit-learn fallback. The ``DLION_DATA``
folder is the ``data`` option of :class:`dlion.Config`: the running configuration's after
``dlion.init``, else read by :meth:`dlion.Config.from_env` (loaders may run before ``init``).
"""

from __future__ import annotations

import gzip
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_DIRS",
    "FILES",
    "DataFallbackWarning",
    "Dataset",
    "ShardIterator",
    "load_fashion_mnist",
    "reshard_remaining",
    "shard",
    "shard_dataset",
]

#: The four IDX files, in the order (x_train, y_train, x_test, y_test).
FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
#: Folders searched (in order) when neither ``source`` nor ``DLION_DATA`` is set.
DEFAULT_DIRS: list[Path] = [
    Path("/usr/share/datasets/fashion-mnist"),
    Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "fashion-mnist",
]
ENV_VAR = "DLION_DATA"  # the environment variable of Config.data (only Config reads it)


class DataFallbackWarning(UserWarning):
    """Fashion-MNIST was not found; the small scikit-learn digits set is used instead."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test split: float32 images in [0, 1] shaped (N, H, W, 1), int64 labels (N,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    source: str
    num_classes: int
    input_shape: tuple[int, ...]


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file (optionally gzipped); ValueError if malformed."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot decompress ({e})") from e
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated header ({len(raw)} bytes)")
    if raw[0:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != ndim:
        raise ValueError(
            f"{path}: bad magic number {raw[:4].hex()}, expected 000008{ndim:02x} "
            f"(unsigned-byte IDX with {ndim} dimension(s))"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    have = len(raw) - 4 - 4 * ndim
    if have != expected:
        raise ValueError(f"{path}: dimensions {dims} need {expected} data bytes, file has {have}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_files(folder: Path) -> list[Path] | None:
    """Paths of the four IDX files in ``folder`` (``.gz`` preferred), or None if any is missing."""
    found = []
    for stem in FILES:
        cands = [folder / (stem + ".gz"), folder / stem]
        hit = next((p for p in cands if p.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def _make(arrays: tuple[np.ndarray, ...], name: str, source: str) -> Dataset:
    """Scale/reshape raw uint8 arrays ``(x_train, y_train, x_test, y_test)`` into a Dataset."""
    x_tr, y_tr, x_te, y_te = arrays
    for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
        if x.ndim != 3 or len(x) != len(y):
            raise ValueError(f"{source}: {split} images {x.shape} do not match labels {y.shape}")
    scale = 1.0 / float(max(x_tr.max(initial=0), x_te.max(initial=0), 1))

    def img(x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32) * np.float32(scale))[..., None]

    num_classes = 10
    y_tr, y_te = y_tr.astype(np.int64), y_te.astype(np.int64)
    if y_tr.size and not (0 <= y_tr.min() and y_tr.max() < num_classes):
        raise ValueError(f"{source}: labels outside 0..{num_classes - 1}")
    return Dataset(
        img(x_tr),
        y_tr,
        img(x_te),
        y_te,
        name,
        source,
        num_classes,
        tuple(int(d) for d in x_tr.shape[1:]) + (1,),
    )


def _load_folder(folder: Path) -> Dataset | None:
    """Load Fashion-MNIST from ``folder``; None if files are missing, ValueError if corrupt."""
    paths = _find_files(folder)
    if paths is None:
        return None
    arrays = tuple(_read_idx(p, 3 if "images" in p.name else 1) for p in paths)
    return _make(arrays, "fashion-mnist", str(folder))


def _keras_download() -> tuple[np.ndarray, ...]:
    """``keras.datasets.fashion_mnist.load_data()`` (may download); raises on any failure."""
    from keras.datasets import fashion_mnist

    (x_tr, y_tr), (x_te, y_te) = fashion_mnist.load_data()
    return x_tr, y_tr, x_te, y_te


def _load_digits(seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits with a fixed seeded 80/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = round(0.2 * len(y))
    te, tr = perm[:n_test], perm[n_test:]
    return Dataset(
        x[tr],
        y[tr],
        x[te],
        y[te],
        "digits",
        "sklearn.datasets.load_digits (fallback)",
        10,
        (8, 8, 1),
    )


def load_fashion_mnist(source: str | None = None, *, allow_fallback: bool = True) -> Dataset:
    """Load Fashion-MNIST from the first place that has it.

    Order: ``source`` folder, else the ``data`` option (``$DLION_DATA``), else each of
    :data:`DEFAULT_DIRS`, else ``keras.datasets.fashion_mnist.load_data()``. An explicitly
    named folder that lacks the files raises :class:`FileNotFoundError`. If nothing implicit
    works, warns with :class:`DataFallbackWarning` and returns scikit-learn's 8x8 digits, or
    raises :class:`FileNotFoundError` when ``allow_fallback`` is False. Corrupt files raise
    :class:`ValueError`.
    """
    explicit = source if source is not None else _data_option() or None
    if explicit is not None:
        ds = _load_folder(Path(explicit))
        if ds is None:
            origin = "source argument" if source is not None else f"${ENV_VAR}"
            raise FileNotFoundError(
                f"Fashion-MNIST not found in {explicit!s} (from {origin}): expected the files "
                + ", ".join(f"{f}[.gz]" for f in FILES)
            )
        return ds
    tried = []
    for folder in DEFAULT_DIRS:
        ds = _load_folder(Path(folder))
        if ds is not None:
            return ds
        tried.append(str(folder))
    try:
        return _make(_keras_download(), "fashion-mnist", "keras.datasets.fashion_mnist.load_data()")
    except Exception as e:  # noqa: BLE001 - any failure means "not available"
        tried.append(f"keras.datasets.fashion_mnist.load_data() ({type(e).__name__}: {e})")
    msg = (
        "Fashion-MNIST was not found at: " + "; ".join(tried) + ". To get it: as root run "
        "`apt-get install -y dataset-fashion-mnist`, or set DLION_DATA to a folder holding "
        + ", ".join(f"{f}.gz" for f in FILES)
        + ", or allow internet access so Keras can download it."
    )
    if not allow_fallback:
        raise FileNotFoundError(msg)
    warnings.warn(
        msg + " Falling back to scikit-learn's bundled 8x8 digits dataset "
        "(1797 samples) - results are NOT comparable to Fashion-MNIST.",
        DataFallbackWarning,
        stacklevel=2,
    )
    return _load_digits()


def _data_option() -> str:
    """The ``data`` option: the running configuration's, else the environment's (before init)."""
    from . import runtime
    from .config import Config

    return (runtime.config() if runtime.is_initialized() else Config.from_env()).data


def shard(n: int, rank: int, size: int, seed: int = 0, shuffle: bool = True) -> np.ndarray:
    """Indices of ``range(n)`` owned by ``rank`` of ``size``.

    A permutation (``np.random.default_rng(seed)``; ``arange`` if not ``shuffle``) is cut
    into ``size`` contiguous parts whose sizes differ by at most one.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got n={n}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got size={size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank must satisfy 0 <= rank < size={size}, got rank={rank}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return order[start:stop].astype(np.int64)


def reshard_remaining(remaining: list[np.ndarray], size: int, seed: int = 0) -> list[np.ndarray]:
    """Cut the samples an interrupted epoch has left into ``size`` parts (one per new rank).

    ``remaining`` holds, per saved rank, the samples its current pass had not drawn yet
    (:meth:`ShardIterator.remaining`). Their union, sorted then permuted by
    ``default_rng([seed, size])``, is cut into ``size`` contiguous parts whose lengths differ
    by at most one (the first ``len % size`` are the longer), as :func:`shard` cuts. Every
    sample of the union is in exactly one part; the result depends only on the arguments, so
    every rank computes the same parts. Raises ``ValueError`` when a sample appears twice.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got size={size}")
    parts = [np.asarray(r, dtype=np.int64).reshape(-1) for r in remaining]
    union = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    if union.size > 1 and bool((union[1:] == union[:-1]).any()):
        dup = int(union[1:][union[1:] == union[:-1]][0])
        raise ValueError(f"sample {dup} is left in two shards: the shards overlap")
    order = union[np.random.default_rng([seed, size]).permutation(union.size)]
    base, extra = divmod(order.size, size)
    cuts = [k * base + min(k, extra) for k in range(size + 1)]
    return [order[cuts[k] : cuts[k + 1]].copy() for k in range(size)]


class ShardIterator:
    """Endless batches over one shard, reshuffled each local epoch.

    Epoch ``e`` visits ``indices`` in the order given by ``default_rng([seed, e])``;
    a batch may straddle two epochs and its size may change from call to call.

    After a restore at another world size (:mod:`dlion.checkpoint`), the current epoch is
    instead this rank's part of what the interrupted epoch had left (:meth:`resume_pass`, any
    samples of ``x``, not only ``indices``); the epochs after it are the usual ones.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, indices: np.ndarray, seed: int = 0) -> None:
        """Iterate over ``x[indices]``, ``y[indices]`` (arrays are not copied)."""
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(x)):
            raise ValueError(f"indices must lie in [0, {len(x)}), got [{idx.min()}, {idx.max()}]")
        self.x, self.y, self.indices = x, y, idx
        self._seed, self._epoch, self._pos, self._seen = int(seed), 0, 0, 0
        self._custom = False  # the current pass is a resumed one (resume_pass), not an epoch
        self._order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray:
        rng = np.random.default_rng([self._seed, self._epoch])
        return self.indices[rng.permutation(len(self.indices))]

    @property
    def samples_seen(self) -> int:
        """Total number of samples drawn so far."""
        return self._seen

    @property
    def local_epoch(self) -> int:
        """Number of complete passes over this shard so far."""
        return self._epoch

    def __len__(self) -> int:
        """Number of samples in this shard (one local epoch)."""
        return len(self.indices)

    def next(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the next ``batch_size`` samples ``(x, y)`` as new arrays."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got batch_size={batch_size}")
        if len(self.indices) == 0:
            raise ValueError("cannot draw a batch from an empty shard")
        parts, need = [], int(batch_size)
        while need:
            take = min(need, len(self._order) - self._pos)
            parts.append(self._order[self._pos : self._pos + take])
            self._pos += take
            need -= take
            if self._pos == len(self._order):
                self._next_epoch()
        self._seen += batch_size
        sel = np.concatenate(parts)
        return self.x[sel], self.y[sel]

    def _next_epoch(self) -> None:
        self._epoch, self._pos, self._custom = self._epoch + 1, 0, False
        self._order = self._epoch_order()

    def remaining(self) -> np.ndarray:
        """The samples (indices into ``x``) the current pass has not drawn yet, in order."""
        return self._order[self._pos :].copy()

    def elastic_state(self) -> dict[str, np.ndarray]:
        """What a restore at another world size needs besides :meth:`state`: the samples the
        current pass has left (saved by :func:`dlion.checkpoint.save`, not by :meth:`state`)."""
        return {"remaining": self.remaining()}

    def resume_pass(self, samples: np.ndarray, epoch: int, samples_seen: int = 0) -> None:
        """Make ``samples`` (indices into ``x``, in this order) the rest of the current epoch
        ``epoch``; then epoch ``epoch + 1`` over ``indices`` follows as usual. An empty
        ``samples`` starts epoch ``epoch + 1`` at once."""
        order = np.asarray(samples, dtype=np.int64).reshape(-1)
        if order.size and (order.min() < 0 or order.max() >= len(self.x)):
            raise ValueError(f"samples must lie in [0, {len(self.x)}), got [{order.min()}, ...]")
        if epoch < 0 or samples_seen < 0:
            raise ValueError(f"invalid epoch={epoch} or samples_seen={samples_seen}")
        self._epoch, self._pos, self._seen = int(epoch), 0, int(samples_seen)
        self._custom, self._order = True, order.copy()
        if not order.size:
            self._next_epoch()

    def state(self) -> dict[str, Any]:
        """Checkpointable position: seed, epoch, position, samples_seen and shard size (and,
        while a resumed pass runs, its ``order``)."""
        out: dict[str, Any] = {
            "seed": self._seed,
            "epoch": self._epoch,
            "position": self._pos,
            "samples_seen": self._seen,
            "size": len(self.indices),
        }
        if self._custom:
            out["order"] = self._order.copy()
        return out

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume exactly from a :meth:`state` dict (same data and indices assumed)."""
        size = int(state.get("size", len(self.indices)))
        pos, epoch = int(state["position"]), int(state["epoch"])
        if size != len(self.indices):
            raise ValueError(f"state is for a shard of {size} samples, this one has {len(self)}")
        custom = "order" in state
        length = len(np.asarray(state["order"]).reshape(-1)) if custom else size
        if not (0 <= pos < max(length, 1) and epoch >= 0):
            raise ValueError(f"invalid state: epoch={epoch}, position={pos}, size={length}")
        self._seed, self._epoch, self._pos = int(state["seed"]), epoch, pos
        self._seen = int(state["samples_seen"])
        if custom:
            self.resume_pass(state["order"], epoch, self._seen)
            self._pos = pos
        else:
            self._custom, self._order = False, self._epoch_order()


def shard_dataset(ds: Dataset, rank: int, size: int, seed: int = 0) -> ShardIterator:
    """ShardIterator over the training shard of ``ds`` owned by ``rank`` of ``size``."""
    return ShardIterator(ds.x_train, ds.y_train, shard(len(ds.y_train), rank, size, seed), seed)
