"""The documentation's links: every relative link in README.md and the pages it sends readers to
resolves to a file of the repository (and, with a #anchor, to a heading of that file), and every
page is linked from README.md, so a moved section cannot be orphaned."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(
    {
        ROOT / "README.md",
        ROOT / "bench" / "README.md",
        ROOT / "cluster" / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "trainables").glob("*/README.md"),
    }
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(page: Path) -> str:
    """The page without its fenced code blocks (a `[x](y)` in code is not a link)."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {anchor(h) for h in re.findall(r"^#+ (.*)$", prose(page), re.M)}


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page)) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target}: no heading #{fragment} in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_every_page_is_linked_from_the_readme():
    readme = ROOT / "README.md"
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(readme)}
    assert not [str(p.relative_to(ROOT)) for p in PAGES if p != readme and p not in linked]


def test_the_anchor_rule_on_known_headings():
    assert anchor("Before the first `ray up cluster/aws.yaml`") == "before-the-first-ray-up-clusterawsyaml"
    assert anchor("Early stopping against the grid: `bench/asha_vs_grid.py`") == (
        "early-stopping-against-the-grid-benchasha_vs_gridpy"
    )


def test_the_readmes_two_commands_are_what_ci_runs_and_what_exists():
    """README's fresh-machine commands: the test command installs and tests as .ci/run does, and
    the main job's script and requirements exist."""
    commands = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2, commands
    main_job, tests = commands
    ci = (ROOT / ".ci" / "run").read_text()
    steps = [s.strip() for s in tests.split("&&")]
    (fast,) = re.findall(r"^timed \"fast tests\" (.+)$", ci, re.M)
    assert steps[-1].split()[0] == "pytest" and steps[-1] == fast
    install = steps[-2].split()
    assert install[:2] == ["pip", "install"] and all((ROOT / a).exists() for a in install if a.endswith(".txt"))
    assert re.search(r"pip install -q " + re.escape(" ".join(install[2:])), ci), install
    script = main_job.split("&&")[-1].split()
    assert script[0] == "python" and (ROOT / script[1]).is_file(), script
