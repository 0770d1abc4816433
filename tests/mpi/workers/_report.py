"""How a worker rank hands results to the test that launched it: one JSON file per rank."""

import json
import os
from pathlib import Path


def report(rank: int, record: dict) -> None:
    """Write this rank's record to $DLION_TEST_OUT/rank<r>.json (atomically)."""
    out = Path(os.environ["DLION_TEST_OUT"])
    tmp = out / f".rank{rank}.json.tmp"
    tmp.write_text(json.dumps({"rank": rank, **record}))
    tmp.rename(out / f"rank{rank}.json")
