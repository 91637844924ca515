"""Smoke test of the loss benchmark (smallest shape). Benchmarks are not tests: no timing assertions."""

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quick_benchmark_runs_and_reports_ratios():
    out = subprocess.run([sys.executable, "-m", "sspo_verl.bench.losses", "--quick", "--device", "cpu", "--repeats", "1",
                          "--modes", "vanilla,sapo,sspo,sspo[reference],sspo_sapo"],
                         capture_output=True, text=True, timeout=300, env={**os.environ})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| 16 x 1024")]
    assert len(rows) == 2 * 5  # fp32 and bf16, five modes
    assert all(re.fullmatch(r"\| 16 x 1024 \| \w+ \| [\w\[\]]+ \|( [\d.]+ \|){4}", r) for r in rows), rows
    assert re.search(r"^sspo/sapo time ratio: [\d.]+$", out.stdout, re.M)
    assert re.search(r"^sspo_sapo/sapo time ratio: [\d.]+$", out.stdout, re.M)
