"""GaiaExchange and AkoExchange reject bad options, saying what is allowed."""

import pytest

import dlion
from dlion.exchange.ako import partition


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": -0.1}, "finite number >= 0"),
        ({"threshold": float("nan")}, "finite number >= 0"),
        ({"learning_rate": 0.0}, "must be > 0"),
        ({"bits": 16}, "use 32 or 8"),
        ({"params": 3}, "list of variables"),
        ({"staleness": -1}, ">= 0"),
    ],
)
def test_gaia_rejects_bad_options(kwargs, match):
    with pytest.raises(dlion.InvalidArgumentError, match=match):
        dlion.GaiaExchange(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"partitions": 0}, "int >= 1"),
        ({"partitions": 2.5}, "int >= 1"),
        ({"bits": 4}, "use 32 or 8"),
        ({"weight": -1.0}, ">= 0"),
    ],
)
def test_ako_rejects_bad_options(kwargs, match):
    with pytest.raises(dlion.InvalidArgumentError, match=match):
        dlion.AkoExchange(**kwargs)


@pytest.mark.parametrize("n, p", [(10, 3), (10_000, 4), (2, 5), (7, 1)])
def test_ako_partitions_tile_the_buffer(n, p):
    parts = [partition(n, p, j) for j in range(p)]
    assert parts[0][0] == 0
    for (o1, k1), (o2, _) in zip(parts, parts[1:]):
        assert o1 + k1 == o2
    assert sum(k for _, k in parts) == n
    assert max(k for _, k in parts) - min(k for _, k in parts) <= 1


def test_gaia_threshold_maps_updates_to_gradients():
    assert dlion.GaiaExchange(0.01).gradient_threshold() == pytest.approx(0.01)
    assert dlion.GaiaExchange(0.01, learning_rate=0.05).gradient_threshold() == pytest.approx(0.2)
