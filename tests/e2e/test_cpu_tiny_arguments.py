"""recipes/cpu_tiny.sh checks what the user typed before any work: the cold start it builds on first use takes a
minute, and a typo found after it (or after main_ppo's 45 s start-up) costs that much. Each case runs the recipe
as a user would and asserts that it stops in one clean message, with nothing written to DATA_DIR or RUN_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def recipe(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHON": sys.executable, "DATA_DIR": str(tmp_path / "data"),
               "RUN_DIR": str(tmp_path / "run"), "HOME": str(tmp_path), **env}
    for knob in ("TAU_POS", "TAU_NEG", "TAU_FROM_CLIP", "STEPS", "STEPS_PER_BATCH", "TRAIN_BATCH", "NGPUS", "DRY_RUN",
                 "GATE_MODULE", "COLD_START_SEED"):
        if knob not in env:
            environ.pop(knob, None)
    return subprocess.run(["bash", "recipes/cpu_tiny.sh", *args], cwd=REPO, env=environ, capture_output=True,
                          text=True, timeout=120)


def test_no_argument_prints_one_usage_line_with_the_methods_of_the_table(tmp_path):
    from sspo_verl.loss.methods import METHODS

    proc = recipe(tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("usage: bash recipes/cpu_tiny.sh <method> [hydra overrides...]; methods: ")
    assert f"methods: {' '.join(METHODS)}, sspo_<gate>" in line
    assert "line " not in line  # bash's own `line 9: 1: usage` form
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("args, env, named", [
    (["nosuch"], {}, "nosuch"),
    (["sspo"], {"TAU_FROM_CLIP": "0.2"}, 'TAU_FROM_CLIP="0.2"'),
    (["sspo"], {"TAU_FROM_CLIP": "0.2 0.28", "TAU_POS": "2"}, "conflicts with TAU_POS"),
    (["sspo"], {"STEPS": "0"}, "STEPS='0'"),
    (["sspo"], {"STEPS_PER_BATCH": "x"}, "STEPS_PER_BATCH='x'"),
    (["sspo"], {"COLD_START_SEED": "-1"}, "COLD_START_SEED='-1'"),
    (["sspo"], {"DRY_RUN": "yes"}, "DRY_RUN='yes'"),
])
def test_a_bad_method_or_knob_stops_before_any_work(tmp_path, args, env, named):
    proc = recipe(tmp_path, *args, **env)
    assert proc.returncode != 0 and named in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "run").exists()  # no data, no cold start, no run
