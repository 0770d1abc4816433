"""Unit tests for dlion.data: loading, IDX parsing, fallback, sharding, iteration."""

from __future__ import annotations

import gzip
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlion import data

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _write_idx(path: Path, arr: np.ndarray, compress: bool = True) -> None:
    raw = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _tiny_dataset(folder: Path, compress: bool = True) -> None:
    """Write a small valid Fashion-MNIST-shaped set (5 train, 3 test) into ``folder``."""
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (5, 28, 28)),
        rng.integers(0, 10, 5),
        rng.integers(0, 256, (3, 28, 28)),
        rng.integers(0, 10, 3),
    )
    for stem, arr in zip(data.FILES, arrays, strict=True):
        _write_idx(folder / (stem + (".gz" if compress else "")), arr, compress)


@pytest.fixture
def no_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No env var, default folders empty, keras download failing."""

    def fail() -> tuple[np.ndarray, ...]:
        raise ConnectionError("no network in tests")

    monkeypatch.delenv("DLION_DATA", raising=False)
    monkeypatch.setattr(data, "DEFAULT_DIRS", [tmp_path / "nowhere-a", tmp_path / "nowhere-b"])
    monkeypatch.setattr(data, "_keras_download", fail)


@pytest.fixture(scope="module")
def fmnist() -> data.Dataset:
    if not FMNIST.is_dir():
        pytest.skip(f"{FMNIST} missing (apt-get install -y dataset-fashion-mnist)")
    return data.load_fashion_mnist(str(FMNIST))


def test_real_fashion_mnist(fmnist: data.Dataset) -> None:
    assert fmnist.name == "fashion-mnist"
    assert fmnist.num_classes == 10 and fmnist.input_shape == (28, 28, 1)
    assert fmnist.x_train.shape == (60000, 28, 28, 1)
    assert fmnist.x_test.shape == (10000, 28, 28, 1)
    assert fmnist.y_train.shape == (60000,) and fmnist.y_test.shape == (10000,)
    for x in (fmnist.x_train, fmnist.x_test):
        assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    for y in (fmnist.y_train, fmnist.y_test):
        assert y.dtype == np.int64 and set(np.unique(y)) == set(range(10))
    assert np.bincount(fmnist.y_train).tolist() == [6000] * 10


def test_default_search_finds_system_copy(
    monkeypatch: pytest.MonkeyPatch, fmnist: data.Dataset
) -> None:
    monkeypatch.delenv("DLION_DATA", raising=False)
    monkeypatch.setattr(data, "DEFAULT_DIRS", [FMNIST])
    ds = data.load_fashion_mnist()
    assert ds.source == str(FMNIST) and np.array_equal(ds.y_test, fmnist.y_test)


def test_env_var_copy_of_real_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fmnist: data.Dataset
) -> None:
    for stem in data.FILES:
        if "t10k" in stem:
            shutil.copy(FMNIST / (stem + ".gz"), tmp_path)
        else:  # uncompressed copies must work too
            (tmp_path / stem).write_bytes(gzip.decompress((FMNIST / (stem + ".gz")).read_bytes()))
    monkeypatch.setenv("DLION_DATA", str(tmp_path))
    ds = data.load_fashion_mnist()
    assert ds.source == str(tmp_path)
    assert np.array_equal(ds.x_train, fmnist.x_train) and np.array_equal(ds.y_test, fmnist.y_test)


@pytest.mark.parametrize("compress", [True, False])
def test_env_var_tiny(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, compress: bool) -> None:
    _tiny_dataset(tmp_path, compress)
    monkeypatch.setenv("DLION_DATA", str(tmp_path))
    ds = data.load_fashion_mnist()
    assert ds.x_train.shape == (5, 28, 28, 1) and ds.y_test.shape == (3,)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0


def test_env_var_empty_folder_raises(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_defaults: None
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DLION_DATA", str(empty))
    with pytest.raises(FileNotFoundError, match="empty") as err:
        data.load_fashion_mnist()
    assert str(empty) in str(err.value) and "train-images-idx3-ubyte" in str(err.value)


def test_source_arg_overrides_env_and_missing_raises(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_defaults: None
) -> None:
    _tiny_dataset(tmp_path)
    monkeypatch.setenv("DLION_DATA", str(tmp_path / "does-not-exist"))
    assert data.load_fashion_mnist(str(tmp_path)).source == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        data.load_fashion_mnist()


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda raw: raw[:-7],  # truncated data
        lambda raw: b"\x00\x00\x08\x07" + raw[4:],  # wrong ndim in magic
        lambda raw: b"\x12\x34" + raw[2:],  # garbage magic
        lambda raw: raw[:6],  # truncated header
    ],
)
def test_corrupt_file_raises_value_error(tmp_path: Path, corrupt: Callable[[bytes], bytes]) -> None:
    _tiny_dataset(tmp_path, compress=False)
    bad = tmp_path / data.FILES[0]
    bad.write_bytes(corrupt(bad.read_bytes()))
    with pytest.raises(ValueError, match=data.FILES[0]):
        data.load_fashion_mnist(str(tmp_path))


def test_truncated_gzip_raises_value_error(tmp_path: Path) -> None:
    _tiny_dataset(tmp_path)
    bad = tmp_path / (data.FILES[1] + ".gz")
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(ValueError, match=data.FILES[1]):
        data.load_fashion_mnist(str(tmp_path))


def test_fallback_to_digits_warns(no_defaults: None, tmp_path: Path) -> None:
    with pytest.warns(data.DataFallbackWarning) as rec:
        ds = data.load_fashion_mnist()
    msg = str(rec[0].message)
    assert "nowhere-a" in msg and "nowhere-b" in msg and "apt-get install -y" in msg
    assert "DLION_DATA" in msg and "digits" in msg
    assert ds.name == "digits" and ds.num_classes == 10 and ds.input_shape == (8, 8, 1)
    assert len(ds.y_train) + len(ds.y_test) == 1797 and len(ds.y_test) == 359
    assert ds.x_train.shape[1:] == (8, 8, 1) and ds.x_train.dtype == np.float32
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() == 1.0
    assert ds.y_train.dtype == np.int64
    with pytest.warns(data.DataFallbackWarning):
        again = data.load_fashion_mnist()
    assert np.array_equal(again.y_test, ds.y_test)  # split is fixed


def test_no_fallback_raises(no_defaults: None) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere-a"):
        data.load_fashion_mnist(allow_fallback=False)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 500),
    size=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    shuffle=st.booleans(),
)
def test_shard_partition(n: int, size: int, seed: int, shuffle: bool) -> None:
    parts = [data.shard(n, r, size, seed, shuffle) for r in range(size)]
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(n))  # disjoint and covering
    lens = [len(p) for p in parts]
    assert max(lens) - min(lens) <= 1
    for r, p in enumerate(parts):
        assert p.dtype == np.int64
        assert np.array_equal(p, data.shard(n, r, size, seed, shuffle))
    if not shuffle:
        assert np.array_equal(allidx, np.arange(n))


def test_shard_seed_changes_order() -> None:
    assert not np.array_equal(data.shard(1000, 0, 2, seed=0), data.shard(1000, 0, 2, seed=1))


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((-1, 0, 1), "n=-1"),
        ((10, 0, 0), "size=0"),
        ((10, 3, 3), "rank=3"),
        ((10, -1, 2), "rank=-1"),
    ],
)
def test_shard_validation(args: tuple[int, int, int], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        data.shard(*args)


def _iterator(n: int = 50, seed: int = 3) -> data.ShardIterator:
    x = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n, dtype=np.int64)
    return data.ShardIterator(x, y, data.shard(n, 1, 3, seed=7), seed=seed)


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=40), seed=st.integers(0, 1000))
def test_iterator_one_epoch_each_index_once(sizes: list[int], seed: int) -> None:
    it = _iterator(seed=seed)
    shard_len = len(it)
    seen: list[int] = []
    for b in sizes:
        if len(seen) + b > shard_len:
            b = shard_len - len(seen)
        if b == 0:
            break
        xb, yb = it.next(b)
        assert xb.shape == (b, 2) and yb.shape == (b,)
        assert np.array_equal(xb[:, 0], 2 * yb)  # x and y stay aligned
        seen += yb.tolist()
    if len(seen) < shard_len:
        seen += it.next(shard_len - len(seen))[1].tolist()
    assert sorted(seen) == sorted(it.indices.tolist())
    assert it.local_epoch == 1 and it.samples_seen == shard_len


def test_iterator_straddles_epochs_and_reshuffles() -> None:
    it = _iterator()
    n = len(it)
    first = it.next(n)[1]
    _, y = it.next(n + 3)  # all of epoch 1, then 3 of epoch 2
    assert it.local_epoch == 2 and it.samples_seen == 2 * n + 3
    assert sorted(y[:n].tolist()) == sorted(first.tolist())
    assert not np.array_equal(y[:n], first)  # reshuffled per epoch


def test_iterator_returns_new_arrays() -> None:
    it = _iterator()
    xb, _ = it.next(4)
    assert xb.flags["C_CONTIGUOUS"] and not np.shares_memory(xb, it.x)


def test_iterator_state_resume() -> None:
    it = _iterator()
    for b in (3, 7, 11, 2):
        it.next(b)
    st_ = it.state()
    expect = [it.next(b)[1] for b in (5, 13, 1, 17)]
    fresh = _iterator(seed=999)
    fresh.set_state(dict(st_))
    got = [fresh.next(b)[1] for b in (5, 13, 1, 17)]
    assert all(np.array_equal(a, b) for a, b in zip(expect, got, strict=True))
    assert fresh.state() == it.state()


def test_iterator_validation() -> None:
    it = _iterator()
    with pytest.raises(ValueError, match="batch_size"):
        it.next(0)
    with pytest.raises(ValueError):
        it.set_state({**it.state(), "position": len(it)})
    with pytest.raises(ValueError):
        data.ShardIterator(np.zeros(3), np.zeros(4), np.arange(3))
    with pytest.raises(ValueError):
        data.ShardIterator(np.zeros(3), np.zeros(3), np.array([0, 3]))


def test_shard_dataset(tmp_path: Path) -> None:
    _tiny_dataset(tmp_path)
    ds = data.load_fashion_mnist(str(tmp_path))
    its = [data.shard_dataset(ds, r, 2, seed=1) for r in range(2)]
    assert sorted(np.concatenate([it.indices for it in its]).tolist()) == list(range(5))
    xb, yb = its[0].next(4)
    assert xb.shape == (4, 28, 28, 1) and yb.dtype == np.int64


def test_data_option_of_the_running_config_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_defaults: None
) -> None:
    import dlion

    _tiny_dataset(tmp_path)
    monkeypatch.setenv("DLION_DATA", str(tmp_path / "does-not-exist"))
    dlion.init(data=str(tmp_path))
    try:
        assert data.load_fashion_mnist().source == str(tmp_path)
    finally:
        dlion.shutdown()
    with pytest.raises(FileNotFoundError, match="does-not-exist"):  # before init: the variable
        data.load_fashion_mnist()
