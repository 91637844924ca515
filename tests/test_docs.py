"""The README, docs/ and examples/ point at things that exist: modules they run, files and anchors they link.

A layout change (a module moved, a doc renamed) otherwise leaves commands that fail with "No module named" only
when a reader copies them.
"""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "examples").rglob("*.md"))]
SCRIPTS = [*ROOT.glob("recipes/**/*.sh"), *ROOT.glob("recipes/**/*.sbatch"), *ROOT.glob("examples/**/*.sh"),
           *ROOT.glob("examples/**/*.py"), ROOT / "Makefile", *ROOT.glob("sspo_verl/**/*.py")]
MODULE = re.compile(r"-m (sspo_verl(?:\.\w+)*)(?![.\w<])")  # not `-m sspo_verl.tools.<name>`
LINK = re.compile(r"\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"(?<![\w./-])((?:sspo_verl|tests|recipes|docs|tools|examples)/[\w./-]*\w)")  # sspo_verl/loss/gates.py


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_every_page_and_script_is_found():
    assert ROOT / "docs" / "GATES.md" in PAGES and ROOT / "recipes" / "lib" / "methods.sh" in SCRIPTS
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "sspo_verl.tools.calibrate" in MODULE.findall(readme)  # the pattern finds what the tests below check
    assert MODULE.findall("python -m sspo_verl.tools.<name>; python -m sspo_verl.testbed.") == []
    assert "docs/GATES.md" in LINK.findall(readme)


@pytest.mark.parametrize("path", PAGES + SCRIPTS, ids=_rel)
def test_every_python_dash_m_names_a_module_that_runs(path):
    for name in set(MODULE.findall(path.read_text(encoding="utf-8"))):
        spec = importlib.util.find_spec(name)
        assert spec is not None, f"{_rel(path)}: python -m {name}: no such module"
        if spec.submodule_search_locations is not None:  # a package runs through its __main__
            assert importlib.util.find_spec(name + ".__main__"), f"{_rel(path)}: python -m {name}: no __main__"


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_repository_path_named_exists(page):
    text = page.read_text(encoding="utf-8")
    for match in REPO_PATH.finditer(text):
        name = match.group(1)
        if any(c in name for c in "<>*") or text[max(0, match.start() - 8):match.start()].endswith("verl's `"):
            continue  # a pattern, or a path in verl's repository
        assert (ROOT / name).exists(), f"{_rel(page)}: {name} does not exist"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to '-'."""
    heads = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_relative_link_resolves(page):
    for link in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://|mailto:", link):
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{_rel(page)}: link {link!r}: {target} does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{_rel(page)}: link {link!r}: no heading #{anchor} in {path.name}"


def test_the_readme_stays_short_and_in_order():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 160
    heads = re.findall(r"^## (.+)$", text, re.M)
    order = ["What SSPO is", "Install", "The two commands", "Use it in verl", "Recipes"]
    assert heads[:len(order)] == order, heads
    assert "make run" in text and "make test" in text


# --------------------------------------------------------------------------------------------------------------
# The fenced blocks: each one runs in CI (conftest.py, tests/docs_blocks.py) or says why it cannot
# --------------------------------------------------------------------------------------------------------------

from sybil import Document  # noqa: E402
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, RawFencedCodeBlockLexer  # noqa: E402

from tests.docs_blocks import NOT_RUN_LANGUAGES, RUN_LANGUAGES, RunSpec, docs_sybil  # noqa: E402

SKIP_REASON = re.compile(r'^next\s+(["\'])(?P<reason>.{10,}?)\1\s*$')  # sybil evaluates the reason as Python


def fenced_blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line, info string, source) of every fenced block of a page."""
    text = page.read_text(encoding="utf-8")
    lexer = RawFencedCodeBlockLexer(info_pattern=re.compile(r"(?P<info>[^\n]*)\n"),
                                    mapping={"info": "info", "source": "source"})
    return [(text.count("\n", 0, region.start) + 1, region.lexemes["info"].strip(), str(region.lexemes["source"]))
            for region in lexer(Document(text, str(page)))]


def fences(page: Path) -> list[tuple[int, str]]:
    """(line, info string) of every fenced block of a page."""
    return [(line, info) for line, info, _ in fenced_blocks(page)]


def directives(page: Path, name: str) -> list[tuple[int, str]]:
    text = page.read_text(encoding="utf-8")
    lexer = DirectiveInHTMLCommentLexer(directive=name, arguments=".*?")
    return [(text.count("\n", 0, r.start) + 1, (r.lexemes["arguments"] or "").strip())
            for r in lexer(Document(text, str(page)))]


def test_the_docs_pages_are_the_ones_the_runner_collects():
    collected = {page for page in PAGES if docs_sybil.should_parse(page)}
    assert collected == set(PAGES), set(PAGES) ^ collected


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_fenced_block_says_what_it_is(page):
    """bash and python blocks run in CI; text blocks are not code. An untagged block could be either."""
    for line, info in fences(page):
        language = info.split()[0] if info else ""
        assert language in RUN_LANGUAGES + NOT_RUN_LANGUAGES, (
            f"{_rel(page)}:{line}: a fenced block tagged {info!r}: tag it ```bash or ```python (run in CI) or "
            f"```text (not code)")


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_skipped_block_gives_its_reason(page):
    for line, arguments in directives(page, "skip"):
        assert SKIP_REASON.match(arguments), (
            f"{_rel(page)}:{line}: `skip: {arguments}`: write <!-- skip: next \"why it cannot run here\" --> "
            f"(GPU, cluster, network, ...); only single blocks are skipped")


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_every_docs_run_directive_reads(page):
    for line, arguments in directives(page, "docs-run"):
        RunSpec.parse(arguments, f"{_rel(page)}:{line}")


RUN_ELSEWHERE = re.compile(r"run by (?P<test>tests/[\w/]+\.py)")


def _skipped_blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line, skip reason, the source of the block it skips) for every skipped block of a page."""
    blocks = fenced_blocks(page)
    found = []
    for line, arguments in directives(page, "skip"):
        following = [source for block_line, _, source in blocks if block_line > line]
        if following:
            found.append((line, arguments, following[0]))
    return found


@pytest.mark.parametrize("page", PAGES, ids=_rel)
def test_a_block_skipped_as_run_elsewhere_is_run_by_the_test_it_names(page):
    """`skip: next "run by tests/x.py ..."`: that test file exists and runs each script or module the block names
    (a block that names none, like pip lines, must be read out of the page by that test)."""
    for line, reason, source in _skipped_blocks(page):
        named = RUN_ELSEWHERE.search(reason)
        if not named:
            continue
        test = ROOT / named["test"]
        assert test.is_file(), f"{_rel(page)}:{line}: the skip names {named['test']}, which does not exist"
        test_text = test.read_text(encoding="utf-8")
        targets = re.findall(r"(?:examples|recipes)/[\w/]+\.(?:py|sh)", source) + re.findall(r"python3? -m ([\w.]+)", source)
        if not targets:  # e.g. pip lines: the test must read them out of the page itself
            assert page.name in test_text, (f"{_rel(page)}:{line}: the skipped block names no script or module, and "
                                            f"{named['test']} does not read {page.name}")
        for target in targets:
            assert target in test_text, f"{_rel(page)}:{line}: {named['test']} never runs {target}, which the block runs"
