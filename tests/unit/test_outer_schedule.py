"""dlion.OuterSync's schedule, fragments and options (no ranks needed)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dlion
from dlion.exchange.outer import due_fragments, fragment_bounds


@given(st.lists(st.integers(1, 1000), min_size=1, max_size=40), st.data())
def test_fragments_cover_every_tensor_once_in_order(sizes, data):
    parts = data.draw(st.integers(1, len(sizes)))
    cuts = fragment_bounds(sizes, parts)
    assert len(cuts) == parts
    assert cuts[0][0] == 0 and cuts[-1][1] == len(sizes)
    for (lo, hi), (nxt, _) in zip(cuts, cuts[1:]):
        assert lo < hi == nxt  # contiguous, none empty
    assert cuts[-1][0] < cuts[-1][1]


def test_fragments_are_balanced_by_elements():
    cuts = fragment_bounds([100] * 8, 4)
    assert cuts == [(0, 2), (2, 4), (4, 6), (6, 8)]
    cuts = fragment_bounds([1000, 1, 1, 1, 1000], 2)
    assert [sum([1000, 1, 1, 1, 1000][lo:hi]) for lo, hi in cuts] in ([1002, 1001], [1001, 1002])


@given(st.integers(1, 60), st.data())
def test_every_fragment_starts_once_in_every_window_of_h_steps(every, data):
    fragments = data.draw(st.integers(1, every))
    starts: dict[int, list[int]] = {f: [] for f in range(fragments)}
    for step in range(1, 4 * every + 1):
        for f in due_fragments(step, every, fragments):
            starts[f].append(step)
    for f, steps in starts.items():
        assert len(steps) >= 3, (f, steps)
        assert all(b - a == every for a, b in zip(steps, steps[1:])), (f, steps)
    # In turn: at most one fragment starts at a step when fragments <= every.
    for step in range(1, 4 * every + 1):
        assert len(due_fragments(step, every, fragments)) <= 1


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"every": 0}, "every=0"),
        ({"every": 4, "overlap": 4}, "overlap=4"),
        ({"every": 4, "fragments": 5}, "fragments=5"),
        ({"outer_lr": 0.0}, "outer_lr=0.0"),
        ({"momentum": 1.0}, "momentum=1.0"),
        ({"weight": -1.0}, "weight=-1.0"),
        ({"codec": "zip"}, "codec='zip'"),
    ],
)
def test_bad_options_are_refused_naming_the_option(kwargs, words):
    with pytest.raises(dlion.InvalidArgumentError, match=words.replace("(", r"\(")):
        dlion.OuterSync(**kwargs)


def test_more_fragments_than_tensors_is_refused():
    with pytest.raises(dlion.InvalidArgumentError, match="3 trainable tensors"):
        fragment_bounds([1, 2, 3], 4)
