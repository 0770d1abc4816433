"""Config: defaults, DLION_<FIELD> environment variables, overrides, validation."""

import dataclasses

import pytest

from dlion.config import ENGINE_FIELDS, Config


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
