"""Config: defaults, DLION_<FIELD> environment variables, overrides, validation."""

import dataclasses
from typing import Literal

import numpy as np
import pytest

from dlion.config import ENGINE_FIELDS, Config, env_var
from dlion.errors import InvalidArgumentError, OptionTypeError
from dlion.option_checks import NEVER_S


def test_defaults_and_engine_view():
    c = Config.from_env(environ={})
    assert c == Config()
    ec = c.engine_config()
    assert set(ENGINE_FIELDS) <= {f.name for f in dataclasses.fields(Config)}
    for name in ENGINE_FIELDS:
        assert getattr(ec, name) == getattr(c, name)


def test_env_is_derived_from_field_names_and_overrides_win():
    env = {"DLION_STALL_TIMEOUT_S": "12.5", "DLION_RING_SEGMENT_BYTES": "65536"}
    c = Config.from_env({"stall_warning_s": 3}, environ=env)
    assert c.stall_timeout_s == 12.5 and c.ring_segment_bytes == 65536 and c.stall_warning_s == 3
    assert Config.from_env({"stall_timeout_s": 1.0}, environ=env).stall_timeout_s == 1.0


def test_env_var_names_an_option_for_a_launcher():
    assert env_var("site") == "DLION_SITE"
    assert env_var("liveness_timeout_s") == "DLION_LIVENESS_TIMEOUT_S"
    with pytest.raises(TypeError, match="unknown dlion option 'sites'"):
        env_var("sites")


def test_unknown_option_is_a_type_error_listing_the_options():
    with pytest.raises(TypeError, match="stall_timeoutt.*stall_timeout_s"):
        Config.from_env({"stall_timeoutt": 1}, environ={})


@pytest.mark.parametrize(
    "env",
    [
        {"DLION_STALL_TIMEOUT_S": "soon"},
        {"DLION_RING_SEGMENT_BYTES": "1.5"},
        {"DLION_BACKOFF_MAX_US": "nan"},
    ],
)
def test_bad_env_values_name_the_variable(env):
    (var,) = env
    with pytest.raises(ValueError, match=var):
        Config.from_env(environ=env)


@pytest.mark.parametrize(
    "overrides",
    [
        {"stall_timeout_s": 0},
        {"stall_warning_s": -1},
        {"ring_segment_bytes": 10},
        {"backoff_max_us": 0},
    ],
)
def test_out_of_range_values_are_rejected(overrides):
    with pytest.raises(ValueError, match=next(iter(overrides))):
        Config.from_env(overrides, environ={})


def test_boolean_env():
    assert Config.from_env(environ={"DLION_ABORT_ON_EXCEPTION": "0"}).abort_on_exception is False
    assert Config.from_env(environ={"DLION_ABORT_ON_EXCEPTION": "true"}).abort_on_exception
    with pytest.raises(ValueError, match="DLION_ABORT_ON_EXCEPTION"):
        Config.from_env(environ={"DLION_ABORT_ON_EXCEPTION": "maybe"})


def test_site_data_and_simd_are_options_with_their_variables():
    env = {"DLION_SITE": "eu-west", "DLION_DATA": "/data/fmnist", "DLION_SIMD": "baseline"}
    c = Config.from_env(environ=env)
    assert (c.site, c.data, c.simd) == ("eu-west", "/data/fmnist", "baseline")
    assert (Config().site, Config().data, Config().simd) == ("", "", "auto")
    assert Config.from_env({"site": "B"}, environ=env).site == "B"


# --- every option checked by its declared type (issue 18) ----------------------------------------


