"""Every recipe's dry run composes verl's real config with its overrides and passes, without GPUs; bad
settings fail there, before a cluster is spent, and the real launch (main_ppo's own Hydra entry) refuses the same
ones with the same message."""

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
    summary = next(line for line in out.stdout.splitlines() if " registered; " in line)
    has_tau = method.startswith(("sspo", "sapo"))  # only the settings the loss mode reads are shown
    assert ("tau_pos=1.0 tau_neg=1.05" in summary) is has_tau and ("clip_ratio" in summary) is not has_tau, summary
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


BAD_SETTINGS = [  # (recipe arguments, environment, what the error says)
    (["sspo", "actor_rollout_ref.actor.tau_pos=0"], {}, "tau_pos=0 must be a finite number > 0"),
    (["sspo_cosine"], {}, "unknown method 'sspo_cosine'"),
    (["sapo", "+actor_rollout_ref.actor.policy_loss.tau_pos=1.0"], {}, "Use actor_rollout_ref.actor.tau_pos=<value>"),
    (["sspo"], {"STEPS_PER_BATCH": "5"}, "ppo_mini_batch_size=102 does not divide data.train_batch_size=512 "),
    (["sspo", "actor_rollout_ref.actor.ppo_mini_batch_size=0"], {"STEPS_PER_BATCH": "5"},  # the user's key wins
     "ppo_mini_batch_size=0 must be a whole number >= 1; set actor_rollout_ref.actor.ppo_mini_batch_size to a "
     "divisor of data.train_batch_size=512, e.g. 256 (2 steps), 128 (4 steps), 64 (8 steps), 32 (16 steps).\n"),
    (["grpo", "actor_rollout_ref.rollout.n=0"], {}, "actor_rollout_ref.rollout.n=0 must be a whole number >= 1."),
    (["sspo"], {"TAU_POS": "abc"}, "tau_pos='abc' is not a number; set actor_rollout_ref.actor.tau_pos=<a positive "
     "number>, e.g. tau_pos=1.0. This value comes from the recipe's environment variable TAU_POS='abc': set TAU_POS"),
    (["sspo"], {"STEPS_PER_BATCH": "0"}, "STEPS_PER_BATCH='0' must be a whole number >= 1: the recipe sets "
     "actor_rollout_ref.actor.ppo_mini_batch_size = TRAIN_BATCH / STEPS_PER_BATCH"),
    (["sspo"], {"STEPS_PER_BATCH": "abc"}, "STEPS_PER_BATCH='abc' must be a whole number >= 1"),
    (["sspo"], {"TRAIN_BATCH": "-8"}, "TRAIN_BATCH='-8' must be a whole number >= 1"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args,env,message", BAD_SETTINGS)
def test_bad_settings_fail_the_dry_run(args, env, message):
    out = _dry("recipes/gsm8k_qwen2.5_0.5b.sh", *args, **env)
    assert out.returncode != 0 and message in out.stderr, out.stderr[-2000:]


# The recipe's real launch, main_ppo's Hydra entry point and its validate_config, with run_ppo (Ray, GPUs) replaced
# by an exit: a config the checks pass exits with LAUNCHED.
LAUNCH = """
import sys
import verl.trainer.main_ppo as main_ppo
main_ppo.run_ppo = lambda *args, **kwargs: sys.exit("LAUNCHED")
sys.argv = ["main_ppo", *sys.argv[1:]]
main_ppo.main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("args,env,message", [BAD_SETTINGS[i] for i in (3, 5, 6)] + [
    (["sspo"], {"STEPS_PER_BATCH": "1"}, "= 1 optimizer step per rollout batch: on-policy"),  # a warning only
])
def test_the_real_launch_runs_the_dry_runs_checks(tmp_path, args, env, message):
    """The dry run used to refuse what main_ppo never checked; now both run verl's validate_config with the
    plugin's checks: the launch fails with the message test_bad_settings_fail_the_dry_run expects of the dry run,
    and on-policy both warn and go on."""
    script = tmp_path / "launch_main_ppo.py"
    script.write_text(LAUNCH)
    launch = subprocess.run(["bash", "recipes/gsm8k_qwen2.5_0.5b.sh", *args, "hydra.run.dir=" + str(tmp_path / "hydra")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHON": sys.executable, "LAUNCHER": f"{sys.executable} {script}",
                                 "PREFLIGHT": "0", **env})  # main_ppo's own checks, not the preflight's
    on_policy = env.get("STEPS_PER_BATCH") == "1"
    # (Hydra's job logging writes main_ppo's warnings to stdout)
    assert message in launch.stdout + launch.stderr, launch.stderr[-1500:]
    assert launch.returncode != 0 and ("LAUNCHED" in launch.stderr) is on_policy
    if on_policy:
        dry = _dry("recipes/gsm8k_qwen2.5_0.5b.sh", *args, **env)
        assert dry.returncode == 0 and "[dry run] warning: SSPO: " in dry.stdout and message in dry.stdout
