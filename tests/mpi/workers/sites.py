"""The site-aware exchange on real ranks, against a numpy model of what it must compute.

The sites of the ranks come from DLION_TEST_SITES (e.g. "A,B,B,B"). Every rank regenerates
every rank's gradients and weights from (rank, step), so each can compute the expected result
locally. Scenarios (argv[1]):
  exact     dense: every rank ends with the weighted sum over all ranks, two buffers per step
  feedback  top-k (float32 values) with error feedback: the result equals the model in which
            each site pair and shard keeps a residual, sends its top-k and keeps the rest; the
            engine's residuals equal the model's (nothing lost per site pair)
  stale S   staleness S across sites, one site slowed: the fast site runs ahead at most S
            steps, and after a final synchronized step every message was applied exactly once
"""

import os
import sys
import time

import numpy as np
from _report import report
from mpi4py import MPI

import dlion
from dlion.exchange import sites as S

SITES = os.environ["DLION_TEST_SITES"].split(",")
dlion.init(site=SITES[MPI.COMM_WORLD.rank])
rank, size = dlion.rank(), dlion.size()
STEPS = 5


def weight(r: int) -> float:
    raw = [1.0 + 0.5 * q for q in range(size)]
    return raw[r] / sum(raw)


def grad(r: int, step: int, n: int, salt: int = 0) -> np.ndarray:
    rng = np.random.default_rng(1000 * step + 10 * r + salt)
    return rng.standard_normal(n).astype(np.float32)


def site_sum(site: str, step: int, n: int, salt: int = 0) -> np.ndarray:
    acc = np.zeros(n, np.float32)
    for q in range(size):
        if SITES[q] == site:
            acc += np.float32(weight(q)) * grad(q, step, n, salt)
    return acc


def exact() -> dict:
    ex = dlion.PeerExchange("dense", topology="sites", weight=weight(rank))
    worst = 0.0
    for step in range(STEPS):
        a, b = grad(rank, step, 1001), grad(rank, step, 37, salt=1)
        ha = ex.start(a, name="a")
        hb = ex.start(b, name="b")
        ha.wait()
        hb.wait()
        for buf, n, salt in ((a, 1001, 0), (b, 37, 1)):
            want = sum(site_sum(s, step, n, salt) for s in dict.fromkeys(SITES))
            worst = max(worst, float(np.max(np.abs(buf - want))))
    return {"worst": worst, "site_aware": ex.site_aware(), "describe": ex.describe()}


def feedback() -> dict:
    n, ratio = 997, 0.1
    ex = dlion.PeerExchange("topk", k_ratio=ratio, bits=32, topology="sites", weight=weight(rank))
    where = S.layout()
    order = list(dict.fromkeys(SITES))
    cuts = {s: S.shards(n, len(where.members[s])) for s in order}
    # Model: one residual per (sender site, receiver site, sender shard, receiver shard).
    residual: dict[tuple[str, str, int, int], np.ndarray] = {}
    worst = 0.0
    for step in range(STEPS):
        buf = grad(rank, step, n)
        ex.start(buf, name="g").wait()
        sums = {s: site_sum(s, step, n) for s in order}
        want = sums[where.site].copy()
        for s in order:
            for t in order:
                if t == s:
                    continue
                for i, a in enumerate(cuts[s]):
                    for j, b in enumerate(cuts[t]):
                        off, ln = S.overlap(a, b)
                        if ln == 0:
                            continue
                        r = residual.setdefault((s, t, i, j), np.zeros(ln, np.float32))
                        r += sums[s][off : off + ln]
                        top = np.argsort(-np.abs(r), kind="stable")[: ex.k_for(ln)]
                        sent = np.zeros(ln, np.float32)
                        sent[top] = r[top]
                        r -= sent
                        if t == where.site:
                            want[off : off + ln] += sent
        worst = max(worst, float(np.max(np.abs(buf - want))))
    # The engine's residuals of the pieces this rank sends: equal to the model's.
    engine, gid = dlion.runtime.peer_engine(), dlion.exchange.peer.group_id
    res_worst, pieces = 0.0, 0
    me, site = where.index, where.site
    for t in order:
        if t == site:
            continue
        for j, b in enumerate(cuts[t]):
            if S.overlap(cuts[site][me], b)[1] == 0:
                continue
            got = engine.residual(gid(f"g@{site}>{t}#{me}.{j}"), where.members[t][j])
            model = residual[(site, t, me, j)]
            res_worst = max(res_worst, float(np.max(np.abs(got - model))))
            pieces += 1
    return {"worst": worst, "residual_worst": res_worst, "pieces": pieces}


