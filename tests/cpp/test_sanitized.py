"""Builds the C++ core with AddressSanitizer + UBSan and runs its own tests (ctest, mpiexec)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("cmake", path=f"{BIN}:{os.environ.get('PATH', '')}") is None,
    reason="cmake is not installed",
)
def test_cpp_core_under_asan_and_ubsan(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        ["bash", str(ROOT / "tests/cpp/run_sanitized.sh"), str(tmp_path / "build")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    assert "100% tests passed" in proc.stdout
