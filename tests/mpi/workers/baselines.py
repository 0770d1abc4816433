"""GaiaExchange and AkoExchange on real ranks, against a numpy simulation of every link.

Every rank regenerates every rank's gradients from (seed, rank, step) and simulates, in float32,
each link's residual and what it sends (the policy's selection rule), so it can check:
  * its aggregate == own weighted gradient + the weighted messages the simulation says its
    peers sent (what is sent);
  * the engine's residual of each of its links == the simulated one (what is kept);
  * sum over steps of what it received + its peers' residuals for it == the sum of its peers'
    gradients (nothing lost), from the engine's values alone.
Ako also reports the bytes each link sent per step (dlion.link_stats), with float and with
8-bit values, for the test to hold against the wire format's values-only size.
Scenario (argv[1]): "gaia" (two fused buffers; parameters change every step) or "ako".
DLION_TEST_SITES="A,A,B,B" sets each rank's site.
"""

import os
import sys

import numpy as np
from _report import report
from mpi4py import MPI

if os.environ.get("DLION_TEST_SITES"):
    os.environ["DLION_SITE"] = os.environ["DLION_TEST_SITES"].split(",")[MPI.COMM_WORLD.rank]

import dlion  # noqa: E402
from dlion.exchange.ako import partition  # noqa: E402
from dlion.exchange.peer import group_id  # noqa: E402

dlion.init()
rank, size = dlion.rank(), dlion.size()
sites = dlion.sites()
scenario = sys.argv[1]
STEPS = 7
SIZES = {"g0": 6000, "g1": 4000}  # two fused buffers, exchanged in this order
W = np.float32(1.0 / size)


def grad(name: str, r: int, step: int) -> np.ndarray:
    seed = 11 + list(SIZES).index(name)
    return np.random.default_rng([seed, r, step]).standard_normal(SIZES[name]).astype(np.float32)


# Gaia: the parameters (two "variables" covering both buffers), equal on every rank, changing
# every step; some are zero (every nonzero accumulation of those is significant).
THRESHOLD, LR = 0.25, 0.5  # t = threshold / lr = 0.5 exactly
base = np.random.default_rng(3).standard_normal(10_000).astype(np.float32) * 2
base[::17] = 0
params = [np.empty((60, 100), np.float32), np.empty(4000, np.float32)]


def params_at(step: int) -> np.ndarray:
    return base * np.float32(1 + 0.1 * step)


def set_params(step: int) -> None:
    v = params_at(step)
    params[0][...] = v[:6000].reshape(60, 100)
    params[1][...] = v[6000:]


def select(name: str, src: int, dst: int, x: np.ndarray, step: int) -> np.ndarray:
    """What link src -> dst sends of x (dense float32 vector with the selected entries)."""
    if scenario == "ako":
        off, k = partition(x.size, 3, step % 3)
        sent = np.zeros_like(x)
        sent[off : off + k] = x[off : off + k]
        return sent
    if sites[src] == sites[dst]:
        return x.copy()  # dense inside a site
    off = 0 if name == "g0" else SIZES["g0"]
    ref = params_at(step)[off : off + x.size]
    t = np.float32(THRESHOLD / LR)
    return np.where(np.abs(x) > t * np.abs(ref), x, np.float32(0))


if scenario == "gaia":
    policy: dlion.PeerExchange = dlion.GaiaExchange(
        THRESHOLD, params=params, learning_rate=LR, topology="ranks"
    )
else:
    policy = dlion.AkoExchange(3)

names = {n: f"{scenario}.{n}" for n in SIZES}
residual = {
    (n, s, d): np.zeros(SIZES[n], np.float32)
    for n in SIZES
    for s in range(size)
    for d in range(size)
    if s != d
}
sent_log: dict = {}
received = {n: np.zeros(SIZES[n], np.float64) for n in SIZES}
grads_sum = {n: np.zeros(SIZES[n], np.float64) for n in SIZES}
counts = {"cross_fraction": [], "intra_dense": True}
peers = [d for d in range(size) if d != rank]
bytes_per_step: list[dict[int, int]] = []  # per step: {peer: bytes sent on that link}
msgs_per_step: list[dict[int, int]] = []
for step in range(STEPS):
    before = dlion.link_stats()
    set_params(step)
    if step == STEPS - 1:
        policy.synchronize_next()
    pending = []
    for n in SIZES:
        g = grad(n, rank, step)
        buf = g.copy()
        pending.append((n, g, buf, policy.start(buf, name=names[n])))
    for *_, h in pending:
        assert h.wait(60)
    after = dlion.link_stats()  # messages count when queued, so a step's are all in
    bytes_per_step.append({d: after[d].bytes_sent - before[d].bytes_sent for d in peers})
    msgs_per_step.append({d: after[d].messages_sent - before[d].messages_sent for d in peers})
    for n, g, buf, _ in pending:
        expected = W * g
        for s in range(size):
            if s != rank:
                grads_sum[n] += grad(n, s, step)
        for s in range(size):
            for d in range(size):
                if s == d:
                    continue
                x = residual[(n, s, d)] + grad(n, s, step)
                sent = select(n, s, d, x, step)
                residual[(n, s, d)] = x - sent
                sent_log[(n, s, d, step)] = sent
                if d == rank:
                    expected = expected + W * sent
        np.testing.assert_allclose(buf, expected, rtol=1e-5, atol=1e-6, err_msg=f"{n} step {step}")
        received[n] += (buf.astype(np.float64) - W * g.astype(np.float64)) / W
        if scenario == "gaia" and n == "g0":
            for d in range(size):
                if d != rank and sites[d] != sites[rank]:
                    frac = float(np.count_nonzero(sent_log[(n, rank, d, step)])) / SIZES[n]
                    counts["cross_fraction"].append(frac)

