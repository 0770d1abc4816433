"""Bookkeeping of the micro-cloud benchmark's runs: the policy order per seed, the commit, the
finished seeds kept for ``--resume``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from microcloud_report import DOCS_PAGE  # rewritten by --docs: not a change of the code

ROOT = Path(__file__).resolve().parent.parent


def rotated(policies: str, seed_index: int) -> str:
    """The policy order of the ``seed_index``-th seed: rotated by one per seed."""
    names = policies.split(",")
    k = seed_index % len(names)
    return ",".join(names[k:] + names[:k])


def git_state() -> tuple[str, bool]:
    """(commit, whether tracked files outside benchmarks/results differ from it)."""

    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False)
        return r.stdout.strip()

    changed = [
        line
        for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
        if "benchmarks/results/" not in line and not line.endswith(("README.md", DOCS_PAGE))
    ]
    return git("rev-parse", "HEAD") or "unknown", bool(changed)


def load_saved(path: Path, commit: str, order: str) -> dict[str, Any] | None:
    """The seed saved at ``path`` if it ran the policies in ``order`` (any commit: named)."""
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    if raw.get("order") != order:
        return None
    same = "same commit" if raw.get("commit") == commit else f"made at commit {raw.get('commit')}"
    print(f"[microcloud] reusing {path} ({same})", flush=True)
    return raw
