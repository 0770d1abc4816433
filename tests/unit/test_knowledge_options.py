"""dlion.KnowledgeTransfer: option checks and state round trip on one process."""

import math

import numpy as np
import pytest

import dlion
from dlion.knowledge import KnowledgeTransfer, TransferReport, _receivers

HELD = (np.zeros((4, 3), np.float32), np.zeros(4, np.int64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, r"alpha must be a number in \(0, 1\]"),
        ({"alpha": 1.5}, r"alpha must be"),
        ({"alpha": True}, r"alpha must be"),
        ({"every": 0}, r"every must be an int >= 1"),
        ({"every": 2.5}, r"every must be an int >= 1"),
        ({"every": 0.0, "unit": "seconds"}, r"every must be a finite number > 0"),
        ({"margin": -0.1}, r"margin must be a finite number >= 0"),
        ({"margin": math.nan}, r"margin must be"),
        ({"unit": "epochs"}, r"unit must be 'steps' or 'seconds'"),
        ({"score": "accuracy"}, r"score must be 'heldout', 'train_loss' or a callable"),
        ({"held_out": None}, r"needs held_out=\(x, y\)"),
        ({"held_out": (np.zeros((4, 3)), np.zeros(5))}, r"same non-zero first dimension"),
        ({"held_out": (np.zeros((0, 3)), np.zeros(0))}, r"same non-zero first dimension"),
        ({"held_out": np.zeros(3)}, r"held_out must be a pair"),
        ({"score": "train_loss", "held_out": HELD}, r"held_out is only used with"),
        ({"loss_fn": 3}, r"loss_fn must be callable"),
        ({"smoothing": 1.0}, r"smoothing must be a number in \[0, 1\)"),
    ],
)
def test_bad_options_are_rejected(kwargs, match):
    args = {"held_out": HELD, **kwargs}
    with pytest.raises(dlion.InvalidArgumentError, match=match):
        KnowledgeTransfer(**args)


def test_good_options_and_ewma():
    kt = KnowledgeTransfer(every=0.5, unit="seconds", score="train_loss", smoothing=0.5)
    assert kt.every == 0.5 and kt.alpha == 0.5 and kt.margin == 0.02
    kt.observe_loss(2.0)
    kt.observe_loss(np.float32(4.0))
    assert kt._score(None) == 3.0
    assert KnowledgeTransfer(score=lambda m: 1.0).score(None) == 1.0


def test_receivers_use_a_relative_margin():
    s = np.array([1.0, 1.019, 1.021, np.inf])
    assert _receivers(s, 0, 0.02) == [2, 3]
    assert _receivers(s, 0, 0.0) == [1, 2, 3]
    neg = np.array([-2.0, -1.97, -1.9])  # |best| keeps the margin meaningful for negative scores
    assert _receivers(neg, 0, 0.02) == [2]
    assert _receivers(np.array([np.inf, np.inf]), 0, 0.02) == []


def test_state_round_trip():
    kt = KnowledgeTransfer(10, held_out=HELD)
    kt.history = [
        TransferReport(10, 0, 1, (2.0, 1.0, math.inf), (0, 2), 400, 0.5, 0.01),
        TransferReport(20, 0, 0, (1.0, 1.0, 1.0), (), 0, 0.5, 0.002),
    ]
    kt._last_step = 20
    state = kt.state()
    assert all(isinstance(v, np.ndarray | int | float) for v in state.values())
    other = KnowledgeTransfer(10, held_out=HELD)
    other.set_state(state)
    assert other.history == kt.history and other._last_step == 20
    assert other.history[0].merged and not other.history[1].merged
    empty = KnowledgeTransfer(10, held_out=HELD)
    empty.set_state(KnowledgeTransfer(10, held_out=HELD).state())
    assert empty.history == []
