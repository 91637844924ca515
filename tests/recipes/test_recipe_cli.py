"""The recipes as a user first meets them: the usage line, the Python they run, the knobs checked before any work
(recipes/lib/python.sh, recipes/lib/run.sh). None of these runs verl: each takes a second or two."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sspo_verl.loss.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ["recipes/gsm8k_qwen2.5_0.5b.sh", "recipes/deepmath_qwen2.5_7b.sh"]


def _recipe(recipe: str, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", recipe, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, **env})


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_recipe_without_a_method_prints_one_usage_line_with_the_tables_methods(recipe):
    out = _recipe(recipe)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (f"usage: bash {recipe} <method> [hydra overrides...]; methods: {' '.join(METHODS)}, "
                          f"sspo_<gate> for a gate of GATE_MODULE; knobs: see the head of {recipe}\n")
    help_ = _recipe(recipe, "--help")
    assert help_.returncode == 0 and help_.stdout == out.stderr and help_.stderr == ""
    assert _recipe(recipe, "-x").stderr == out.stderr  # an option where the method goes: the same line


@pytest.mark.parametrize("recipe", RECIPES)
def test_a_recipes_head_points_to_the_methods_table_instead_of_listing_methods(recipe):
    head = "".join(line for line in (ROOT / recipe).read_text().splitlines(keepends=True) if line.startswith("#"))
    assert "python -m sspo_verl.tools.method_lines --list" in head
    assert not any(f" {method} " in head for method in METHODS if method != "sspo"), head  # no hand-made list


@pytest.mark.parametrize("env,message", [
    ({"DRY_RUN": "true"}, "DRY_RUN='true' must be 0 or 1"),
    ({"PREFLIGHT": "no"}, "PREFLIGHT='no' must be 0 or 1"),
    ({"NGPUS": "abc"}, "NGPUS='abc' must be a whole number >= 1"),
    ({"NNODES": "0"}, "NNODES='0' must be a whole number >= 1"),
    ({"STEPS_PER_BATCH": "x"}, "STEPS_PER_BATCH='x' must be a whole number >= 1"),
])
def test_a_bad_knob_is_one_line_naming_it_and_nothing_is_launched(tmp_path, env, message):
    marker = tmp_path / "launched"
    out = _recipe(RECIPES[0], "sspo", LAUNCHER=f"touch {marker}", PREFLIGHT=env.get("PREFLIGHT", "0"),
                  **{k: v for k, v in env.items() if k != "PREFLIGHT"})
    assert out.returncode == 2 and not marker.exists(), out.stderr
    assert out.stderr == f"gsm8k_qwen2.5_0.5b.sh: error: {out.stderr.split('error: ', 1)[1]}"  # one line, named
    assert out.stderr.count("\n") == 1 and message in out.stderr


# ---------------------------------------------------------------------------------------------------
# Which Python (recipes/lib/python.sh)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def layout(tmp_path):
    """A checkout without the repository's .venv: recipes/lib/python.sh (the real file, linked), a bin/ folder
    for PATH, and a python3 that cannot find verl (it fails whatever it is asked)."""
    (tmp_path / "repo" / "recipes" / "lib").mkdir(parents=True)
    (tmp_path / "repo" / "recipes" / "lib" / "python.sh").symlink_to(ROOT / "recipes" / "lib" / "python.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    no_verl = bin_dir / "python3"
    no_verl.write_text("#!/bin/sh\nexit 1\n")
    no_verl.chmod(0o755)
    return tmp_path


def _python_with_verl(path: Path) -> None:
    """A script that runs this interpreter (a symlink would lose the venv: Python finds it from its own path)."""
    path.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    path.chmod(0o755)


def _choose(layout: Path, **env) -> subprocess.CompletedProcess:
    script = f'source {layout}/repo/recipes/lib/python.sh && choose_python && echo "PYTHON=$PYTHON"'
    base = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    return subprocess.run(["bash", "-c", script, "my_recipe.sh"], capture_output=True, text=True, timeout=60,
                          env={**base, "PATH": f"{layout}/bin:/usr/bin:/bin", **env})


def test_without_verl_in_python3_and_without_a_venv_one_line_says_make_setup_or_python(layout):
    out = _choose(layout)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == (f"my_recipe.sh: error: python3 cannot import verl, and there is no "
                          f"{layout}/repo/.venv/bin/python; run `make setup` in {layout}/repo (it builds .venv), "
                          f"or set PYTHON=/path/to/python (one with verl and sspo-verl)\n")


def test_without_verl_in_python3_the_repositorys_venv_is_used_and_said_in_one_line(layout):
    (layout / "repo" / ".venv" / "bin").mkdir(parents=True)
    _python_with_verl(layout / "repo" / ".venv" / "bin" / "python")
    out = _choose(layout)
    assert out.returncode == 0 and out.stdout == f"PYTHON={layout}/repo/.venv/bin/python\n"
    assert out.stderr == (f"my_recipe.sh: python3 cannot import verl: using this repository's "
                          f"{layout}/repo/.venv/bin/python (set PYTHON to choose another)\n")


def test_python3_with_verl_comes_before_the_venv_and_python_before_both(layout):
    _python_with_verl(layout / "bin" / "python3")
    out = _choose(layout)
    assert out.returncode == 0 and out.stdout == "PYTHON=python3\n" and out.stderr == ""
    out = _choose(layout, PYTHON=sys.executable)
    assert out.returncode == 0 and out.stdout == f"PYTHON={sys.executable}\n" and out.stderr == ""


@pytest.mark.parametrize("python,message", [
    ("/nonexistent/python", "PYTHON=/nonexistent/python: no such command"),
    ("python3", "PYTHON=python3 cannot import verl"),  # the layout's python3 has no verl
])
def test_a_python_without_verl_is_one_line_naming_it(layout, python, message):
    out = _choose(layout, PYTHON=python)
    assert out.returncode == 2 and out.stdout == "" and out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"my_recipe.sh: error: {message}; run `make setup` in {layout}/repo")
