"""One configuration object for the whole runtime.

Every knob is a field of :class:`Config` with its default. The environment variable of a field
is derived mechanically, ``DLION_<FIELD NAME IN UPPER CASE>`` (e.g. ``DLION_STALL_TIMEOUT_S``),
and read in one place, :meth:`Config.from_env`. Keyword arguments to ``dlion.init`` win over the
environment; an unknown keyword is a ``TypeError``.

Every value is checked once, when the ``Config`` is made (:meth:`Config.validate`): its type from
the field's annotation, durations (``*_s``; ``inf`` means never), paths to write (fields with
``metadata={"path": "write"}``) and the engine's C++ ranges generically (see
:mod:`dlion.option_checks`), then the ranges of particular options. A field added here is
checked by its type without more code. Errors name the option and its environment variable
and say what is accepted.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from typing import Any

import dlion_core as _core

from . import option_checks
from .errors import InvalidArgumentError
from .option_checks import NEVER_S, label

ENV_PREFIX = "DLION_"

#: The fields that the C++ engine reads (``csrc/common/config.h``); the rest are Python-side.
ENGINE_FIELDS = (
    "stall_warning_s",
    "stall_timeout_s",
    "liveness_timeout_s",
    "ring_threshold_bytes",
    "ring_segment_bytes",
    "hierarchical",
    "backoff_spin_us",
    "backoff_max_us",
    "probe_bytes",
    "idle_poll_us",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Runtime and engine settings (see ``csrc/common/config.h`` for the engine's meaning)."""

    stall_warning_s: float = 15.0
    """Warn on stderr, naming the ranks not there yet (and where they are), when an operation
    waits this long; repeated every ``stall_warning_s`` (``inf``: never; stored as
    ``option_checks.NEVER_S``)."""
    stall_timeout_s: float = 300.0
    """Fail a stalled operation with ``PeerTimeoutError`` after this long; the engine then stops.
    This is for ranks that are alive but do not keep up; a dead one is caught much sooner by
    ``liveness_timeout_s``. ``inf``: never time out (stored as ``option_checks.NEVER_S``, about
    31.7 years, which the engine's int64-nanosecond deadlines hold)."""
    liveness_timeout_s: float = 20.0
    """A rank from which no heartbeat arrived for this long is lost (its process died, was frozen
    or is cut off): every other rank raises ``RankLostError`` naming it and its site. Heartbeats
    come from dlion's progress thread, not the training, so a slow rank is never lost."""
    ring_threshold_bytes: int = 256 * 1024
    """Allreduces above this size use the pipelined ring; smaller ones MPI_Iallreduce."""
    ring_segment_bytes: int = 512 * 1024
    """Pipeline segment of the ring allreduce."""
    hierarchical: bool = True
    """When ranks span several sites, large allreduces reduce inside each site, ring among one
    leader per site, and broadcast back: each site's data crosses the slow links once."""
    backoff_spin_us: int = 200
    """Progress threads: the longest they poll (yielding) after progress before they sleep between
    polls (the collective engine spins at most 50 us, the peer engine 200 us; either spins on
    while a transfer is moving)."""
    backoff_max_us: int = 200
    """Progress threads: longest sleep between polls while a request waits on a peer that was
    heard from recently; longer waits sleep up to ``max(backoff_max_us, idle_poll_us)``."""
    probe_bytes: int = 256 * 1024
    """Peer exchange: size of the bandwidth probe ``dlion.init`` sends on every link (0: measure
    latency only)."""
    idle_poll_us: int = 1000
    """Peer exchange: how often the progress thread looks for arriving messages between
    exchanges (they are acknowledged at once, which keeps link timing honest)."""
    lan_bandwidth_Bps: float = 5e7
    """When all ranks share one site with no emulated links, or the probe at ``dlion.init``
    measures every link at least this fast (bytes/s), the network is a LAN and
    ``PerLinkExchange`` runs as a dense allreduce, which is faster there than per-link
    messages; 0 turns this off."""
    emulate: str = ""
    """In-process micro-cloud emulation spec (``DLION_EMULATE``), see :mod:`dlion.emulate`."""
    abort_on_exception: bool = True
    """An uncaught exception on any rank aborts the whole job (MPI_Abort) after its traceback
    is printed, so the other ranks do not wait for it until the stall timeout."""
    timeline: str = dataclasses.field(default="", metadata={"path": "write"})
    """Write a Chrome-trace of compute, pack, exchange, wait and apply spans to this path, one
    file per rank (``trace.json`` -> ``trace.rank0.json``); empty: off. See dlion.timeline.
    Its folder must exist and be writable (checked at ``dlion.init``)."""
    site: str = ""
    """This rank's site (micro-cloud), ``DLION_SITE``; empty: the host name. Ranks of one site
    share fast links; ``shared/tools/microcloud`` sets it per rank."""
    data: str = ""
    """Folder holding the Fashion-MNIST files (``DLION_DATA``), searched first by
    :func:`dlion.data.load_fashion_mnist`; empty: the default folders."""
    quiet: bool = False
    """With more than one rank, ``dlion.init`` on rank 0 prints one line to stderr saying how
    the default exchange (``PerLinkExchange``) will run (dense allreduce or decentralized) and
    why (the probe's slowest link); ``True`` (``DLION_QUIET=1``) leaves it out."""
    simd: str = "auto"
    """Instruction set of the element-wise codec kernels (``DLION_SIMD``): ``"auto"`` (AVX2 when
    the CPU has it) or ``"baseline"`` (SSE2); both give identical bits. Applied by
    ``dlion.init`` until ``dlion.shutdown``; ``dlion_core.set_simd`` sets it directly."""

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_env(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Config:
        """Defaults, then ``DLION_<FIELD>`` variables, then ``overrides``."""
        environ = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides or {}) - set(fields))
        if unknown:
            raise TypeError(f"unknown dlion option(s) {unknown}; the options are {sorted(fields)}")
        hints = _hints(cls)
        values: dict[str, Any] = {}
        for name in fields:
            var = _env_name(name)
            if var in environ:
                values[name] = _parse(var, environ[var], hints[name])
        values.update(overrides or {})
        return cls(**values)  # __post_init__ validates

    def validate(self) -> None:
        """Check every option: type, range, paths (see the module docstring); normalises the
        values in place (``inf`` durations to ``NEVER_S``, numpy scalars to Python ones).

        Raises ``OptionTypeError`` (a ``TypeError``) for a value of the wrong type and
        ``InvalidArgumentError`` (a ``ValueError``) for one out of range, naming the option.
        """
        hints = _hints(type(self))
        for field in dataclasses.fields(self):
            value = option_checks.coerce(field.name, hints[field.name], getattr(self, field.name))
            if hints[field.name] is float and field.name.endswith("_s"):
                value = option_checks.duration(field.name, value)
            object.__setattr__(self, field.name, value)  # frozen: normalise in place
        for field in dataclasses.fields(self):
            if field.metadata.get("path") == "write" and getattr(self, field.name):
                option_checks.check_writable(field.name, getattr(self, field.name))
        self._check_ranges()
        probe = _core.EngineConfig()
        for name in ENGINE_FIELDS:
            option_checks.fits_engine(name, getattr(self, name), probe)

    def _check_ranges(self) -> None:
        """The ranges of particular options (beyond their types)."""
        for name in ("stall_warning_s", "stall_timeout_s", "liveness_timeout_s"):
            if not getattr(self, name) > 0:
                _out_of_range(name, getattr(self, name), f"> 0 seconds (inf: never, {NEVER_S:g})")
        if self.ring_segment_bytes < 1024:
            _out_of_range("ring_segment_bytes", self.ring_segment_bytes, ">= 1024")
        if self.probe_bytes < 0 or self.probe_bytes % 4 or self.probe_bytes > 1 << 30:
            _out_of_range("probe_bytes", self.probe_bytes, "a multiple of 4 in [0, 2**30]")
        if not self.lan_bandwidth_Bps >= 0:
            _out_of_range("lan_bandwidth_Bps", self.lan_bandwidth_Bps, ">= 0 (0: off)")
        if self.idle_poll_us < 1:
            _out_of_range("idle_poll_us", self.idle_poll_us, ">= 1")
        for name, low in (
            ("ring_threshold_bytes", 0),
            ("backoff_spin_us", 0),
            ("backoff_max_us", 1),
        ):
            if getattr(self, name) < low:
                _out_of_range(name, getattr(self, name), f">= {low}")
        if self.emulate:
            from .emulate_spec import parse

            parse(self.emulate)

    def engine_config(self) -> _core.EngineConfig:
        """The C++ engine's view of these settings."""
        ec = _core.EngineConfig()
        for name in ENGINE_FIELDS:
            setattr(ec, name, getattr(self, name))
        return ec


def env_var(name: str) -> str:
    """The environment variable of option ``name`` (``site`` -> ``DLION_SITE``), for a launcher
    that sets options for the ranks it starts; ``TypeError`` for an unknown option."""
    if name not in {f.name for f in dataclasses.fields(Config)}:
        raise TypeError(f"unknown dlion option {name!r}")
    return _env_name(name)


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _out_of_range(name: str, value: Any, accepted: str) -> None:
    raise InvalidArgumentError(f"{label(name)} must be {accepted}, got {value!r}")


def _parse(var: str, text: str, hint: Any) -> Any:
    """The text of environment variable ``var`` as a value of the field type ``hint``."""
    kind = hint if hint in (bool, int, float) else str
    if kind is str:
        return text
    if kind is bool:
        if text.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if text.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise InvalidArgumentError(
            f"environment variable {var}={text!r} is not a boolean "
            "(1/0, true/false, yes/no, on/off)"
        )
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value != value or (kind is int and not value.is_integer()):
        raise InvalidArgumentError(
            f"environment variable {var}={text!r} is not a valid {kind.__name__}"
        )
    return value if kind is float else int(value)
