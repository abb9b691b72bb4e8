"""Writing a measurement's results: the raw numbers as JSON beside the markdown report."""

from __future__ import annotations

import os

from qsm_jax.program.workdir import write_json_atomically, write_text_atomically


def write_results(out: str, report: dict, markdown: str) -> None:
    """Writes ``markdown`` to ``out`` (a .md path) and ``report`` to the .json beside it."""
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    write_json_atomically(os.path.splitext(out)[0] + ".json", report)  # another process may read them meanwhile
    write_text_atomically(out, markdown)
