"""Every recipe's dry run composes verl's real config with its overrides and passes, without GPUs; bad
settings fail there, before a cluster is spent."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["grpo", "grpo_dapo", "gspo", "gmpo", "sapo", "sspo", "sspo_arctan", "sspo_sigmoid", "sspo_erf", "sspo_softsign"]
EXPECTED_LOSS = {"grpo": "vanilla", "grpo_dapo": "vanilla", "gspo": "gspo", "gmpo": "geo_mean", "sapo": "sapo"}


def _dry(*args, **env):
    return subprocess.run(["bash", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable, "TMPDIR": env.pop("TMPDIR", "/tmp"),
                               **env})


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_gsm8k_recipe_dry_run(method):
    out = _dry("recipes/gsm8k_qwen2.5_0.5b.sh", method, "trainer.total_epochs=1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"loss_mode={EXPECTED_LOSS.get(method, method)} registered" in out.stdout
    assert "4 optimizer steps per rollout batch" in out.stdout
    assert out.stdout.rstrip().endswith("trainer.total_epochs=1")  # "$@" comes last


@pytest.mark.slow
def test_deepmath_recipe_dry_run_with_prepared_data(tmp_path):
    for name in ("deepmath", "math500"):
        (tmp_path / name).mkdir()
    (tmp_path / "deepmath" / "train.parquet").write_bytes(b"")
    out = _dry("recipes/deepmath_qwen2.5_7b.sh", "sspo_erf", DATA_DIR=str(tmp_path), TAU_NEG="2.0")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "loss_mode=sspo_erf registered" in out.stdout and "tau_neg=2.0" in out.stdout
    assert f"{tmp_path}/deepmath/train.parquet (found)" in out.stdout
    assert f"{tmp_path}/math500/test.parquet (not on this machine" in out.stdout


@pytest.mark.slow
def test_ray_cluster_submit_dry_run_prints_the_job_command(tmp_path):
    out = _dry("recipes/multinode/ray_cluster.sh", "submit", "10.77.0.1", "recipes/deepmath_qwen2.5_7b.sh", "sspo",
               TMPDIR=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"ray job submit --address=http://10.77.0.1:8265 --runtime-env={tmp_path}/sspo_runtime_env.json -- " \
           "python3 -m verl.trainer.main_ppo" in out.stdout
    assert '"env_vars"' in (tmp_path / "sspo_runtime_env.json").read_text()


@pytest.mark.slow
def test_slurm_dry_run():
    out = _dry("recipes/multinode/slurm.sbatch", "recipes/deepmath_qwen2.5_7b.sh", "gmpo")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "loss_mode=geo_mean registered" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args,env,message", [
    (["sspo", "actor_rollout_ref.actor.tau_pos=0"], {}, "tau_pos=0 must be a finite number > 0"),
    (["sspo_cosine"], {}, "unknown method 'sspo_cosine'"),
    (["sspo"], {"STEPS_PER_BATCH": "2"}, "needs >= 4 (the off-policy regime)"),
    (["sapo", "+actor_rollout_ref.actor.policy_loss.tau_pos=1.0"], {}, "Use actor_rollout_ref.actor.tau_pos=<value>"),
])
def test_bad_settings_fail_the_dry_run(args, env, message):
    out = _dry("recipes/gsm8k_qwen2.5_0.5b.sh", *args, **env)
    assert out.returncode != 0 and message in out.stderr, out.stderr[-2000:]
