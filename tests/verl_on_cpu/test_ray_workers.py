"""verl's Ray TrainingWorker group on CPU with loss_mode=sspo: 2 ranks equal 1 rank, and the workers get the
loss modes from the plugin's entry point alone (the payload never imports sspo_verl inside them)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _update(ranks, **env):
    out = subprocess.run([sys.executable, "-m", "sspo_verl.verl_on_cpu.ray_update", "--ranks", str(ranks)],
                         capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    return out


@pytest.fixture(scope="module")
def results():
    res = {}
    for ranks in (1, 2):
        out = _update(ranks)
        assert out.returncode == 0, out.stderr[-4000:]
        res[ranks] = json.loads(out.stdout.strip().splitlines()[-1])
    return res


def test_two_ranks_equal_one_rank(results):
    one, two = results[1], results[2]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for key in ("loss", "grad_norm", "actor/pg_loss"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=1e-5, abs=1e-7), key
    assert len(one["metrics"]["grad_norm"]) == 2  # two epochs: the second runs off-policy


def test_sspo_metrics_come_back_from_the_workers(results):
    m = results[2]["metrics"]
    for key in ("actor/sspo/token_w_mean", "actor/sspo/seq_s_mean", "actor/sspo/log_ratio_abs_max", "actor/pg_clipfrac"):
        assert key in m
    assert 0 < m["actor/sspo/token_w_mean"][-1] <= 1


def test_without_the_entry_point_the_workers_do_not_know_sspo():
    # VERL_USE_EXTERNAL_PLUGINS=none in the workers (the driver's environment reaches them): verl's own error.
    out = _update(1, VERL_USE_EXTERNAL_PLUGINS="none")
    assert out.returncode != 0 and "Unsupported loss mode: sspo" in out.stderr
