"""Writing a measurement's results: the raw numbers as JSON beside the markdown report."""

from __future__ import annotations

import json
import os


def write_results(out: str, report: dict, markdown: str) -> None:
    """Writes ``markdown`` to ``out`` (a .md path) and ``report`` to the .json beside it."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    for path, text in ((os.path.splitext(out)[0] + ".json", json.dumps(report, indent=2)), (out, markdown)):
        with open(path + ".tmp", "w") as f:  # whole files only: another process may read them meanwhile
            f.write(text)
        os.replace(path + ".tmp", path)
