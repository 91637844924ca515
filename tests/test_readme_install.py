"""The README's install lines, read from README.md itself, give a Python that runs a recipe: a fresh venv built with
exactly those lines, then the README's first recipe block (`bash recipes/cpu_tiny.sh sspo`: verl's main_ppo on
CPU, with Ray, the agent and reward loops, FSDP2 and the trainer) in it, shortened to 2 steps (STEPS=2).

The install block is the first ```bash block of the README's "## Install" section, the recipe block the first of
"## Recipes"; the docs runner skips both (installing into the project's venv would replace its editable install)
and names this test instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.docs_blocks import ROOT, docs_sybil, make_sandbox

pytestmark = pytest.mark.slow

STEPS = 2


def readme_block(section: str) -> str:
    """The source of the first bash block under "## <section>" in README.md."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    head = re.search(rf"^## {re.escape(section)}\n", text, re.M)
    assert head, f"README.md has no '## {section}' section"
    end = re.search(r"^## ", text[head.end():], re.M)
    section_end = head.end() + (end.start() if end else len(text))
    for example in docs_sybil.parse(readme).examples():
        if head.end() <= example.start < section_end and example.region.lexemes.get("arguments") == "bash":
            return example.parsed
    raise AssertionError(f"README.md's {section} section has no ```bash block")


def readme_install_block() -> str:
    return readme_block("Install")


def commands(block: str) -> list[str]:
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


def test_the_install_block_is_pip_lines_only():
    """What the fresh-venv test runs: pip lines and comments, nothing that reaches outside the venv."""
    lines = commands(readme_install_block())
    assert lines and all(line.startswith("pip install ") for line in lines), lines
    assert "torch" in lines[0], "torch first: verl's requirement would pull a CUDA build"
    assert any(re.search(r"pip install .*'\.\[", line) for line in lines), "the repository itself"
    assert commands(readme_block("Recipes")) == ["bash recipes/cpu_tiny.sh sspo"], "what the fresh venv runs"


def test_readme_install_then_cpu_tiny(tmp_path):
    block = readme_install_block()
    sandbox = make_sandbox(tmp_path)  # the checkout's files: `pip install .` builds from them, not from git
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(env_dir), HOME=str(home),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("VERL_PLATFORM", None)
    install = subprocess.run(["bash", "-euo", "pipefail", "-s"], input=block, cwd=sandbox, env=env,
                             capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, f"the README's install lines failed:\n{block}\n{install.stderr[-3000:]}"

    # nothing of the test's own venv leaks in: the recipe's python3 is the fresh venv's
    where = subprocess.run(["python3", "-c", "import sys, verl, sspo_verl; print(sys.prefix, sspo_verl.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.returncode == 0 and where.stdout.split()[0] == str(env_dir), where.stdout + where.stderr
    assert str(sandbox) not in where.stdout.split()[1] and str(env_dir) in where.stdout.split()[1]

    run_dir = tmp_path / "run"  # the recipe's RUN_DIR, else runs/cpu_tiny/sspo in the copy
    proc = subprocess.run(["bash", "-euo", "pipefail", "-s"], input=readme_block("Recipes"), cwd=sandbox,
                          env={**env, "STEPS": str(STEPS), "RUN_DIR": str(run_dir), "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=1200)
    output = proc.stdout + proc.stderr
    (tmp_path / "console.log").write_text(output)
    assert proc.returncode == 0, "\n".join(output.splitlines()[-60:])
    steps = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        steps.setdefault(record["step"], {}).update(record["data"])
    assert sorted(s for s in steps if "actor/pg_loss" in steps[s]) == list(range(1, STEPS + 1))
    assert all("actor/sspo/seq_s_mean" in steps[s] for s in range(1, STEPS + 1))  # the plugin's loss ran
