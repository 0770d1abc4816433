"""dlion.OuterSync on real ranks, against a numpy model of the algorithm (no TensorFlow).

The sites come from DLION_TEST_SITES (e.g. "A,A,B,B"). Every rank trains the same toy problem:
parameters are a few flat tensors, rank q's gradient at step t is a_q * theta - b_q + c_{q,t}
(all regenerated from seeds, so every rank can model every site). The inner optimizer is plain
SGD on numpy; the policy sees the parameters through a numpy Parameters view. Scenarios run
one after another in one launch, each under its own exchange names; each reports the largest
difference between what the ranks hold and what the model predicts.
"""

import os

import numpy as np
from _flat_params import FlatParams
from _report import report
from mpi4py import MPI

import dlion
from dlion.exchange import sites as S
from dlion.exchange.outer import due_fragments, fragment_bounds

SITES = os.environ["DLION_TEST_SITES"].split(",")
dlion.init(site=SITES[MPI.COMM_WORLD.rank])
rank, size = dlion.rank(), dlion.size()
SIZES = [301, 7, 150, 41, 3]
N = sum(SIZES)
LR = np.float32(0.05)
ORDER = list(dict.fromkeys(SITES))
MEMBERS = {s: [q for q in range(size) if SITES[q] == s] for s in ORDER}


def coeffs(q: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + q)
    return (
        rng.uniform(0.5, 2.0, N).astype(np.float32),
        rng.standard_normal(N).astype(np.float32),
    )


COEF = [coeffs(q) for q in range(size)]


def grad(q: int, step: int, theta: np.ndarray) -> np.ndarray:
    a, b = COEF[q]
    noise = np.random.default_rng(7919 * step + q).standard_normal(N).astype(np.float32)
    return a * theta - b + np.float32(0.1) * noise


THETA0 = np.random.default_rng(5).standard_normal(N).astype(np.float32)


def topk_site_exchange(sums: dict, k_ratio: float, residual: dict, f: int) -> dict:
    """What each site ends with: its own weighted sum plus every other site's top-k pieces
    (site-aware layout of dlion.exchange.sites), with one residual per piece."""
    out = {t: sums[t].copy() for t in ORDER}
    n = next(iter(sums.values())).size
    for s in ORDER:
        for t in ORDER:
            if s == t:
                continue
            for i, mine in enumerate(S.shards(n, len(MEMBERS[s]))):
                for j, theirs in enumerate(S.shards(n, len(MEMBERS[t]))):
                    off, ln = S.overlap(mine, theirs)
                    if ln == 0:
                        continue
                    key = (s, t, i, j, f)
                    full = sums[s][off : off + ln] + residual.get(key, np.zeros(ln, np.float32))
                    k = min(ln, max(1, int(round(k_ratio * ln))))
                    keep = np.argsort(-np.abs(full), kind="stable")[:k]
                    sent = np.zeros(ln, np.float32)
                    sent[keep] = full[keep]
                    residual[key] = full - sent
                    out[t][off : off + ln] += sent
    return out


def model(cfg: dict, steps: int, batches: list[int] | None) -> dict:
    """Every site's parameters after ``steps`` steps of the algorithm."""
    every, frags, tau = cfg["every"], cfg.get("fragments", 1), cfg.get("overlap", 0)
    lr_out, mu, nesterov = np.float32(cfg["outer_lr"]), np.float32(cfg["momentum"]), cfg["nest"]
    cuts = fragment_bounds(SIZES, frags)
    offs = np.concatenate([[0], np.cumsum(SIZES)]).astype(int)
    rng_of = [(offs[lo], offs[hi]) for lo, hi in cuts]
    theta = {s: THETA0.copy() for s in ORDER}
    anchor = {s: [THETA0[a:b].copy() for a, b in rng_of] for s in ORDER}
    moment: dict = {s: [None] * frags for s in ORDER}
    share = np.zeros((size, frags))
    count = np.zeros(frags)
    residual: dict = {}
    rounds: list = []
    bs = batches or [1] * size
    for step in range(1, steps + 1):
        for s in ORDER:
            tot = sum(bs[q] for q in MEMBERS[s])
            g = sum(np.float32(bs[q] / tot) * grad(q, step, theta[s]) for q in MEMBERS[s])
            theta[s] = theta[s] - LR * g
        share += np.array([b / sum(bs) for b in bs])[:, None]
        count += 1
        for f in due_fragments(step, every, frags):
            a, b = rng_of[f]
            w = share[:, f] / count[f]
            share[:, f], count[f] = 0.0, 0
            deltas = {s: anchor[s][f] - theta[s][a:b] for s in ORDER}
            sums = {
                s: sum(np.float32(w[q]) * deltas[s] for q in MEMBERS[s]).astype(np.float32)
                for s in ORDER
            }
            if cfg["codec"] == "dense":
                combined = {t: sum(sums.values()) for t in ORDER}
            else:
                combined = topk_site_exchange(sums, cfg["k_ratio"], residual, f)
            results = {}
            for s in ORDER:
                d = combined[s]
                if mu:
                    m = d.copy() if moment[s][f] is None else mu * moment[s][f] + d
                    moment[s][f] = m
                    u = d + mu * m if nesterov else m
                else:
                    u = d
                anchor[s][f] = anchor[s][f] - lr_out * u
                results[s] = (anchor[s][f], theta[s][a:b].copy())
            rounds.append((step + tau, f, results))
        for r in [r for r in rounds if r[0] <= step]:
            due, f, results = r
            a, b = rng_of[f]
            for s in ORDER:
                res, snap = results[s]
                theta[s][a:b] = res if not tau else res + (theta[s][a:b] - snap)
            rounds.remove(r)
    return theta