def stale(s: int) -> dict:
    n = 64
    ex = dlion.PeerExchange("dense", topology="sites", staleness=s, weight=weight(rank))
    slow_site = SITES[-1]
    steps = 12
    total = np.zeros(n, np.float64)
    ahead = 0
    for step in range(steps):
        if SITES[rank] == slow_site:
            time.sleep(0.15)
        if step == steps - 1:
            ex.synchronize_next()
        buf = grad(rank, step, n)
        ex.start(buf, name="g").wait()
        total += buf
        stats = dlion.link_stats()
        ahead = max([ahead] + [st.staleness_max for st in stats.values()])
    want = sum(
        site_sum(x, step, n).astype(np.float64)
        for x in dict.fromkeys(SITES)
        for step in range(steps)
    )
    return {"worst": float(np.max(np.abs(total - want))), "staleness_max": ahead}


def residuals(ex, where) -> dict[str, list[float]]:
    """This rank's wide-area residuals, by piece name (what a checkpoint must carry)."""
    engine, gid = dlion.runtime.peer_engine(), dlion.exchange.peer.group_id
    out = {}
    for t in dict.fromkeys(SITES):
        if t == where.site:
            continue
        for j in range(len(where.members[t])):
            name = f"g@{where.site}>{t}#{where.index}.{j}"
            res = engine.residual(gid(name), where.members[t][j])
            if res.size:
                out[name] = res.tolist()
    return out


def checkpointed() -> dict:
    """Residuals and steps of the site-aware exchange survive a checkpoint and a re-init."""
    from dlion import checkpoint

    directory = os.path.join(os.environ["DLION_TEST_OUT"], "ckpt")
    ex = dlion.PeerExchange("topk", k_ratio=0.05, bits=32, topology="sites", weight=weight(rank))
    for step in range(3):
        ex.start(grad(rank, step, 500), name="g").wait()
    checkpoint.save(directory, 3, exchange=ex)
    before = residuals(ex, S.layout())
    dlion.shutdown()
    dlion.init(site=SITES[MPI.COMM_WORLD.rank])
    ex2 = dlion.PeerExchange("topk", k_ratio=0.05, bits=32, topology="sites", weight=weight(rank))
    checkpoint.load(directory, exchange=ex2)
    after = residuals(ex2, S.layout())
    ex2.start(grad(rank, 3, 500), name="g").wait()  # the next step runs on the restored state
    step = dlion.exchange.peer.last_step(dlion.exchange.peer.group_id("g"))
    return {"before": before, "after": after, "step": step}


def train() -> dict:
    """DistributedOptimizer with the default PerLinkExchange over two sites: site-aware, the
    loss goes down, and the ranks of a site hold the same weights at every step."""
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((20,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(4)]
    )
    ex = dlion.PerLinkExchange()
    opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.05), exchange=ex)
    dlion.broadcast_variables(model.variables, root_rank=0)
    rng = np.random.default_rng(rank)
    w_true = np.random.default_rng(99).standard_normal((20, 4)).astype(np.float32)
    losses, sums = [], []
    for step in range(30):
        x = rng.standard_normal((32, 20)).astype(np.float32)
        y = x @ w_true
        if step == 29:
            ex.synchronize_next()
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        losses.append(float(loss))
        sums.append(float(sum(float(tf.reduce_sum(v)) for v in model.trainable_variables)))
    return {
        "describe": ex.describe(),
        "site_aware": ex.site_aware(),
        "first": float(np.mean(losses[:5])),
        "last": float(np.mean(losses[-5:])),
        "sums": sums,
    }


mode = sys.argv[1]
if mode == "train":
    rec = train()
elif mode == "exact":
    rec = exact()
elif mode == "checkpoint":
    rec = checkpointed()
elif mode == "feedback":
    rec = feedback()
else:
    rec = stale(int(sys.argv[2]))
report(rank, rec)
dlion.shutdown()
