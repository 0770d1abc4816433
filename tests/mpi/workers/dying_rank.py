"""One rank fails mid-training (DistributedOptimizer, real TF); argv[1] says how, argv[2]
(optional) which exchange: "allreduce" (default, the collective engine) or "peer" (the peer
engine, rank to rank).

The last rank ("the victim") trains normally until step 3, then:
  raise    raises in user code (RuntimeError)
  exit     sys.exit(0) without finishing
  stop     stops itself with SIGSTOP (a watchdog process SIGKILLs it after 100 s, so that no
           stopped process can outlive a broken test)
  kill     is killed with SIGKILL
  slow     sleeps (alive) for DLION_TEST_SLOW_S seconds, then goes on: nobody may fail
Every other rank ("survivors") reports what step 3 raised and how long it took, on a
communicator of their own (made while all ranks were alive), then exits non-zero if it failed.
"""

import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from _report import report
from mpi4py import MPI

import dlion

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
how = sys.argv[1]
policy = sys.argv[2] if len(sys.argv) > 2 else "allreduce"
FAIL_STEP = 3
dlion.init()
rank, size = dlion.rank(), dlion.size()
victim = size - 1
survivors = MPI.COMM_WORLD.Split(MPI.UNDEFINED if rank == victim else 0, rank)

keras.utils.set_random_seed(3)
model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(2)])
exchange = dlion.Allreduce() if policy == "allreduce" else dlion.PeerExchange("dense")
opt = dlion.DistributedOptimizer(keras.optimizers.SGD(0.1), name="opt", exchange=exchange)
x = np.random.default_rng(rank).standard_normal((8, 6)).astype(np.float32)


def step() -> None:
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True)))
    opt.apply_gradients(
        zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    )


for _ in range(FAIL_STEP):
    step()

if rank == victim:
    if how == "raise":
        raise RuntimeError(f"user code failed on purpose on rank {rank}")
    if how == "exit":
        sys.exit(0)
    if how == "stop":
        pid = os.getpid()
        subprocess.Popen(
            [
                "sh",
                "-c",
                f"for i in $(seq 100); do kill -0 {pid} 2>/dev/null || exit 0; sleep 1; done; "
                f"kill -CONT {pid}; kill -KILL {pid}",
            ],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.kill(pid, signal.SIGSTOP)
        time.sleep(100)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how != "slow":
        raise SystemExit(f"unknown failure {how}")
    time.sleep(float(os.environ["DLION_TEST_SLOW_S"]))

if rank == victim:  # slow: it goes on like the others
    step()
    step()
    dlion.shutdown()
    raise SystemExit(0)

start = time.monotonic()
try:
    step()
    seen = {"error": None}
except Exception as e:  # noqa: BLE001 - the test inspects type and text
    seen = {"error": type(e).__name__, "message": str(e)}
seconds = time.monotonic() - start
later = {"error": None}
try:
    step()
except Exception as e:  # noqa: BLE001
    later = {"error": type(e).__name__, "message": str(e)}
report(rank, {**seen, "seconds": seconds, "later": later})
survivors.Barrier()  # every survivor has reported before any of them ends the job
if seen["error"]:
    raise SystemExit(1)
dlion.shutdown()