@pytest.mark.parametrize(
    "overrides, accepted",
    [
        ({"abort_on_exception": "no"}, "True or False"),  # not taken for True
        ({"hierarchical": 1}, "True or False"),
        ({"stall_timeout_s": "5"}, "a real number"),
        ({"stall_warning_s": True}, "a real number"),
        ({"ring_segment_bytes": 1.5}, "an int"),
        ({"probe_bytes": None}, "an int"),
        ({"timeline": b"trace.json"}, "a str"),
        ({"lan_bandwidth_Bps": float("nan")}, "not NaN"),
    ],
)
def test_wrong_types_name_the_option_and_what_it_takes(overrides, accepted):
    (name,) = overrides
    with pytest.raises(OptionTypeError, match=f"{name} \\(DLION_{name.upper()}\\) takes") as e:
        Config.from_env(overrides, environ={})
    assert accepted in str(e.value)
    assert isinstance(e.value, TypeError) and isinstance(e.value, InvalidArgumentError)


def test_values_are_normalised_to_the_field_types():
    c = Config.from_env(
        {"ring_segment_bytes": 1e6, "stall_timeout_s": np.float32(2.5), "probe_bytes": np.int64(8)},
        environ={},
    )
    assert c.ring_segment_bytes == 1_000_000 and type(c.ring_segment_bytes) is int
    assert c.stall_timeout_s == 2.5 and type(c.stall_timeout_s) is float
    assert type(c.probe_bytes) is int


@pytest.mark.parametrize("value", [float("inf"), 2e10, 1e300])
def test_infinite_and_huge_durations_mean_never_without_overflow(value):
    c = Config.from_env({"stall_timeout_s": value, "stall_warning_s": value}, environ={})
    assert c.stall_timeout_s == c.stall_warning_s == NEVER_S
    assert c.engine_config().stall_timeout_s == NEVER_S
    assert Config.from_env(environ={"DLION_STALL_TIMEOUT_S": "inf"}).stall_timeout_s == NEVER_S


def test_values_beyond_the_engines_cpp_types_are_refused():
    with pytest.raises(InvalidArgumentError, match="backoff_spin_us.*engine's C\\+\\+ setting"):
        Config.from_env({"backoff_spin_us": 2**40}, environ={})


def test_paths_to_write_are_checked_when_given(tmp_path):
    with pytest.raises(InvalidArgumentError, match="timeline.*does not exist"):
        Config.from_env({"timeline": str(tmp_path / "missing" / "t.json")}, environ={})
    with pytest.raises(InvalidArgumentError, match="timeline.*is a folder"):
        Config.from_env({"timeline": str(tmp_path)}, environ={})
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidArgumentError, match="timeline.*does not exist"):
        Config.from_env({"timeline": str(tmp_path / "file" / "t.json")}, environ={})
    ok = Config.from_env({"timeline": tmp_path / "trace.json"}, environ={})  # a PathLike
    assert ok.timeline == str(tmp_path / "trace.json") and list(tmp_path.iterdir()) == [
        tmp_path / "file"
    ]  # the probe file is gone


@dataclasses.dataclass(frozen=True)
class _Extended(Config):
    """Fields added later get the same checks, with no code of their own."""

    liveness_timeout_s: float = 10.0
    simd: Literal["auto", "baseline"] = "auto"
    trace_dir: str = dataclasses.field(default="", metadata={"path": "write"})


def test_fields_added_later_are_checked_by_their_types(tmp_path):
    c = _Extended.from_env(environ={"DLION_LIVENESS_TIMEOUT_S": "inf", "DLION_SIMD": "baseline"})
    assert c.liveness_timeout_s == NEVER_S and c.simd == "baseline"
    with pytest.raises(OptionTypeError, match="simd.*one of 'auto', 'baseline'"):
        _Extended.from_env({"simd": "avx"}, environ={})
    with pytest.raises(InvalidArgumentError, match="liveness_timeout_s.*>= 0"):
        _Extended.from_env({"liveness_timeout_s": -1.0}, environ={})
    with pytest.raises(InvalidArgumentError, match="trace_dir.*does not exist"):
        _Extended.from_env({"trace_dir": str(tmp_path / "no" / "x")}, environ={})
