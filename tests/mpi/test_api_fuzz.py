"""The public Python API driven with generated bad arguments on 2 real ranks (issue 18).

tests/mpi/workers/api_fuzz.py draws the examples (Hypothesis, derandomized: the same on both
ranks) and checks each on every rank: a typed dlion error or the correct result, never another
exception, a crash (the job would fail), a hang past the stall timeout (this test's timeout) or
different results on different ranks. Bounded: 800 examples run in about 25 s here.
"""

import pytest
from conftest import run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.tf]

EXAMPLES = 800
STALL_S = 10  # a call that waits for a rank that never comes fails within this


def test_public_api_with_generated_bad_arguments(record_property):
    env = {
        "DLION_FUZZ_EXAMPLES": str(EXAMPLES),
        "DLION_FUZZ_TF": "1",
        "DLION_STALL_TIMEOUT_S": str(STALL_S),
        "DLION_STALL_WARNING_S": str(STALL_S),
    }
    res = run_mpi("api_fuzz", 2, timeout=150, env=env)
    assert res.returncode == 0, res.explain()
    recs = res.records()
    assert [r["rank"] for r in recs] == [0, 1], res.explain()
    for rec in recs:
        assert rec["n_problems"] == 0, "\n".join(rec["problems"])
        assert rec["usable"], rec
        cases = rec["cases"]
        assert cases["examples"] == EXAMPLES, cases
        assert cases["valid"] > EXAMPLES // 10 and cases["invalid"] > EXAMPLES // 10, cases
        assert set(cases["errors"]) <= {
            "InvalidArgumentError", "MismatchError", "OptionTypeError", "CheckpointError",
        }, cases  # fmt: skip
    record_property("fuzz_cases", recs[0]["cases"])
    print(f"api fuzz: {recs[0]['cases']}")