engine = dlion.runtime.peer_engine()
max_residual_error = 0.0
for n in SIZES:
    for d in range(size):
        if d == rank:
            continue
        got = engine.residual(group_id(names[n]), d)
        want = residual[(n, rank, d)]
        if got.size == 0:  # a link without error feedback keeps no residual
            got = np.zeros_like(want)
        max_residual_error = max(max_residual_error, float(np.abs(got - want).max()))
        if scenario == "gaia" and sites[d] == sites[rank]:
            counts["intra_dense"] &= not np.any(want)

# Nothing lost, from the engine's own values: received + peers' residuals for me == sum of grads.
mine = {
    n: {d: engine.residual(group_id(names[n]), d) for d in range(size) if d != rank} for n in SIZES
}
gathered = dlion.allgather_object(mine)
lost = 0.0
scale = 0.0
for n in SIZES:
    owed = sum(
        (gathered[s][n][rank].astype(np.float64) if gathered[s][n][rank].size else 0.0)
        for s in range(size)
        if s != rank
    )
    lost = max(lost, float(np.abs(received[n] + owed - grads_sum[n]).max()))
    scale = max(scale, float(np.abs(grads_sum[n]).max()))

# Ako with 8-bit values: the bytes of each step's message, and the aggregate: exact outside the
# partition, within the quantization error of its bucket's scale inside (step 0: no residual).
ako8: dict = {"bytes_per_step": [], "msgs_per_step": [], "outside_exact": True, "inside_err": 0.0}
if scenario == "ako":
    policy8 = dlion.AkoExchange(3, bits=8, bucket=100)
    for step in range(3):
        before = dlion.link_stats()
        g = grad("g0", rank, 100 + step)
        buf = g.copy()
        assert policy8.start(buf, name="ako8.g0").wait(60)
        after = dlion.link_stats()
        ako8["bytes_per_step"].append(
            {d: after[d].bytes_sent - before[d].bytes_sent for d in peers}
        )
        ako8["msgs_per_step"].append(
            {d: after[d].messages_sent - before[d].messages_sent for d in peers}
        )
        off, k = partition(g.size, 3, step % 3)
        if step == 0:
            peer_sum = sum(grad("g0", s, 100) for s in peers)
            outside = np.ones(g.size, bool)
            outside[off : off + k] = False
            ako8["outside_exact"] = bool(np.array_equal(buf[outside], (W * g)[outside]))
            got = (buf[off : off + k] - W * g[off : off + k]) / W
            bound = sum(np.abs(grad("g0", s, 100)[off : off + k]).max() for s in peers) / 127
            ako8["inside_err"] = float(np.abs(got - peer_sum[off : off + k]).max() / bound)

# Ako: the partition sent at step t carries the sum of that partition's last p gradients.
ako_sum_error = 0.0
if scenario == "ako":
    for step in range(2, STEPS):
        off, k = partition(SIZES["g0"], 3, step % 3)
        for d in range(size):
            if d == rank:
                continue
            want = sum(
                grad("g0", rank, s)[off : off + k].astype(np.float64)
                for s in range(step - 2, step + 1)
            )
            got = sent_log[("g0", rank, d, step)][off : off + k]
            ako_sum_error = max(ako_sum_error, float(np.abs(got - want).max()))

report(
    rank,
    {
        "max_residual_error": max_residual_error,
        "lost": lost,
        "scale": scale,
        "cross_fraction": counts["cross_fraction"],
        "intra_dense": bool(counts["intra_dense"]),
        "ako_sum_error": ako_sum_error,
        "bytes_per_step": bytes_per_step,
        "msgs_per_step": msgs_per_step,
        "ako8": ako8,
        "residual_nonzero": int(
            sum(
                np.count_nonzero(residual[(n, rank, d)])
                for n in SIZES
                for d in range(size)
                if d != rank
            )
        ),
        "describe": policy.describe(),
    },
)
dlion.shutdown()
