"""verl's main_ppo, the program every recipe launches, end to end on a CPU with the plugin: `bash recipes/cpu_tiny.sh`.

Each run is the user's command, as a subprocess: the recipe prepares its data and cold start, then runs
`python3 -m verl.trainer.main_ppo` through recipes/lib/run.sh (Ray, verl's agent and reward loops, the hf rollout
server, FSDP2 on gloo, the trainer). The assertions read verl's own logs: its file logger's JSONL, its TensorBoard
folder and its console output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
STEPS = 3
SOURCES = ["sspo/arithmetic", "openai/gsm8k", "HuggingFaceH4/MATH-500"]  # the recipe's validation set


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cpu_tiny_data")  # filled by the first recipe run (its first-use preparation)


def cpu_tiny(method: str, data_dir: Path, run_dir: Path, *overrides: str, timeout: int = 600,
             **env: str) -> subprocess.CompletedProcess:
    """`bash recipes/cpu_tiny.sh <method> <overrides>` for STEPS steps, validating before and after training."""
    home = run_dir / "home"  # Ray's auth token goes to ~/.ray: never the real one
    home.mkdir(exist_ok=True)
    environ = {**os.environ, "PYTHON": sys.executable, "DATA_DIR": str(data_dir), "RUN_DIR": str(run_dir),
               "STEPS": str(STEPS), "PYTHONUNBUFFERED": "1", "HOME": str(home), **env}
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"  # ray, python3 -> venv
    proc = subprocess.run(["bash", "recipes/cpu_tiny.sh", method, f"trainer.test_freq={STEPS}", *overrides],
                          cwd=REPO, env=environ, capture_output=True, text=True, timeout=timeout)
    (run_dir / "console.log").write_text(proc.stdout + proc.stderr)
    return proc


def records(run_dir: Path) -> dict[int, dict]:
    """verl's file logger, step -> metrics."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {rec["step"]: rec["data"] for rec in map(json.loads, lines)}


def tail(proc: subprocess.CompletedProcess, n: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-n:])


@pytest.fixture(scope="module")
def sspo_run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sspo")
    proc = cpu_tiny("sspo", data_dir, run_dir)
    assert proc.returncode == 0, tail(proc)
    return run_dir, proc, records(run_dir)


def test_sspo_trains_three_steps_through_main_ppo(sspo_run):
    run_dir, proc, logged = sspo_run
    assert sorted(logged) == list(range(STEPS + 1))  # step 0: validation before training
    assert f"step:{STEPS} - " in proc.stdout  # verl's console logger
    for step in range(1, STEPS + 1):
        keys = set(logged[step])
        assert {"actor/pg_clipfrac", "actor/pg_loss", "actor/ppo_kl", "actor/sspo/token_w_mean",
                "actor/sspo/seq_s_mean", "actor/sspo/log_ratio_abs_max"} <= keys
        for phase in ("gen", "old_log_prob", "update_actor", "update_weights", "step"):
            assert logged[step][f"timing_s/{phase}"] > 0


def test_later_mini_batches_are_off_policy(sspo_run):
    """4 mini-batches per rollout batch: the first is trained on-policy (log r = 0); the logged value is the
    mean over mini-batches of each one's max |log r|, so a clearly positive value means later mini-batches saw
    a policy that had already moved, and their gates and sequence weights left 1."""
    _, _, logged = sspo_run
    moved = [s for s in range(1, STEPS + 1) if logged[s]["actor/sspo/log_ratio_abs_max"] > 1e-3]
    assert moved, {s: logged[s]["actor/sspo/log_ratio_abs_max"] for s in range(1, STEPS + 1)}
    assert any(logged[s]["actor/sspo/token_w_min"] < 1 and logged[s]["actor/sspo/seq_s_max"] != 1 for s in moved)


def test_each_rollout_comes_from_the_current_policy(sspo_run):
    """The hf server tags each sample with the step of the weights it sampled from; verl's own staleness metric
    is 0 only if the actor's weights reached the server after every step."""
    _, _, logged = sspo_run
    for step in range(1, STEPS + 1):
        assert logged[step]["training/off_policy/trajectory_staleness/max"] == 0
        # the server's log-probs match what the actor recomputes (bf16 compute in the actor)
        assert logged[step]["training/rollout_actor_probs_pearson_corr"] > 0.999


def test_validation_before_and_after_training_for_every_data_source(sspo_run):
    _, _, logged = sspo_run
    for step in (0, STEPS):
        for source in SOURCES:
            core = [k for k in logged[step] if k.startswith(f"val-core/{source}/")]
            assert core, (step, source, sorted(k for k in logged[step] if k.startswith("val")))


