"""The docs runner itself (tests/docs_blocks.py): blocks run in the scratch copy with the project's venv, the
directives do what they say, and a failing, stale or unexplained block fails the test, naming page and line."""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

import pytest
from sybil import Sybil

from tests.docs_blocks import DirectiveError, ROOT, docs_sybil, make_sandbox_and_home


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    return make_sandbox_and_home(tmp_path_factory.mktemp("runner"))


def outcomes(tmp_path: Path, sandbox, text: str) -> list[tuple[int, object]]:
    """Evaluate a page as the docs tests do; (line, None | the exception) for each block and directive."""
    page = tmp_path / "page.md"
    page.write_text(text)
    document = Sybil(parsers=docs_sybil.parsers, patterns=["*.md"], path=str(tmp_path)).parse(page)
    document.namespace["docs_sandbox"] = sandbox
    results = []
    for example in document.examples():
        try:
            example.evaluate()
            results.append((example.line, None))
        except Exception as exc:  # noqa: BLE001 - the test inspects what the runner raised
            results.append((example.line, exc))
    return results


def test_a_block_runs_in_the_copy_with_the_venv_and_a_home_of_its_own(tmp_path, sandbox):
    root, home = sandbox
    text = ('<!-- docs-run: expect "venv=' + sys.prefix + '" expect "home=' + str(home) + '" -->\n```bash\n'
            'test -f setup.py && test -f README.md && test "$PWD" = "' + str(root) + '"\n'
            'echo "venv=$(python -c \'import sys; print(sys.prefix)\')" "home=$HOME"\n```\n')
    assert [exc for _, exc in outcomes(tmp_path, sandbox, text)] == [None, None]
    assert root != ROOT and (root / ".venv").resolve() == Path(sys.prefix).resolve()


def test_the_copy_keeps_modification_times_so_make_sees_an_up_to_date_venv(sandbox):
    root, _ = sandbox
    assert (root / "setup.py").stat().st_mtime == (ROOT / "setup.py").stat().st_mtime


def test_a_failing_block_fails_naming_page_line_and_output(tmp_path, sandbox):
    (line, exc), = outcomes(tmp_path, sandbox, "text\n\n```bash\necho before\nfalse\necho never\n```\n")
    assert isinstance(exc, AssertionError) and "page.md:3" in str(exc) and "exit status 1" in str(exc)
    assert "before" in str(exc) and "never" not in str(exc).split("--- output")[1]  # set -e stopped it


def test_env_and_sub_make_a_shortened_variant(tmp_path, sandbox):
    text = ('<!-- docs-run: why "the real one is long" env STEPS=2 env OUT=$DOCS_TMP/out sub "--seeds 3" "--seeds 1" '
            'expect "steps=2 seeds=1" -->\n```bash\necho "steps=$STEPS seeds=$(echo --seeds 3 | cut -c9-)"\n'
            'mkdir -p "$OUT" && test -d "$DOCS_TMP/out"\n```\n')
    assert [exc for _, exc in outcomes(tmp_path, sandbox, text)] == [None, None]


def test_an_expected_text_that_is_not_printed_fails(tmp_path, sandbox):
    text = '<!-- docs-run: expect "tau_pos=4.05088" -->\n```bash\necho tau_pos=4.1\n```\n'
    _, (_, exc) = outcomes(tmp_path, sandbox, text)
    assert isinstance(exc, AssertionError) and "tau_pos=4.05088" in str(exc)


@pytest.mark.parametrize("directive, message", [
    ('sub "absent" "x" why "short"', "stale directive"),
    ("env STEPS=2", "must say why"),
    ('why "x" frobnicate 3', "unknown word 'frobnicate'"),
    ('why "x" env', "needs its value"),
])
def test_a_bad_directive_fails_and_says_how_to_write_it(tmp_path, sandbox, directive, message):
    results = outcomes(tmp_path, sandbox, f"<!-- docs-run: {directive} -->\n```bash\necho hi\n```\n")
    errors = [exc for _, exc in results if exc is not None]
    assert len(errors) == 1 and isinstance(errors[0], DirectiveError) and message in str(errors[0])
    assert "page.md:1" in str(errors[0]) or "page.md:2" in str(errors[0])


def test_a_skipped_block_is_reported_skipped_with_its_reason(tmp_path, sandbox):
    text = '<!-- skip: next "GPU: an 8-GPU node" -->\n```bash\nexit 1\n```\n\n```bash\necho runs\n```\n'
    results = outcomes(tmp_path, sandbox, text)
    skipped = [exc for _, exc in results if isinstance(exc, unittest.SkipTest)]
    assert [str(e) for e in skipped] == ["GPU: an 8-GPU node"] and results[-1][1] is None


def test_a_python_block_runs_with_the_venv_interpreter(tmp_path, sandbox):
    text = ('<!-- docs-run: expect "' + sys.executable + '" -->\n```python\nimport sys\nprint(sys.executable)\n```\n')
    assert [exc for _, exc in outcomes(tmp_path, sandbox, text)] == [None, None]
