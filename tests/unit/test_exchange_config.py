"""Exchange policies save their constructor arguments (dlion.keras saves them with the model)."""

import numpy as np
import pytest

import dlion
from dlion.exchange import from_config

POLICIES = [
    dlion.Allreduce(),
    dlion.Allreduce("sum", weight=0.25),
    dlion.PerLinkExchange(bits=32, staleness=1, topology="ranks"),
    dlion.PerLinkExchange(budget_fraction=0.25),
    dlion.PeerExchange("qsgd", bits=4),
    dlion.AkoExchange(3),
    dlion.CastAllreduce("bf16"),
    dlion.OuterSync(10, outer_lr=0.5, fragments=2, overlap=1, codec="topk", bits=32),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: type(p).__name__)
def test_a_policy_is_rebuilt_from_its_config(policy):
    config = policy.get_config()
    assert config is not None and config["class"] == type(policy).__name__
    again = from_config(config)
    assert type(again) is type(policy)
    assert again.describe() == policy.describe()
    assert again.get_config() == config


def test_a_policy_with_model_variables_has_no_plain_config():
    params = [np.zeros(3, np.float32)]
    assert dlion.GaiaExchange(0.01, params=params).get_config() is None


def test_from_config_refuses_what_is_not_a_policy():
    with pytest.raises(dlion.InvalidArgumentError, match="'os' is not an exchange policy"):
        from_config({"class": "os", "args": [], "kwargs": {}})
