"""The comparison tool's command line as the tests call it: in this process, its output captured."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from sspo_verl.tools import compare


@dataclass
class Result:
    code: int  # exit status
    out: str
    err: str
    folder: Path  # --out

    def summary(self) -> str:
        return (self.folder / "summary.md").read_text()


@pytest.fixture
def run_compare(tmp_path, capsys):
    """run_compare(*argv) -> Result of `python -m sspo_verl.tools.compare <argv> --out <tmp>/out`."""
    def run(*argv) -> Result:
        code = compare.main([*argv, "--out", str(tmp_path / "out")])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err, tmp_path / "out")

    return run