def policy_of(cfg: dict) -> dlion.OuterSync:
    return dlion.OuterSync(
        cfg["every"],
        outer_lr=cfg["outer_lr"],
        momentum=cfg["momentum"],
        nesterov=cfg["nest"],
        fragments=cfg.get("fragments", 1),
        overlap=cfg.get("overlap", 0),
        codec=cfg["codec"],
        bits=32 if cfg["codec"] == "topk" else None,
        k_ratio=cfg.get("k_ratio", 0.01),
    )


def train(policy, name: str, first: int, last: int, theta: np.ndarray, batches) -> np.ndarray:
    """Steps ``first..last`` of this rank's training with ``policy`` (in place on theta)."""
    params = FlatParams(theta, SIZES)
    if batches is not None:
        policy.set_batches(batches)
    for step in range(first, last + 1):
        g = grad(rank, step, theta)
        policy.start(g, name=f"{name}.g").wait()
        policy.before_apply(params, name=name)
        theta -= LR * g
        policy.after_apply(params, name=name)
    return theta


SCENARIOS = {
    # H = 1, outer lr 1, no momentum: dense synchronous averaging.
    "sync": {"every": 1, "outer_lr": 1.0, "momentum": 0.0, "nest": False, "codec": "dense"},
    "nesterov": {
        "every": 3,
        "outer_lr": 0.7,
        "momentum": 0.9,
        "nest": True,
        "codec": "dense",
        "fragments": 2,
        "overlap": 1,
    },
    "topk": {
        "every": 3,
        "outer_lr": 0.8,
        "momentum": 0.5,
        "nest": False,
        "codec": "topk",
        "k_ratio": 0.1,
        "fragments": 3,
        "overlap": 1,
    },
}
STEPS = 10
out: dict = {}
for key, cfg in SCENARIOS.items():
    batches = [2 + q for q in range(size)] if key == "nesterov" else None
    want = model(cfg, STEPS, batches)[SITES[rank]]
    got = train(policy_of(cfg), key, 1, STEPS, THETA0.copy(), batches)
    out[key] = float(np.max(np.abs(got - want)) / (1e-6 + np.max(np.abs(want))))
    if key == "sync":  # the reference itself: one global weighted average per step
        theta = THETA0.copy()
        for step in range(1, STEPS + 1):
            theta -= LR * sum(grad(q, step, theta) for q in range(size)) / np.float32(size)
        out["sync_vs_dense"] = float(np.max(np.abs(got - theta)) / np.max(np.abs(theta)))
        out["sync_site_differs"] = float(np.max(np.abs(got - THETA0)))

# Checkpoint in the middle, with rounds in flight (overlap 1 and three fragments): a new
# policy restored from the state continues exactly as the uninterrupted model.
cfg = SCENARIOS["topk"]
first = policy_of(cfg)
theta = train(first, "ckpt", 1, 5, THETA0.copy(), None)
state = first.state()
out["in_flight_at_checkpoint"] = sum(1 for k in state if k.endswith(":due"))
second = policy_of(cfg)
second.set_state(state)
theta = train(second, "ckpt", 6, STEPS, theta, None)
want = model(cfg, STEPS, None)[SITES[rank]]
out["checkpoint"] = float(np.max(np.abs(theta - want)) / np.max(np.abs(want)))
out["rounds_done"] = second.rounds_done
out["describe"] = second.describe()
report(rank, out)
dlion.shutdown()
