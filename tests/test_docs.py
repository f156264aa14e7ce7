"""The documentation's relative links point at files that exist, and the README's results are the reports'."""

from __future__ import annotations

import re

from conftest import ROOT

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_in_the_readme_and_docs_resolves():
    pages = [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        ROOT / "benchmarks" / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]
    broken = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in pages
        for target in LINK.findall(page.read_text())
        if "://" not in target and not target.startswith("mailto:") and not (page.parent / target).exists()
    ]
    assert len(pages) > 1 and not broken, broken


def test_the_readme_is_one_page_that_links_every_doc():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def test_the_readme_results_are_the_benchmark_reports_numbers():
    """README.md's results table is generated from benchmarks/*.md (`python -m benchmarks.headline`), each number's
    one place: a report regenerated without the table fails here until the table is regenerated too."""
    from benchmarks.headline import BEGIN, END, headline, tables

    readme = (ROOT / "README.md").read_text()
    block = headline()
    assert readme[readme.index(BEGIN) : readme.index(END) + len(END)] == block
    serve = next(row for row in tables("SERVE.md")[0] if row["pricing"].endswith("(the default)"))
    assert f"| {serve['one house p50 (ms), keep-alive']} / {serve['p99']} |" in block  # the first p99: one house's
    assert serve["p99"] != serve["p99 #2"]
