"""Horovod's optimizer arguments translated into dlion exchanges (dlion/tensorflow/horovod_args.py),
local gradient aggregation (dlion/tensorflow/aggregation.py) and the scatter split, in one
process."""

import numpy as np
import pytest
import tensorflow as tf

import dlion
import dlion_core
from dlion.compression import Compression
from dlion.errors import InvalidArgumentError
from dlion.exchange.sites import SiteLayout, group_names
from dlion.scatter import scatter_counts
from dlion.tensorflow.aggregation import LocalAggregation, check_passes
from dlion.tensorflow.horovod_args import ExchangeSpec, resolve, spec_of

W = "here"


def test_no_compression_keeps_the_exchange():
    given = dlion.Allreduce()
    assert resolve(given, None, "average", True, W) is given
    assert resolve(given, Compression.none, "average", True, W) is given
    assert resolve(None, Compression.none, "average", True, W) is None


@pytest.mark.parametrize("codec", ["fp16", "bf16"])
def test_half_precision_is_a_cast_allreduce_with_identical_replicas(codec):
    ex = resolve(None, getattr(Compression, codec), "average", True, W)
    assert isinstance(ex, dlion.CastAllreduce) and ex.codec == codec
    assert ex.replicas_identical and not ex.error_feedback and ex.staleness == 0
    # A reduce-scatter + allgather of fp16/bf16 messages, all ranks one site.
    assert ex.in_site_plan()[0] == dlion_core.WIRE_ENCODINGS[codec] and not ex.cross_sites
    where = SiteLayout.one_site(4, 2)
    assert (where.sites, where.index, where.mates()) == (("*",), 2, (0, 1, 3))
    names = group_names("g", where)
    assert names == [f"g@*#rs{j}" for j in range(4)] + [f"g@*#ag{j}" for j in range(4)]


def test_other_compressors_map_onto_the_peer_codecs():
    ex = resolve(None, Compression.topk(0.05), "average", True, W)
    assert isinstance(ex, dlion.PeerExchange) and not isinstance(ex, dlion.CastAllreduce)
    assert (ex.codec, ex.k_ratio, ex.bits, ex.error_feedback) == ("topk", 0.05, 32, False)
    assert not ex.replicas_identical
    ex = resolve(
        None,
        Compression.with_memory(Compression.topk(0.1, values=Compression.qsgd(8))),
        "average",
        True,
        W,
    )
    assert (ex.codec, ex.bits, ex.error_feedback) == ("topk", 8, True)
    ex = resolve(None, Compression.qsgd(4, bucket=128), "average", True, W)
    assert (ex.codec, ex.bits, ex.bucket) == ("qsgd", 4, 128)
    assert resolve(None, Compression.sign(), "average", True, W).codec == "sign"
    ex = resolve(None, Compression.with_memory(Compression.fp16), "average", True, W)
    assert ex.codec == "fp16" and ex.error_feedback and not isinstance(ex, dlion.CastAllreduce)


def test_sum_is_an_allreduce_sum_and_specs_compare_equal():
    ex = resolve(None, None, dlion.Sum, True, W)
    assert isinstance(ex, dlion.Allreduce) and ex.op == "sum"
    assert spec_of(None, Compression.fp16, "average", True, W) == ExchangeSpec("cast", "fp16")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sparse_as_dense": False}, "always exchanges IndexedSlices"),
        ({"op": dlion.Adasum}, "Adasum is not offered"),
        ({"op": "max"}, "dlion.Average or dlion.Sum"),
        ({"compression": Compression.randomk(0.1)}, "no wire codec"),
        ({"compression": Compression.qsgd(8, seed=3)}, "seeded by the engine"),
        ({"compression": Compression.topk(0.1, values=Compression.sign())}, "8-bit QSGD"),
        ({"compression": Compression.fp16, "exchange": dlion.Allreduce()}, "not both"),
        ({"op": dlion.Sum, "exchange": dlion.Allreduce()}, "not both"),
        ({"op": dlion.Sum, "compression": Compression.fp16}, "compressed exchanges average"),
    ],
)
def test_what_is_not_offered_is_refused_with_advice(kwargs, message):
    args = {"exchange": None, "compression": None, "op": "average", "sparse_as_dense": True}
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError, match=message):
        resolve(args["exchange"], args["compression"], args["op"], args["sparse_as_dense"], W)


def test_local_aggregation_sums_or_averages_k_passes():
    agg = LocalAggregation(3, average=True)
    grads = [[tf.constant([1.0, 2.0]), None], [tf.constant([3.0, 4.0]), None]]
    assert agg.add(grads[0]) is None and agg.add(grads[1]) is None
    out = agg.add([tf.IndexedSlices(tf.constant([2.0]), tf.constant([1]), tf.constant([2])), None])
    np.testing.assert_allclose(out[0].numpy(), [4 / 3, 8 / 3])
    assert out[1] is None
    total = LocalAggregation(2, average=False)
    assert total.add([tf.constant(1.0)]) is None
    assert float(total.add([tf.constant(2.0)])[0]) == 3.0
    with pytest.raises(InvalidArgumentError, match="same variables"):
        total.add([tf.constant(1.0)])
        total.add([tf.constant(1.0), tf.constant(1.0)])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_backward_passes_per_step_must_be_a_positive_int(bad):
    with pytest.raises(InvalidArgumentError, match="backward_passes_per_step"):
        check_passes(bad, False, W)
    with pytest.raises(InvalidArgumentError, match="average_aggregated_gradients"):
        check_passes(2, 1, W)


def test_scatter_counts_follow_horovod():
    assert scatter_counts(7, 3) == [3, 2, 2]
    assert scatter_counts(2, 4) == [1, 1, 0, 0]
    assert sum(scatter_counts(1001, 7)) == 1001


def test_the_init_line_names_the_mode_and_why():
    from dlion.announce import exchange_mode

    one_site = exchange_mode(["a", "a"], 5e7, None, True)
    assert "2 ranks on 1 site; one site, no emulated links" in one_site
    assert "the default PerLinkExchange runs as a dense allreduce" in one_site
    assert "\n" not in one_site
    slow = exchange_mode(["a", "a", "b", "b"], 5e7, 2.5e6, False)
    assert "slowest link measured 2.5 MB/s < lan_bandwidth_Bps 50 MB/s" in slow
    assert "decentralized (site-aware top-k)" in slow and "average_replicas" in slow
    assert "LAN test is off" in exchange_mode(["a", "b"], 0.0, None, False)


@pytest.mark.parametrize(
    ("key", "advice"),
    [("num_groups", "fusion_bytes="), ("device_dense", "CPU ranks"), ("process_set", "comm=")],
)
def test_horovod_only_arguments_say_what_to_use(key, advice):
    import keras

    with pytest.raises(InvalidArgumentError, match=f"{key}= is Horovod's; .*{advice}"):
        dlion.DistributedOptimizer(keras.optimizers.SGD(0.1), **{key: 1})
    with pytest.raises(TypeError, match="unexpected keyword"):
        dlion.DistributedOptimizer(keras.optimizers.SGD(0.1), made_up=1)
