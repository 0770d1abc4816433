"""The worker's side of the dynamic scenarios: it runs under ``python -m dlion.run``.

Every attempt (one ``mpiexec`` job on the hosts present then) is a fresh process per rank that

1. derives its emulation from the full topology and the sites present (:func:`emulate_for`,
   before dlion starts: ``DLION_SITE`` comes from the supervisor's host list);
2. resumes from the newest checkpoint in ``--checkpoint-dir`` with
   ``dlion.checkpoint.load(..., elastic="average")`` (the weighted replica average at another
   size, residuals folded, the interrupted epoch re-sharded; the exact resume at the saved
   size), and saves every ``--checkpoint-every`` steps;
3. on rank 0, appends its events to the ``--journal`` (:mod:`microcloud_clock`), whose clock is
   also the one the budget is counted on: training seconds since the first attempt started,
   evaluation excluded, everything else (recoveries included) counted.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import microcloud_clock as jclock
import numpy as np
import topology as topo


def emulate_for(full: str) -> str:
    """``DLION_EMULATE`` for the ranks of this job: the topology ``full`` restricted to the
    sites of the ranks present (each rank's ``DLION_SITE``, gathered over MPI)."""
    from mpi4py import MPI

    site = os.environ.get("DLION_SITE", "")
    sites = MPI.COMM_WORLD.allgather(site)
    if not all(sites):
        raise SystemExit(
            "--topology needs DLION_SITE on every rank (python -m dlion.run sets it from the "
            "host list's sites)"
        )
    return topo.parse(full).on_sites(sites).emulate_inprocess()


class Elastic:
    """Checkpoints, resume and the journal of one attempt (one policy)."""

    def __init__(self, args: Any, dlion: Any) -> None:
        self.dlion, self.args = dlion, args
        self.rank = dlion.rank()
        self.journal = args.journal
        known = jclock.read(self.journal) if self.rank == 0 else []
        self.attempt = int(
            dlion.broadcast(np.array([float(jclock.attempts(known))]), 0, "mc.attempt")[0]
        )
        self.every = int(args.checkpoint_every)
        self.dir = args.checkpoint_dir
        self.save_s = 0.0

    def state_of(self, run: Any) -> dict[str, Any]:
        """What a checkpoint holds for ``run`` (a microcloud_worker._Run)."""
        dlion = self.dlion
        state: dict[str, Any] = {"model": run.model, "optimizer": run.opt, "data": run.shard}
        if isinstance(run.exchange, (dlion.PeerExchange, dlion.OuterSync)):
            state["exchange"] = run.exchange  # residuals (OuterSync: anchors, outer momentum)
        if run.batcher is not None:
            state["batcher"] = run.batcher
        if run.kt is not None:
            state["knowledge"] = run.kt
        return state

    def resume(self, run: Any) -> tuple[int, int | None]:
        """Load the newest checkpoint into ``run``, if any: (its step, its world size), or
        (0, None) without one."""
        from dlion import checkpoint

        if checkpoint.latest_step(self.dir) is None:
            # No complete checkpoint (a job stopped before or during its first save): start
            # over, and clear what that job left (its owner.json would refuse this job's saves).
            if self.rank == 0:
                shutil.rmtree(self.dir, ignore_errors=True)
                Path(self.dir).mkdir(parents=True, exist_ok=True)
            self.dlion.broadcast(np.zeros(1), 0, "mc.cleared")
            return 0, None
        ckpt = checkpoint.load(self.dir, elastic="average", **self.state_of(run))
        saved = int(ckpt.manifest["world_size"])
        if self.rank == 0:
            print(
                f"[microcloud] attempt {self.attempt}: resumed from step {ckpt.step}, saved by "
                f"{saved} ranks, now {self.dlion.size()}",
                flush=True,
            )
        return int(ckpt.step), saved

    def maybe_save(self, run: Any, step: int) -> None:
        """Checkpoint after ``step`` steps when it is a multiple of ``--checkpoint-every``."""
        if not self.every or step % self.every:
            return
        from dlion import checkpoint

        w0 = time.time()
        checkpoint.save(self.dir, step, **self.state_of(run))
        self.log({"ev": "save", "wall": w0, "end": time.time(), "step": step})

    def log(self, event: dict[str, Any]) -> None:
        """Append ``event`` to the journal (rank 0)."""
        if self.rank == 0:
            jclock.append(self.journal, {**event, "attempt": self.attempt})

    def started(self, step: int, resumed: tuple[int, int | None]) -> float:
        """Log that training (re)starts now at ``step``; the clock's reading now (rank 0's,
        on every rank)."""
        wall = time.time()
        self.log(
            {
                "ev": "train",
                "wall": wall,
                "step": step,
                "ranks": self.dlion.size(),
                "sites": self.dlion.sites(),
                "resumed_from": resumed[0] if resumed[1] is not None else None,
                "saved_by": resumed[1],
            }
        )
        now = jclock.clock(jclock.read(self.journal), wall) if self.rank == 0 else 0.0
        return float(self.dlion.broadcast(np.array([now]), 0, "mc.clock")[0])


def check_args(args: Any) -> None:
    """SystemExit when the elastic options do not fit together."""
    if args.journal and (not args.checkpoint_dir or len(args.policies.split(",")) != 1):
        raise SystemExit("--journal runs one policy with --checkpoint-dir (one supervised job)")
    if args.checkpoint_dir:
        Path(args.checkpoint_dir).mkdir(parents=True, exist_ok=True)
