"""Writing a measurement's results: the raw numbers as JSON beside the markdown report."""

from __future__ import annotations

import json
import os


def write_results(out: str, report: dict, markdown: str) -> None:
    """Writes ``markdown`` to ``out`` (a .md path) and ``report`` to the .json beside it."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(os.path.splitext(out)[0] + ".json", "w") as f:
        json.dump(report, f, indent=2)
    with open(out, "w") as f:
        f.write(markdown)
