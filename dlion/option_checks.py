"""The checks every :class:`dlion.Config` option goes through, driven by its declared type.

:meth:`dlion.Config.validate` runs them for every field, so a field added later is checked
without code of its own:

* **type**, from the field's annotation: ``bool`` takes only ``True``/``False`` (``"no"`` is an
  error, not ``True``); ``int`` takes integers and integral floats (``1e6``), not ``bool``;
  ``float`` takes any real number but NaN; ``str`` takes ``str`` (and ``os.PathLike`` for path
  options); ``Literal[...]``, ``X | None`` and unions are checked member by member. A value of
  the wrong type raises :class:`OptionTypeError` (an ``InvalidArgumentError`` and a
  ``TypeError``) naming the option, its environment variable and what it accepts.
* **durations**: a ``float`` option whose name ends in ``_s`` is a duration in seconds; it must
  not be negative, and ``inf`` (or anything from :data:`NEVER_S` up) means "never" and is stored
  as :data:`NEVER_S` (about 31.7 years), which the engine's deadlines (``steady_clock`` plus
  int64 nanoseconds, overflowing above about 9.2e9 s) hold without overflow.
* **paths**: an option whose field carries ``metadata={"path": "write"}`` names a file dlion will
  write; when it is set, its folder must exist and take a new file (tried, not guessed from
  permission bits), so a bad path fails at ``dlion.init``, not at ``shutdown``.
* **engine range**: values of the options the C++ engine reads must fit its C++ types
  (checked by setting them on an ``EngineConfig``).
"""

from __future__ import annotations

import math
import os
import types
import typing
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, OptionTypeError

#: "Never", in seconds: what ``inf`` (and any larger duration) is stored as.
NEVER_S = 1e9


def label(name: str, prefix: str = "DLION_") -> str:
    """``"stall_timeout_s (DLION_STALL_TIMEOUT_S)"``: how errors name an option."""
    return f"dlion option {name} ({prefix}{name.upper()})"


def coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` checked against the annotation ``hint`` and normalised (numpy scalars to
    Python ones, integral floats to ``int``, paths to ``str``); raises ``OptionTypeError``."""
    ok, out = _match(hint, value)
    if not ok:
        raise OptionTypeError(
            f"{label(name)} takes {_accepts(hint)}, got {value!r:.80} ({type(value).__name__})"
        )
    return out


def duration(name: str, value: float) -> float:
    """A duration option: not negative; ``inf`` and values from ``NEVER_S`` on mean never."""
    if value < 0:
        raise InvalidArgumentError(
            f"{label(name)} is a duration in seconds and must be >= 0 (inf means never), got "
            f"{value}"
        )
    return min(value, NEVER_S)


def check_writable(name: str, path: str) -> None:
    """The folder of ``path`` exists and takes a new file; ``path`` is not a folder."""
    target = Path(path)
    folder = target.parent
    where = f"{label(name)}={path!r}"
    if target.is_dir():
        raise InvalidArgumentError(f"{where}: is a folder; give the path of a file to write")
    if not folder.is_dir():
        raise InvalidArgumentError(
            f"{where}: the folder {str(folder)!r} does not exist; create it first"
        )
    probe = folder / f".dlion-write-test-{os.getpid()}"
    try:
        with open(probe, "x"):
            pass
    except OSError as e:
        raise InvalidArgumentError(
            f"{where}: cannot write into {str(folder)!r} ({type(e).__name__}: {e.strerror})"
        ) from e
    finally:
        probe.unlink(missing_ok=True)


def fits_engine(name: str, value: Any, engine_config: Any) -> None:
    """``value`` can be set on the C++ engine's config (its C++ type holds it)."""
    try:
        setattr(engine_config, name, value)
    except (TypeError, OverflowError) as e:
        raise InvalidArgumentError(
            f"{label(name)}={value!r} is out of the range of the engine's C++ setting "
            "(microsecond settings: 0 .. 2**31 - 1; byte counts: 0 .. 2**64 - 1)"
        ) from e


def _match(hint: Any, value: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return (value in typing.get_args(hint) and not isinstance(value, np.ndarray)), value
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(hint):
            ok, out = _match(member, value)
            if ok:
                return True, out
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool | np.bool_), bool(value) if _is_bool(value) else value
    if _is_bool(value):
        return False, value  # True is not 1 here: a bool for a number is a mistake
    if hint is int:
        if isinstance(value, int | np.integer):
            return True, int(value)
        if isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value):
            return True, int(value)
        return False, value
    if hint is float:
        if not isinstance(value, int | np.integer | float | np.floating):
            return False, value
        try:
            out = float(value)
        except OverflowError:  # an int beyond float range
            return False, value
        return not math.isnan(out), out
    if hint is str:
        if isinstance(value, str):
            return True, value
        if isinstance(value, os.PathLike):
            return True, os.fspath(value)
        return False, value
    return True, value  # a type this module does not know: the field's own checks apply


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def _accepts(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_accepts(m) for m in typing.get_args(hint))
    return {
        bool: "True or False (in the environment: 1/0, true/false, yes/no, on/off)",
        int: "an int",
        float: "a real number (int or float; not NaN)",
        str: "a str",
        type(None): "None",
    }.get(hint, getattr(hint, "__name__", str(hint)))
