"""Import TensorFlow without its start-up notices, for the entry points dlion owns.

``import tensorflow`` prints, on every rank, lines that ``TF_CPP_MIN_LOG_LEVEL`` does not
reach: they are written by TF's C++ libraries before its logging is set up ("All log messages
before absl::InitializeLog() ...", "oneDNN custom operations are on ..."). The only switch
that removes the oneDNN notice, ``TF_ENABLE_ONEDNN_OPTS=0``, also changes which kernels run,
so it is not used: instead the process's stderr (file descriptor 2) points to ``/dev/null``
while TensorFlow loads, and ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 (errors only) afterwards.
An import that fails raises as usual, after stderr is back. ``examples/``, ``./run train`` and
``python -m dlion.bench`` call :func:`import_tensorflow`; library code never does (a user's
program decides what its stderr shows).
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType


def import_tensorflow() -> ModuleType:
    """``tensorflow`` (and ``keras``, when installed), imported with the start-up notices
    hidden; the already imported module when it is loaded."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        tf = importlib.import_module("tensorflow")
        try:
            importlib.import_module("keras")
        except ImportError:
            pass
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return tf
