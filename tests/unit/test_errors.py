"""The Python error types mirror csrc/common/error.h and keep their standard bases."""

import pytest

import dlion
from dlion import errors


@pytest.mark.parametrize(
    "cls, bases",
    [
        (errors.DlionError, (RuntimeError,)),
        (errors.InvalidArgumentError, (errors.DlionError, ValueError)),
        (errors.MismatchError, (errors.DlionError,)),
        (errors.PeerTimeoutError, (errors.DlionError, TimeoutError)),
        (errors.EngineShutdownError, (errors.DlionError,)),
        (errors.MpiError, (errors.DlionError,)),
        (errors.NotInitializedError, (errors.DlionError,)),
        (errors.OptionTypeError, (errors.InvalidArgumentError, TypeError)),
        (errors.NonFiniteGradientError, (errors.DlionError, ArithmeticError)),
        (errors.NonFiniteGradientWarning, (RuntimeWarning,)),
    ],
)
def test_hierarchy(cls, bases):
    for base in bases:
        assert issubclass(cls, base)
    assert getattr(dlion, cls.__name__) is cls


def test_calls_before_init_name_the_remedy():
    assert not dlion.is_initialized()
    with pytest.raises(errors.NotInitializedError, match=r"dlion.init\(\)"):
        dlion.rank()
