"""cpu_tiny's first use (sspo_verl/testbed/cpu_recipe.py): the build is single-threaded, writes atomically (a killed
build leaves nothing the next run would use, and the next run removes its leftovers), and passes the quality gate
(testbed/quality.py) or fails with the gate's error, leaving no model/. The builds here are a few SFT steps long;
the shipped build itself runs in the e2e tests (tests/e2e) and its choice is documented in docs/CPU.md."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sspo_verl.testbed import cpu_recipe, policy
from sspo_verl.testbed.quality import ColdStartError, LearnableRange, check_learnable

TINY = dict(steps=3, batch_size=8, lr=3e-3, flawed_fraction=0.7)
ANY_QUALITY = LearnableRange(val_pass_g_min=0.0, val_pass1_min=0.0, val_acc_max=1.0)


@pytest.fixture
def tiny_build(monkeypatch):
    """A 3-step cold start that the gate accepts whatever it measures (the gate itself is tested below)."""
    monkeypatch.setattr(cpu_recipe, "COLD_START", dict(TINY))
    monkeypatch.setattr(cpu_recipe, "check_learnable", functools.partial(check_learnable, bounds=ANY_QUALITY))


def start_build(out: Path) -> subprocess.Popen:
    """The real build, as the recipe starts it, in its own process group; returns once its temporary folder exists."""
    proc = subprocess.Popen([sys.executable, "-m", "sspo_verl.testbed.cpu_recipe", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("model.tmp*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0] if proc.poll() else "slow"
        time.sleep(0.1)
    return proc


def test_a_killed_build_leaves_no_model_and_the_next_run_removes_its_leftover_and_rebuilds(tmp_path, tiny_build):
    proc = start_build(tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)  # as a crash or a killed terminal would
    proc.wait()
    assert not (tmp_path / "model").exists() and list(tmp_path.glob("model.tmp*"))
    logged = []
    paths = cpu_recipe.prepare(tmp_path, log=logged.append)
    assert not list(tmp_path.glob("model.tmp*"))
    assert any("removing model.tmp" in line for line in logged)
    info = json.loads((paths["model"] / "cold_start.json").read_text())
    assert info["settings"] == cpu_recipe.build_settings(0) and (paths["model"] / "model.safetensors").is_file()


def test_a_terminated_build_removes_its_own_folder(tmp_path):
    proc = start_build(tmp_path)
    proc.send_signal(signal.SIGTERM)  # `kill`, or a job scheduler's stop
    proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["train.parquet", "val.parquet"]


def test_a_cold_start_outside_the_learnable_range_is_refused_and_never_used(tmp_path, monkeypatch):
    """Three SFT steps leave a policy that rarely answers right: the real gate refuses it, names what it measured
    and the fix, and no model/ is left for a later run to pick up."""
    monkeypatch.setattr(cpu_recipe, "COLD_START", dict(TINY))
    with pytest.raises(ColdStartError) as err:
        cpu_recipe.prepare(tmp_path, log=lambda line: None)
    message = str(err.value)
    assert "sampled pass@8" in message and "COLD_START_SEED=1" in message and str(tmp_path / "model") in message
    assert not (tmp_path / "model").exists() and not list(tmp_path.glob("model.*"))


def test_a_model_built_from_other_settings_is_rebuilt_and_the_same_settings_reuse_it(tmp_path, tiny_build,
                                                                                    monkeypatch):
    cpu_recipe.prepare(tmp_path, log=lambda line: None)
    model = tmp_path / "model"
    built = (model / "cold_start.json").stat().st_mtime_ns
    cpu_recipe.prepare(tmp_path, log=lambda line: None)
    assert (model / "cold_start.json").stat().st_mtime_ns == built  # reused
    monkeypatch.setattr(cpu_recipe, "COLD_START", {**TINY, "steps": 4})  # e.g. a model/ from an older release
    logged = []
    cpu_recipe.prepare(tmp_path, log=logged.append)
    assert json.loads((model / "cold_start.json").read_text())["settings"]["steps"] == 4
    assert any("built from other settings" in line for line in logged)
    assert not list(tmp_path.glob("model.*"))


def test_a_stored_cold_start_is_judged_again_by_the_gate(tmp_path, tiny_build, monkeypatch):
    """The gate's range may move after a model/ was built: a stored start outside it is an error, not a silent use."""
    cpu_recipe.prepare(tmp_path, log=lambda line: None)
    monkeypatch.setattr(cpu_recipe, "check_learnable", check_learnable)  # the real range
    with pytest.raises(ColdStartError, match="outside the range where RL learns"):
        cpu_recipe.prepare(tmp_path, log=lambda line: None)


def test_the_build_runs_single_threaded_and_gives_the_threads_back(tmp_path, tiny_build, monkeypatch):
    import torch

    seen = []
    real = policy.cold_start
    monkeypatch.setattr(policy, "cold_start", lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k)))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cpu_recipe.prepare(tmp_path, log=lambda line: None)
        assert seen == [cpu_recipe.BUILD_THREADS] == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_build_prints_progress_and_the_measured_quality(tmp_path, tiny_build, monkeypatch):
    monkeypatch.setattr(cpu_recipe, "PROGRESS_EVERY", 1)
    logged = []
    cpu_recipe.prepare(tmp_path, log=logged.append)
    assert logged[0].startswith("cpu_tiny: building the cold start")
    assert [line.split(":")[0].strip() for line in logged[1:4]] == [f"SFT step {k}/3" for k in (1, 2, 3)]
    assert "sampled pass@1" in logged[4] and "pass@8" in logged[4]


@pytest.mark.parametrize("args, named", [(["--out", "data", "--seed", "-1"], "--seed -1"), ([], "--out"),
                                         (["--out", "data", "--seed", "x"], "--seed")])
def test_a_bad_argument_is_one_line_before_any_work(args, named, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sspo_verl.testbed.cpu_recipe", *args], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and named in proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written
