"""dlion.quiet: TensorFlow imported without its C++ start-up notices, stderr intact afterwards."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import sys
from dlion.quiet import import_tensorflow
tf = import_tensorflow()
assert import_tensorflow() is tf and tf.constant(2.0).numpy() == 2.0
print("after", file=sys.stderr)
"""


def test_tensorflow_imports_without_notices_and_stderr_comes_back():
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_NUM_INTRAOP_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "after", proc.stderr
