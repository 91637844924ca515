"""Smoke test of the engine step benchmark: verl's FSDP2 engine on CPU trains with sspo and vanilla.
No timing assertions (benchmarks are not tests)."""

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_engine_step_benchmark_runs():
    out = subprocess.run([sys.executable, "-m", "sspo_verl.bench.engine_step", "--quick", "--steps", "1"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "MASTER_PORT": "29541"})
    assert out.returncode == 0, out.stderr[-3000:]
    for mode in ("vanilla", "sspo", "sapo"):
        assert re.search(rf"^\| {mode}( \| [\d.]+){{5}} \| [\d.]+% \|$", out.stdout, re.M), out.stdout