def test_arithmetic_reward_is_mixed(sspo_run):
    """Some samples right, some wrong: the advantages carry a signal."""
    _, _, logged = sspo_run
    steps = range(1, STEPS + 1)
    assert any(logged[s]["critic/score/max"] > 0 for s in steps)
    assert any(logged[s]["critic/score/min"] < 1 for s in steps)
    assert any(logged[s]["actor/grad_norm"] > 0 for s in steps)


def test_compare_reads_the_runs_file_log_and_tensorboard(sspo_run, tmp_path):
    """`python -m sspo_verl.tools.compare` on the run's two logs: the same steps and values from each, and its report."""
    run_dir, _, logged = sspo_run
    out = tmp_path / "report"
    val_key = "val-core/sspo/arithmetic/acc/mean@1"
    proc = subprocess.run([sys.executable, "-m", "sspo_verl.tools.compare", "--run", f"sspo={run_dir / 'metrics.jsonl'}",
                           "--run", f"sspo={run_dir / 'tensorboard'}", "--val-key", val_key, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    by_seed: dict[int, dict] = {}
    for rec in map(json.loads, (out / "records.jsonl").read_text().splitlines()):
        by_seed.setdefault(rec["seed"], {})[rec["step"]] = rec
    jsonl, tensorboard = by_seed[0], by_seed[1]  # in --run order
    assert sorted(jsonl) == sorted(tensorboard) == list(range(STEPS + 1))
    for step in range(1, STEPS + 1):
        assert jsonl[step]["reward"] == pytest.approx(logged[step]["critic/score/mean"])
        assert tensorboard[step]["reward"] == pytest.approx(jsonl[step]["reward"], rel=1e-6)  # float32 in TB
    for step in (0, STEPS):
        assert tensorboard[step]["val_acc"] == pytest.approx(jsonl[step]["val_acc"]) == pytest.approx(logged[step][val_key])
    assert "| sspo | 2 |" in (out / "summary.md").read_text()
    assert {p.name for p in out.glob("*.png")} >= {"reward_accuracy.png", "entropy.png"}


def test_grpo_dapo_trains_three_steps_through_main_ppo(sspo_run, data_dir, tmp_path):
    proc = cpu_tiny("grpo_dapo", data_dir, tmp_path)
    assert proc.returncode == 0, tail(proc)
    logged = records(tmp_path)
    assert sorted(logged) == list(range(STEPS + 1))
    assert all("actor/pg_clipfrac" in logged[s] and "actor/sspo/token_w_mean" not in logged[s]
               for s in range(1, STEPS + 1))
    # validation samples greedily (val_kwargs): from the same cold start, both methods score the same at step 0
    sspo_step0 = sspo_run[2][0]
    assert {k: v for k, v in logged[0].items() if k.startswith("val-")} == \
        {k: v for k, v in sspo_step0.items() if k.startswith("val-")}


def test_without_the_plugin_verl_refuses_the_loss_before_any_rollout(data_dir, tmp_path):
    """With verl's plugin loading switched off (and no external_lib importing it), no process has the loss mode:
    the launch fails with verl's own `Unsupported loss mode` before any sample is generated."""
    proc = cpu_tiny("sspo", data_dir, tmp_path, "actor_rollout_ref.model.external_lib=null", timeout=300,
                    VERL_USE_EXTERNAL_PLUGINS="none")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Unsupported loss mode: sspo" in output, tail(proc)
    assert "step:1 - " not in output and "Initial validation metrics" not in output


def test_a_users_gate_trains_through_main_ppo_with_external_lib(data_dir, tmp_path):
    """examples/custom_gate: the gate registers in `my_gates`, which verl imports through external_lib on the
    driver (validate_config) and in every worker; main_ppo then trains with the user's loss mode."""
    proc = cpu_tiny("sspo", data_dir, tmp_path, "actor_rollout_ref.actor.policy_loss.loss_mode=sspo_algebraic",
                    "actor_rollout_ref.model.external_lib=my_gates", STEPS="1", PYTHONDONTWRITEBYTECODE="1",
                    PYTHONPATH=str(REPO / "examples" / "custom_gate"))
    assert proc.returncode == 0, tail(proc)
    assert "loss_mode=sspo_algebraic registered" in proc.stdout  # the preflight, in a fresh interpreter
    logged = records(tmp_path)
    assert sorted(logged) == [0, 1]
    assert {"actor/sspo/seq_s_mean", "actor/sspo/token_w_mean", "actor/pg_loss"} <= set(logged[1])
