"""The built extension: loads next to mpi4py with one libmpi, no leaked build-time rpath."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_extension_shares_libmpi_with_mpi4py_and_has_no_temporary_rpath():
    code = (
        "from mpi4py import MPI\n"
        "import dlion_core\n"
        "maps = open('/proc/self/maps').read().splitlines()\n"
        "libs = {l.split()[-1] for l in maps if 'libmpi' in l.split()[-1]}\n"
        "print(dlion_core.__file__)\n"
        "print('\\n'.join(sorted(libs)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    module, libs = Path(out[0]), out[1:]
    assert len(libs) == 1, f"more than one libmpi loaded: {libs}"
    # The mpich wheel's libmpi lives in <prefix>/lib, found through $ORIGIN; no search path may
    # point into pip's temporary build environment (a dead, world-writable folder).
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is not installed")
    dynamic = subprocess.run(
        ["readelf", "-d", str(module)], capture_output=True, text=True, check=True
    ).stdout
    paths = [
        line.split("[", 1)[1].rstrip("]")
        for line in dynamic.splitlines()
        if "(RPATH)" in line or "(RUNPATH)" in line
    ]
    assert paths, dynamic
    for entry in ":".join(paths).split(":"):
        assert entry.startswith("$ORIGIN") or not entry.startswith("/tmp"), paths
        assert "pip-build-env" not in entry, paths
