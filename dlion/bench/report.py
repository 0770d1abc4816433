"""Printing benchmark rows: an aligned table by default, one JSON object per line with --json."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


class Report:
    """Collects rows (dicts) and prints them on rank 0 only."""

    def __init__(self, columns: Sequence[tuple[str, str]], as_json: bool, rank: int) -> None:
        """``columns``: (key, format) pairs for the table, e.g. ("dlion_s", "{:.3e}")."""
        self.columns = list(columns)
        self.as_json = as_json
        self.rank = rank
        self._header_done = False

    def row(self, row: dict[str, Any]) -> None:
        """Print one row (JSON line or table line)."""
        if self.rank != 0:
            return
        if self.as_json:
            print(json.dumps(row), flush=True)
            return
        widths = [max(len(k), 11) for k, _ in self.columns]
        if not self._header_done:
            print("  ".join(k.rjust(w) for (k, _), w in zip(self.columns, widths)))
            self._header_done = True
        cells = [fmt.format(row[k]) if row.get(k) is not None else "-" for k, fmt in self.columns]
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)), flush=True)

    def note(self, text: str) -> None:
        """A free-text line (table mode only; JSON output stays machine-readable)."""
        if self.rank == 0 and not self.as_json:
            print(text, flush=True)
