"""Smoke test of the rewards benchmark (64 KiB only). Benchmarks are not tests: no timing assertions."""

import os
import re
import subprocess
import sys

import pytest

from sspo_verl.bench.rewards import adversarial


@pytest.mark.slow
def test_quick_rewards_benchmark_reports_every_case():
    out = subprocess.run([sys.executable, "-m", "sspo_verl.bench.rewards", "--quick", "--repeats", "1"],
                         capture_output=True, text=True, timeout=300, env={**os.environ})
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if re.fullmatch(r"\| (gsm8k|math-verify) \| .+ \| [\d.]+ \|", line)]
    assert len(rows) == 2 * len(adversarial(64))
    assert re.search(r"^gsm8k worst case: 64KiB [\d.]+ ms", out.stdout, re.M)
    assert re.search(r"via the worker pool [\d.]+ ms, in this main thread [\d.]+ ms \(ratio [\d.]+\)", out.stdout)
