"""Every recipe's dry run composes verl's real config with its overrides and passes, without GPUs; bad
settings fail there, before a cluster is spent, and the real launch (main_ppo's own Hydra entry) refuses the same
ones with the same message."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sspo_verl.loss.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
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


# ---------------------------------------------------------------------------------------------------
# A gate of the user's own through the recipes (GATE_MODULE), and the dry run's errors in one line
# ---------------------------------------------------------------------------------------------------

MY_GATES = "examples/custom_gate/my_gates.py"  # registers the gate `algebraic`
ALGEBRAIC_TAUS = "tau_pos=3.10468 tau_neg=3.43465"  # its calibration to 0.2 / 0.28 (tests/tools/test_method_lines.py)


@pytest.mark.slow
def test_dry_run_with_a_gate_module_trains_its_gate_at_its_own_calibrated_temperatures():
    out = _dry("recipes/gsm8k_qwen2.5_0.5b.sh", "sspo_algebraic", GATE_MODULE=MY_GATES, TAU_FROM_CLIP="0.2 0.28",
               PYTHONDONTWRITEBYTECODE="1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"[dry run] loss_mode=sspo_algebraic registered; loss_agg_mode=seq-mean-token-mean; {ALGEBRAIC_TAUS}\n" \
        in out.stdout
    assert "    actor_rollout_ref.model.external_lib=my_gates \\\n" in out.stdout  # every verl process imports it
    assert "external_lib is not set" not in out.stdout


# main_ppo's Hydra entry and validate_config as in LAUNCH, with run_ppo showing what the driver got
LAUNCH_SHOWING = LAUNCH.replace('lambda *args, **kwargs: sys.exit("LAUNCHED")', (
    'lambda config, **kwargs: sys.exit("LAUNCHED " + config.actor_rollout_ref.actor.policy_loss.loss_mode + " " '
    '+ __import__(config.actor_rollout_ref.model.external_lib).__file__)'))


@pytest.mark.slow
def test_a_real_launch_runs_the_local_preflight_which_sees_the_gate_module_then_main_ppo(tmp_path):
    """The launch as a user runs it: the preflight for real (a fresh interpreter with the launch's environment, as
    main_ppo's workers start), then the launcher, here main_ppo's own entry with run_ppo stubbed."""
    assert "LAUNCHED " in LAUNCH_SHOWING
    script = tmp_path / "launch_main_ppo.py"
    script.write_text(LAUNCH_SHOWING)
    out = subprocess.run(["bash", "recipes/gsm8k_qwen2.5_0.5b.sh", "sspo_algebraic", f"hydra.run.dir={tmp_path}/h"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHON": sys.executable, "LAUNCHER": f"{sys.executable} {script}",
                              "GATE_MODULE": MY_GATES, "TAU_FROM_CLIP": "0.2 0.28", "PYTHONDONTWRITEBYTECODE": "1"})
    assert ("preflight: node local (" in out.stdout and "): ok — verl 0.9.1, sspo-verl " in out.stdout
            and f", loss_mode=sspo_algebraic registered (external_lib=my_gates), {ALGEBRAIC_TAUS}, " in out.stdout), \
        out.stdout[-2000:] + out.stderr[-2000:]
    # main_ppo's driver passed validate_config with the gate registered, and imports the file the user named
    assert out.returncode != 0 and f"LAUNCHED sspo_algebraic {ROOT / MY_GATES}" in out.stderr, out.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("args,env,message", [
    (["sspo", "actor_rollout_ref.actor.policy_loss.loss_mod=x"], {},
     "Could not override 'actor_rollout_ref.actor.policy_loss.loss_mod'. To append to your config use "
     "+actor_rollout_ref.actor.policy_loss.loss_mod=x (ConfigAttributeError: Key 'loss_mod' is not in struct "
     "full_key: actor_rollout_ref.actor.policy_loss.loss_mod object_type=dict)"),
    # the recipe's own override fails because of a knob: the error names the knob
    (["sspo"], {"EXPERIMENT_NAME": "sspo,seed1"}, "Ambiguous value for argument 'trainer.experiment_name=sspo,seed1'"
     " 1. To use it as a list, use key=[value1,value2] 2. To use it as string, quote the value: key='value1,value2' "
     "3. To sweep over it, add --multirun to your command line (trainer.experiment_name comes from the recipe's "
     "environment variable EXPERIMENT_NAME='sspo,seed1': set EXPERIMENT_NAME instead)"),
])
def test_a_config_the_dry_run_refuses_is_one_line_naming_what_the_user_typed(args, env, message):
    out = _dry("recipes/gsm8k_qwen2.5_0.5b.sh", *args, **env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr == f"python -m sspo_verl.tools.dry_run: error: main_ppo would refuse this config: {message}\n"


@pytest.mark.slow
def test_an_external_lib_that_does_not_import_is_one_line_naming_the_key_and_the_knob_behind_it():
    """verl's own ImportError would say only "No module named ...", not which key made it import the module."""
    overrides = ["actor_rollout_ref.actor.policy_loss.loss_mode=sspo", "actor_rollout_ref.model.external_lib=gone_dr"]
    out = subprocess.run([sys.executable, "-m", "sspo_verl.tools.dry_run", "--", *overrides], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "SSPO_RECIPE_KNOBS": "actor_rollout_ref.model.external_lib=GATE_MODULE",
                              "GATE_MODULE": "gone_dr"})
    assert out.returncode == 2 and out.stderr == (
        "python -m sspo_verl.tools.dry_run: error: main_ppo would refuse this config: actor_rollout_ref.model."
        "external_lib=gone_dr does not import here (ModuleNotFoundError: No module named 'gone_dr') — fix: put its "
        "folder on PYTHONPATH (the recipes: GATE_MODULE=<its .py file>), or correct the override "
        "(actor_rollout_ref.model.external_lib comes from the recipe's environment variable GATE_MODULE='gone_dr': "
        "set GATE_MODULE instead)\n"), out.stderr
