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


def test_options_site_and_simd_apply_while_initialised(runtime):
    import dlion_core

    before = dlion_core.simd()
    runtime.init(site="eu-west", simd="baseline", emulate="[eu-west]-[eu-west]:1gbit:1ms")
    assert runtime.sites() == ["eu-west"] and runtime.site() == "eu-west"
    assert dlion_core.simd() == "baseline"
    assert runtime.emulate.current().link(0, 0, ["eu-west"]).latency_s == 1e-3
    runtime.shutdown()
    assert dlion_core.simd() == before  # the choice of a run ends with it


@pytest.mark.parametrize(
    ("options", "expect"),
    [
        ({"simd": "avx512"}, "mode must be 'auto' or 'baseline', got 'avx512'"),
        ({"site": "A", "emulate": "A-B:1mbit"}, r"'A-B:\.\.\.' names site B, .* sites are A "),
        ({"emulate": "#0-#1:1mbit"}, r"names rank #1, which does not exist.*#0\.\.#0 \(1 rank\)"),
        ({"emulate": "slow=2:3@5"}, "'slow=2:3@5' names rank 2"),
    ],
)
def test_bad_simd_or_emulation_of_missing_ranks_fails_init(runtime, options, expect):
    with pytest.raises(dlion.InvalidArgumentError, match=expect):
        runtime.init(**options)
    assert not runtime.is_initialized()


def test_configure_checks_the_spec_against_the_ranks(runtime):
    runtime.init(site="A")
    with pytest.raises(dlion.InvalidArgumentError, match="names site B"):
        runtime.emulate.configure("A-B:1mbit")
    assert runtime.emulate.configure("A-A:1mbit").links[0][:2] == ("A", "A")
