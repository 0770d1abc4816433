"""Runtime topology: sites from DLION_SITE, local ranks, init on a sub-communicator."""

import os

from _report import report
from mpi4py import MPI

import dlion

world = MPI.COMM_WORLD.Get_rank()
os.environ["DLION_SITE"] = "A" if world < 2 else "B"
dlion.init()
rec = {
    "rank": dlion.rank(),
    "size": dlion.size(),
    "site": dlion.site(),
    "sites": dlion.sites(),
    "local_rank": dlion.local_rank(),
    "local_size": dlion.local_size(),
}
dlion.shutdown()

# Again on the odd/even sub-communicator: rank and size are the sub-communicator's.
sub = MPI.COMM_WORLD.Split(world % 2, world)
dlion.init(comm=sub)
rec["sub"] = {"rank": dlion.rank(), "size": dlion.size(), "sites": dlion.sites()}
dlion.shutdown()
sub.Free()
report(world, rec)
