"""Canary: verl's own CPU tests of the policy-loss code (shipped in the verl wheel as the top-level package
`tests`) still pass with the plugin installed and loaded through its entry point."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

FILES = ["test_core_algos_on_cpu.py", "test_dynamic_policy_losses_on_cpu.py", "test_loss_aggregation_on_cpu.py"]


def _verl_tests_dir() -> Path:
    import verl

    site = Path(verl.__file__).resolve().parent.parent
    path = site / "tests" / "trainer" / "ppo"
    if not path.is_dir():
        pytest.fail(f"verl's tests are not in {path}: the verl wheel layout changed; update this canary")
    return path


@pytest.mark.slow
def test_verls_policy_loss_tests_pass_with_the_plugin_loaded():
    ppo_tests = _verl_tests_dir()
    env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_PLUGINS"}  # entry points on ("auto")
    check = subprocess.run([sys.executable, "-c", "import sys, verl; assert 'sspo_verl' in sys.modules"],
                           env=env, cwd="/", capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, "the plugin did not load through its entry point: " + check.stderr[-2000:]
    # verl's tests sit inside this repository's .venv, below its pytest.ini and root conftest.py; pytest would use
    # them (and the conftest binds the name `tests` to this repository's tests). Run verl's tests under no ini, with
    # conftest discovery cut at site-packages, as they run in verl's own checkout.
    site = ppo_tests.parent.parent.parent
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
                          "--rootdir", str(site), "--confcutdir", str(site), *(str(ppo_tests / f) for f in FILES)],
                         env=env, cwd="/", capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout.splitlines()[-1]
