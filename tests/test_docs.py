"""Every document the project cites is inside the repository."""

import os
import re

from .helpers import ROOT

# A path ending in .md, not a string in code (a quote right after it).
CITED = re.compile(r"(?<![\w./-])((?:\.\./|[\w.-]+/)*[\w.-]+\.md)\b(?![\"'])")


def _project_files():
    for top in ("README.md", "Makefile", "qsm_jax", "experiments", "tests", "docs", "results", "configs"):
        path = os.path.join(ROOT, top)
        if os.path.isfile(path):
            yield path
        for folder, _, names in os.walk(path):
            yield from (os.path.join(folder, n) for n in names if n.endswith((".py", ".md", ".flags", ".sh")))


def test_every_cited_markdown_document_exists_in_the_repository():
    missing = []
    for path in _project_files():
        text = open(path, encoding="utf-8").read()
        for cited in set(CITED.findall(text)) - {"out_dir/README.md"}:
            here = os.path.join(os.path.dirname(path), cited)
            if not (os.path.exists(os.path.join(ROOT, cited)) or os.path.exists(here)):
                missing.append(f"{os.path.relpath(path, ROOT)} cites {cited}")
    assert not missing, "\n".join(missing)
