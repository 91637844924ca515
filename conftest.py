"""The README's, docs/' and examples/' fenced blocks are tests: sybil collects them (tests/docs_blocks.py).

This file sits at the repository root because pytest hands a collection hook only the files below its conftest;
pytest.ini's testpaths name the pages.
"""

import pytest
from sybil.integration.pytest import SybilItem

from tests.docs_blocks import docs_sybil, make_sandbox_and_home

pytest_collect_file = docs_sybil.pytest()


@pytest.fixture(scope="session")
def docs_sandbox(tmp_path_factory):
    """(a scratch copy of the repository, the HOME its blocks share)."""
    return make_sandbox_and_home(tmp_path_factory.mktemp("docs"))


def pytest_collection_modifyitems(items):
    for item in items:
        if isinstance(item, SybilItem):
            item.add_marker(pytest.mark.docs)
            item.add_marker(pytest.mark.slow)  # each block is a subprocess: seconds at least (torch, verl imports)
