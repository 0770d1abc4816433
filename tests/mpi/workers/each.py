"""Several scenarios in one job, so that the job pays for starting Python, MPI and TensorFlow
once: ``each.py SCENARIO [-- SCENARIO]...``, each SCENARIO ``[NAME=VALUE]... WORKER [ARGS]``,
runs ``WORKER.py ARGS`` (tests/mpi/workers) for each, one after the other, in this process, as if
it had been started alone with those arguments and with the environment variables NAME=VALUE
(os.environ is restored after each scenario: what it or the worker set is gone).

Between scenarios dlion is shut down (the workers do it at their end; each.py makes sure) and
Keras forgets its models (``keras.backend.clear_session()``: auto-names start afresh), so each
scenario runs on a fresh ``dlion.init()``. Each rank reports ``{"scenarios": {"SCENARIO joined
by spaces": what the worker reported}, "output": {"SCENARIO joined by spaces": {"stdout": ...,
"stderr": ...}}}``: what the scenario wrote to ``sys.stdout`` and ``sys.stderr`` (Python's
streams, not what C++ writes to the file descriptors), which also go on to this process's
streams. Every rank prints the scenario it starts to stderr, so that a failure names the
scenario in which it happened.
"""

import io
import os
import runpy
import sys
from pathlib import Path

import _report
from mpi4py import MPI

import dlion

scenarios: list[list[str]] = [[]]
for arg in sys.argv[1:]:
    if arg == "--":
        scenarios.append([])
    else:
        scenarios[-1].append(arg)

rank = MPI.COMM_WORLD.Get_rank()
records: dict[str, dict] = {}
output: dict[str, dict[str, str]] = {}
current = ""


def collect(rank: int, record: dict) -> None:
    records[current] = record  # as with the file: a later report replaces an earlier one


def _keep(module, what: str) -> None:
    get = getattr(module, f"get_{what}")

    def setter(n: int) -> None:
        if n != get():
            raise RuntimeError(f"each.py: a later scenario sets {what}={n}, the first {get()}")

    setattr(module, f"set_{what}", setter)


class Tee(io.TextIOBase):
    """Writes to ``stream`` and keeps a copy."""

    def __init__(self, stream) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return False


write = _report.report
_report.report = collect  # the workers do `from _report import report` when they start
for scenario in scenarios:
    current = " ".join(scenario)
    env = {}
    while scenario and "=" in scenario[0]:
        name, _, value = scenario.pop(0).partition("=")
        env[name] = value
    worker, *args = scenario
    print(f"[each] rank {rank}: {current}", file=sys.stderr, flush=True)
    if "tensorflow" in sys.modules:
        # The workers set TF's thread counts when they start; once TF runs, setting them again
        # raises RuntimeError even to the same value: later scenarios may only keep them.
        import tensorflow as tf

        _keep(tf.config.threading, "intra_op_parallelism_threads")
        _keep(tf.config.threading, "inter_op_parallelism_threads")
    saved = dict(os.environ)  # what a worker sets (e.g. DLION_SITE) ends with its scenario
    os.environ.update(env)
    path = str(Path(__file__).with_name(f"{worker}.py"))
    sys.argv = [path, *args]
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = Tee(out), Tee(err)
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        output[current] = {
            "stdout": sys.stdout.copy.getvalue(),
            "stderr": sys.stderr.copy.getvalue(),
        }
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = out, err
    if dlion.is_initialized():
        dlion.shutdown()
    os.environ.clear()
    os.environ.update(saved)
    if "keras" in sys.modules:
        import keras

        keras.backend.clear_session()
    if current not in records:
        raise RuntimeError(f"scenario '{current}' reported nothing on rank {rank}")

write(rank, {"scenarios": records, "output": output})
