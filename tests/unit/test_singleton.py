"""The runtime in a single process (a singleton MPI job): init, shutdown, launcher check."""

import pytest

import dlion


@pytest.fixture
def runtime():
    yield dlion
    dlion.shutdown()


def test_singleton_init_shutdown(runtime, monkeypatch):
    monkeypatch.delenv("PMI_SIZE", raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    runtime.init()
    assert runtime.size() == 1 and runtime.rank() == 0 and runtime.local_size() == 1
    x = dlion.allreduce(__import__("numpy").arange(4.0), op="sum")
    assert list(x) == [0.0, 1.0, 2.0, 3.0]
    runtime.shutdown()
    assert not runtime.is_initialized()


@pytest.mark.parametrize("var", ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE"])
def test_a_foreign_launcher_is_named(runtime, monkeypatch, var):
    monkeypatch.setenv(var, "4")
    with pytest.warns(RuntimeWarning, match=f"{var}=4.*another MPI"):
        runtime.init()
