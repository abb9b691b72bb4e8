"""Every figure a reader sees is generated: the committed report and the README's and docs' generated
blocks equal what `make report` rebuilds from the unit files, and flagfiles hold settings and a
pointer to their results, never a figure."""

import difflib
import glob
import os
import re
import shutil

import pytest

from harness import benchmark, report, screening

from .helpers import ROOT

# A figure: a number standing alone (not part of a name such as Walker2d-v4, 512x512 or sac_512).
_FIGURE = re.compile(r"(?<![\w.\-/])\d+(?:\.\d+)?%?(?![\w\-/])")
_NOT_FIGURES = re.compile(r"(ICML|NeurIPS|ICLR) \d{4}|\[-1, 1\]")  # a citation's year; the action box


@pytest.mark.slow
def test_the_committed_report_and_generated_blocks_equal_a_regeneration(tmp_path, monkeypatch):
    """`make report` on the committed unit files changes nothing: a unit committed without the report,
    or a figure edited by hand inside a generated block, fails here."""
    for doc in report.REPORTED_DOCS:
        os.makedirs(tmp_path / os.path.dirname(doc), exist_ok=True)
        shutil.copy(os.path.join(ROOT, doc), tmp_path / doc)
    os.makedirs(tmp_path / "results" / "learning")
    os.symlink(os.path.join(ROOT, benchmark.UNITS_DIR), tmp_path / benchmark.UNITS_DIR)
    for results in (screening.BANDIT, screening.SPEED):  # what the screening table reads besides the units
        os.symlink(os.path.join(ROOT, results), tmp_path / results)
    monkeypatch.chdir(tmp_path)
    for plot in ("_plot_env", "_plot_aggregate"):  # the figures are not what this test compares
        monkeypatch.setattr(report, plot, lambda *args: None)
    path = report.write_report(
        benchmark.UNITS_DIR, os.path.join("results", "learning"), list(report.REPORTED_SUITES), report.REPORTED_DOCS
    )
    stale = {}
    for name in (path, *report.REPORTED_DOCS):
        diff = difflib.unified_diff(open(os.path.join(ROOT, name)).readlines(), open(name).readlines(), n=0)
        if lines := list(diff)[2:8]:
            stale[name] = "".join(lines)
    assert not stale, f"run `make report` and commit: these differ from a regeneration: {stale}"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags"))), ids=os.path.basename)
def test_a_flagfile_holds_settings_and_a_pointer_to_its_results_no_figures(path):
    comments = [line for line in open(path).read().splitlines() if line.startswith("#")]
    text = _NOT_FIGURES.sub("", "\n".join(comments))
    assert not _FIGURE.findall(text), f"{path}: figures belong in the generated report, not in a flagfile"
    assert "Results:" in text and "results/learning/README.md" in text
    assert f"--flagfile=configs/{os.path.basename(path)}" in text


def test_every_flagfile_is_named_in_the_readme():
    readme = open(os.path.join(ROOT, "README.md")).read()
    missing = [p for p in glob.glob(os.path.join(ROOT, "configs", "*.flags")) if os.path.basename(p) not in readme]
    assert not missing, f"README.md names no {missing}"


def test_the_figure_pattern_finds_figures_and_passes_names():
    assert _FIGURE.findall("on Walker2d-v4 504 [139, 869] against 2188; 7-18% at the walls; 25.5 steps/s") == [
        "504",
        "139",
        "869",
        "2188",
        "25.5",
    ]
    assert _FIGURE.findall("12% of them") == ["12%"]
    names = "512x512 configs/sac_512.flags --env=Walker2d-v4 dmc100k best-of-8 -dim(A) ICML 2024 [-1, 1]"
    assert not _FIGURE.findall(_NOT_FIGURES.sub("", names))
