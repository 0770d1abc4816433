"""A bounded libFuzzer run of the wire decoder (tests/fuzz/wire_fuzz.cc): 0 crashes expected.

The long run (1,000,000+ executions) is ``tests/fuzz/run_fuzz.sh``; CI runs this short one.
``./run setup`` installs clang (Debian package ``clang``) when it runs as root.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUZZ_SECONDS = 20


def _clang_can_fuzz() -> str | None:
    """None when clang++ builds -fsanitize=fuzzer binaries here, else the reason it cannot."""
    cxx = os.environ.get("CXX", "clang++")
    if shutil.which(cxx) is None:
        return f"{cxx} is not installed (apt-get install clang; ./run setup does it as root)"
    probe = subprocess.run(
        [cxx, "-fsanitize=fuzzer", "-x", "c++", "-", "-o", os.devnull],
        input='extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }',
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        return f"{cxx} cannot build libFuzzer targets: {probe.stderr.strip()[-300:]}"
    return None


@pytest.mark.slow
def test_wire_decoder_survives_bounded_fuzzing(tmp_path):
    reason = _clang_can_fuzz()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "FUZZ_BUILD": str(tmp_path / "build"), "FUZZ_WORK": str(tmp_path / "w")}
    proc = subprocess.run(
        ["bash", str(ROOT / "tests/fuzz/run_fuzz.sh"), f"-max_total_time={FUZZ_SECONDS}"],
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 240,  # build + run; an upper bound for hang detection only
        env=env,
    )
    log = proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, log
    runs = re.search(r"stat::number_of_executed_units: (\d+)", proc.stderr)
    assert runs and int(runs.group(1)) > 1000, log  # it really fuzzed past the seed corpus
    assert not list((tmp_path / "w").glob("crash-*")), log
