"""The real-network testbed (``../shared/tools/microcloud``, or ``$MICROCLOUD``) for tests.

Tests that need it call :func:`require` (it skips them with the reason when the tool, root,
network namespaces or ``/dev/net/tun`` are missing) and use :class:`Testbed` to bring sites
up, run one MPI job across them, and inject faults (cut/heal a link, freeze/thaw a site).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RANK_ENV, ROOT

MPIEXEC = str(Path(sys.executable).parent / "mpiexec")


def tool() -> Path:
    """Where the microcloud tool is: ``$MICROCLOUD``, else ``../shared/tools/microcloud``."""
    return Path(os.environ.get("MICROCLOUD") or ROOT.parent / "shared" / "tools" / "microcloud")


def require() -> Path:
    """The tool's path; skips the calling test with the reason when it cannot run here."""
    path = tool()
    if not path.is_file():
        pytest.skip(f"real-network test: the microcloud tool is not at {path} (set MICROCLOUD)")
    if os.geteuid() != 0:
        pytest.skip("real-network test: needs root (network namespaces, tc, cgroups)")
    for cmd in ("ip", "tc"):
        if shutil.which(cmd) is None:
            pytest.skip(f"real-network test: '{cmd}' is not installed (Debian: iproute2)")
    if not Path("/dev/net/tun").exists():
        pytest.skip("real-network test: /dev/net/tun is missing")
    probe = subprocess.run(
        ["ip", "netns", "add", "dlion-probe"], capture_output=True, text=True, check=False
    )
    subprocess.run(["ip", "netns", "del", "dlion-probe"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"real-network test: cannot create network namespaces: {probe.stderr}")
    return path


class MicroCloud:
    """Sites joined by shaped links, brought up by ``microcloud up``; one job at a time."""

    def __init__(self, path: Path, *up_args: str) -> None:
        self.path = path
        self.sh("up", *up_args)

    def sh(self, *args: str, check: bool = True) -> str:
        """Run ``microcloud ARGS``; fail the test with its output if it fails (``check``)."""
        res = subprocess.run(
            [str(self.path), *args], capture_output=True, text=True, timeout=120, check=False
        )
        if res.returncode != 0 and check:
            pytest.fail(f"microcloud {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
        return res.stdout + res.stderr

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``microcloud run -- ARGV`` (one rank per site slot) in the background."""
        full = {**os.environ, **RANK_ENV, "MPIEXEC": MPIEXEC, **(env or {})}
        return subprocess.Popen(
            [str(self.path), "run", "--", *argv],
            cwd=ROOT,
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def down(self) -> None:
        subprocess.run([str(self.path), "down"], capture_output=True, timeout=120, check=False)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` s (or if ``proc`` ended)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the job ended (exit {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)
