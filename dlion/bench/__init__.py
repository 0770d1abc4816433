"""Microbenchmarks: ``python -m dlion.bench {exchange,train}`` (run under mpiexec).

Every figure is printed next to a reference measured in the same run (raw mpi4py, a plain
mpi4py training loop), because absolute times on shared machines are noise and ratios are not.
"""
