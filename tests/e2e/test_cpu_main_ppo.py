"""verl's main_ppo, the program every recipe launches, end to end on a CPU with the plugin: `bash recipes/cpu_tiny.sh`.

Each run is the user's command, as a subprocess: the recipe prepares its data and cold start, then runs
`python3 -m verl.trainer.main_ppo` through recipes/lib/run.sh (Ray, verl's agent and reward loops, the hf rollout
server, FSDP2 on gloo, the trainer). The assertions read verl's own logs: its file logger's JSONL, its TensorBoard
folder, its resolved config (.hydra/) and the console.

CI time: these are the suite's slowest tests (each launch costs ~45 s of start-up on 2 cores), so one sspo run of
RISE_STEPS steps serves every sspo check, learning included, and one grpo_dapo run, killed after its first
checkpoint and resumed, serves the baseline's checks and the resume's.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ["sspo/arithmetic", "openai/gsm8k", "HuggingFaceH4/MATH-500"]  # the recipe's validation set
VAL_KEY = "val-core/sspo/arithmetic/acc/mean@1"  # greedy accuracy on the 64 arithmetic validation rows
RISE_STEPS = 10  # the sspo run: enough for the reward to rise well outside noise (lr warm-up: 5 steps)
LAST_STEPS = 5  # steps whose mean reward is compared with the cold start's
REWARD_MARGIN, VAL_MARGIN = 0.08, 0.15  # test_reward_rises_well_outside_run_to_run_noise says why
RESUME_STEPS, SAVE_FREQ = 4, 2  # the grpo_dapo run: a checkpoint at step 2, killed during step 3, resumed


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cpu_tiny_data")  # filled by the first recipe run (its first-use preparation)


def recipe_env(data_dir: Path, run_dir: Path, steps: int, **env: str) -> dict:
    home = run_dir / "home"  # Ray's auth token goes to ~/.ray: never the real one
    home.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, "PYTHON": sys.executable, "DATA_DIR": str(data_dir), "RUN_DIR": str(run_dir),
               "STEPS": str(steps), "PYTHONUNBUFFERED": "1", "HOME": str(home), **env}
    environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}"  # ray, python3 -> venv
    return environ


def cpu_tiny(method: str, data_dir: Path, run_dir: Path, *overrides: str, steps: int = 3, timeout: int = 600,
             **env: str) -> subprocess.CompletedProcess:
    """`bash recipes/cpu_tiny.sh <method> <overrides>` for `steps` steps, validating before and after training."""
    proc = subprocess.run(["bash", "recipes/cpu_tiny.sh", method, f"trainer.test_freq={steps}", *overrides],
                          cwd=REPO, env=recipe_env(data_dir, run_dir, steps, **env), capture_output=True, text=True,
                          timeout=timeout)
    (run_dir / "console.log").write_text(proc.stdout + proc.stderr)
    return proc


def records(path: Path) -> dict[int, dict]:
    """verl's file logger, step -> metrics."""
    return {rec["step"]: rec["data"] for rec in map(json.loads, path.read_text().splitlines())}


def tail(proc: subprocess.CompletedProcess, n: int = 60) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-n:])


@pytest.fixture(scope="module")
def sspo_run(data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sspo")
    proc = cpu_tiny("sspo", data_dir, run_dir, steps=RISE_STEPS)
    assert proc.returncode == 0, tail(proc)
    return run_dir, proc, records(run_dir / "metrics.jsonl")


def test_sspo_trains_through_main_ppo(sspo_run):
    run_dir, proc, logged = sspo_run
    assert sorted(logged) == list(range(RISE_STEPS + 1))  # step 0: validation before training
    for step in range(1, RISE_STEPS + 1):
        keys = set(logged[step])
        assert {"actor/pg_clipfrac", "actor/pg_loss", "actor/ppo_kl", "actor/sspo/token_w_mean",
                "actor/sspo/seq_s_mean", "actor/sspo/log_ratio_abs_max"} <= keys
        for phase in ("gen", "old_log_prob", "update_actor", "update_weights", "step"):
            assert logged[step][f"timing_s/{phase}"] > 0


def test_reward_rises_well_outside_run_to_run_noise(sspo_run, data_dir):
    """Learning, from the shipped cold start and settings, by two measures:
    - the batch reward (critic/score/mean: 128 samples at temperature 1) averaged over the last LAST_STEPS steps,
      against what the cold start scores at temperature 1: its sampled pass@1 (cpu_recipe measures it on 256 val
      problems x 8 samples for the quality gate, cold_start.json; train and val problems come from one
      distribution, split by a hash of the prompt);
    - the greedy validation accuracy (64 arithmetic rows) after RISE_STEPS steps, against step 0.

    Noise, measured on the 2-core development machine (shared, load 8-14; docs/CPU.md, "Does the reward rise"; the
    logs are in docs/results/cpu-tiny-repeats):
    - no learning (the same run with lr 0): the reward's mean over steps 1-10 was 0.344 against the cold start's
      pass@1 0.352 (mean of its last 5 steps -0.008 from it), its step-to-step standard deviation 0.056 (0.039 and
      0.064 over steps 11-30 of the committed 30-step grpo_dapo and sspo runs); so a LAST_STEPS mean is within
      ~0.027 of pass@1 (plus ~0.015 for pass@1's own estimate: sigma ~0.031), and the validation accuracy does not
      move (greedy decoding of the same weights: +0.000);
    - learning (4 sspo runs of this recipe, 10 steps): the reward's last-5 mean rose +0.142, +0.144, +0.189, +0.206
      over pass@1 (mean +0.170, sd 0.032: 5.5 sigma of the no-learning noise), validation +0.33 to +0.52.
    REWARD_MARGIN 0.08 is 2.6 sigma of the no-learning noise and 2.8 standard deviations below the learning runs'
    mean; VAL_MARGIN 0.15 (10 of 64 rows) is half the smallest gain seen."""
    _, _, logged = sspo_run
    pass1 = json.loads((data_dir / "model" / "cold_start.json").read_text())["val_pass1"]
    reward = [logged[s]["critic/score/mean"] for s in range(RISE_STEPS - LAST_STEPS + 1, RISE_STEPS + 1)]
    rise = statistics.mean(reward) - pass1
    val_gain = logged[RISE_STEPS][VAL_KEY] - logged[0][VAL_KEY]
    assert rise > REWARD_MARGIN, (pass1, reward)
    assert val_gain > VAL_MARGIN, (logged[0][VAL_KEY], logged[RISE_STEPS][VAL_KEY])


def test_later_mini_batches_are_off_policy(sspo_run):
    """4 mini-batches per rollout batch: the first is trained on-policy (log r = 0); the logged value is the
    mean over mini-batches of each one's max |log r|, so a clearly positive value means later mini-batches saw
    a policy that had already moved, and their gates and sequence weights left 1."""
    _, _, logged = sspo_run
    steps = range(1, RISE_STEPS + 1)
    moved = [s for s in steps if logged[s]["actor/sspo/log_ratio_abs_max"] > 1e-3]
    assert moved, {s: logged[s]["actor/sspo/log_ratio_abs_max"] for s in steps}
    assert any(logged[s]["actor/sspo/token_w_min"] < 1 and logged[s]["actor/sspo/seq_s_max"] != 1 for s in moved)


def test_each_rollout_comes_from_the_current_policy(sspo_run):
    """The hf server tags each sample with the step of the weights it sampled from; verl's own staleness metric
    is 0 only if the actor's weights reached the server after every step."""
    _, _, logged = sspo_run
    for step in range(1, RISE_STEPS + 1):
        assert logged[step]["training/off_policy/trajectory_staleness/max"] == 0
        # the server's log-probs match what the actor recomputes (bf16 compute in the actor)
        assert logged[step]["training/rollout_actor_probs_pearson_corr"] > 0.999


def test_validation_before_and_after_training_for_every_data_source(sspo_run):
    _, _, logged = sspo_run
    for step in (0, RISE_STEPS):
        for source in SOURCES:
            core = [k for k in logged[step] if k.startswith(f"val-core/{source}/")]
            assert core, (step, source, sorted(k for k in logged[step] if k.startswith("val")))


def test_arithmetic_reward_is_mixed(sspo_run):
    """Some samples right, some wrong: the advantages carry a signal."""
    _, _, logged = sspo_run
    steps = range(1, RISE_STEPS + 1)
    assert any(logged[s]["critic/score/max"] > 0 for s in steps)
    assert any(logged[s]["critic/score/min"] < 1 for s in steps)
    assert any(logged[s]["actor/grad_norm"] > 0 for s in steps)


def test_the_console_shows_one_short_line_per_step(sspo_run):
    """The console: the cold start's progress on first use, then per step the reward, the validation accuracy when
    validated and the seconds (not verl's console logger line of ~56 metrics), and no transfer-queue thread
    warning (it came about 100 times before step 1)."""
    _, proc, logged = sspo_run
    out = proc.stdout + proc.stderr
    assert "cpu_tiny: building the cold start" in out and "SFT step 600/600" in out  # the first run builds it
    steps = [line for line in proc.stdout.splitlines() if line.startswith("step ")]
    assert steps[0] == f"step 0/{RISE_STEPS}: val sspo/arithmetic {logged[0][VAL_KEY]:.3f}"
    last = logged[RISE_STEPS]
    assert steps[-1] == (f"step {RISE_STEPS}/{RISE_STEPS}: reward {last['critic/score/mean']:.3f}, val "
                         f"sspo/arithmetic {last[VAL_KEY]:.3f}, {last['timing_s/step']:.1f} s")
    assert len(steps) == RISE_STEPS + 1
    assert "step:1 - " not in out  # verl's console logger is off; its file and tensorboard loggers keep it all
    assert "should not exceed total physical CPU cores" not in out


def test_main_ppos_resolved_config_is_in_the_run_folder(sspo_run):
    """hydra.run.dir=RUN_DIR: the run's training data source can be read from its own folder."""
    import yaml

    run_dir, _, _ = sspo_run
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["data"]["train_files"].endswith("train.parquet")
    assert config["trainer"]["default_local_dir"] == str(run_dir / "checkpoints")  # not ./checkpoints/<project>/...
    hydra = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra["run"]["dir"] == str(run_dir)  # not ./outputs/<date>/<time> in the user's working directory


def test_compare_reads_the_runs_file_log_and_tensorboard(sspo_run, tmp_path):
    """`python -m sspo_verl.tools.compare` on the run's two logs: the same steps and values from each, and its report."""
    run_dir, _, logged = sspo_run
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "sspo_verl.tools.compare", "--run", f"sspo={run_dir / 'metrics.jsonl'}",
                           "--run", f"sspo={run_dir / 'tensorboard'}", "--val-key", VAL_KEY, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    by_seed: dict[int, dict] = {}
    for rec in map(json.loads, (out / "records.jsonl").read_text().splitlines()):
        by_seed.setdefault(rec["seed"], {})[rec["step"]] = rec
    jsonl, tensorboard = by_seed[0], by_seed[1]  # in --run order
    assert sorted(jsonl) == sorted(tensorboard) == list(range(RISE_STEPS + 1))
    for step in range(1, RISE_STEPS + 1):
        assert jsonl[step]["reward"] == pytest.approx(logged[step]["critic/score/mean"])
        assert tensorboard[step]["reward"] == pytest.approx(jsonl[step]["reward"], rel=1e-6)  # float32 in TB
    for step in (0, RISE_STEPS):
        assert tensorboard[step]["val_acc"] == pytest.approx(jsonl[step]["val_acc"]) == pytest.approx(logged[step][VAL_KEY])
    assert "| sspo | 2 |" in (out / "summary.md").read_text()
    assert {p.name for p in out.glob("*.png")} >= {"reward_accuracy.png", "entropy.png"}


# --- grpo_dapo, killed after a checkpoint and resumed ----------------------------------------------------------

def processes_with_home(home: Path) -> list[int]:
    """Ids of the live processes started with HOME=home (the launch's main_ppo, Ray and its workers)."""
    marker = f"HOME={home}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def logged_steps(path: Path) -> set[int]:
    """The steps verl's file logger has written so far (a line being written is skipped)."""
    steps = set()
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            steps.add(json.loads(line)["step"])
        except json.JSONDecodeError:
            pass
    return steps


def kill_after_checkpoint(data_dir: Path, run_dir: Path, *overrides: str) -> dict:
    """The first launch: SIGKILL its whole process group, as a crash would, once verl has written the checkpoint
    of step SAVE_FREQ (its latest_checkpointed_iteration.txt) and then logged that step (with its validation),
    so during step SAVE_FREQ + 1, before the run ends."""
    environ = recipe_env(data_dir, run_dir, RESUME_STEPS)
    console = open(run_dir / "console.1.log", "w")
    proc = subprocess.Popen(["bash", "recipes/cpu_tiny.sh", "grpo_dapo", *overrides], cwd=REPO, env=environ,
                            stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
    latest = run_dir / "checkpoints" / "latest_checkpointed_iteration.txt"
    deadline = time.monotonic() + 600
    try:
        while not (latest.is_file() and latest.read_text().strip() == str(SAVE_FREQ)
                   and SAVE_FREQ in logged_steps(run_dir / "metrics.jsonl")):
            assert proc.poll() is None, (run_dir / "console.1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        console.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Ray's own processes go with the driver they serve; none may outlive the crash into the resumed launch
    home = Path(environ["HOME"])
    deadline = time.monotonic() + 60
    while processes_with_home(home) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = processes_with_home(home)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the killed launch still running: {left}"
    return records(run_dir / "metrics.jsonl")


@pytest.fixture(scope="module")
def resumed_run(data_dir, tmp_path_factory, sspo_run):
    """grpo_dapo with a checkpoint every SAVE_FREQ steps, killed during step SAVE_FREQ + 1, then the same command
    again. lr 1e-4 without warm-up moves the policy far from the cold start within SAVE_FREQ steps (the testbed
    probe measured that such a step lowers even the right samples' log-prob), so a rollout server still holding
    the cold start's weights after the resume would show in its log-probs and its greedy validation."""
    run_dir = tmp_path_factory.mktemp("grpo_dapo_resumed")
    overrides = (f"trainer.test_freq={SAVE_FREQ}", f"trainer.save_freq={SAVE_FREQ}", "trainer.resume_mode=auto",
                 "actor_rollout_ref.actor.optim.lr=1e-4", "actor_rollout_ref.actor.optim.lr_warmup_steps=0")
    before = kill_after_checkpoint(data_dir, run_dir, *overrides)
    proc = cpu_tiny("grpo_dapo", data_dir, run_dir, *overrides, steps=RESUME_STEPS)
    assert proc.returncode == 0, tail(proc)
    return run_dir, proc, before, records(run_dir / "metrics.jsonl")


def test_grpo_dapo_trains_through_main_ppo(resumed_run, sspo_run):
    _, _, before, after = resumed_run
    trained = [before[s] for s in range(1, SAVE_FREQ + 1)] + [after[s] for s in range(SAVE_FREQ + 1, RESUME_STEPS + 1)]
    assert all("actor/pg_clipfrac" in step and "actor/sspo/token_w_mean" not in step for step in trained)
    # validation samples greedily (val_kwargs): from the same cold start, both methods score the same at step 0
    sspo_step0 = sspo_run[2][0]
    assert {k: v for k, v in before[0].items() if k.startswith("val-")} == \
        {k: v for k, v in sspo_step0.items() if k.startswith("val-")}


def test_a_killed_run_resumes_from_its_last_checkpoint(resumed_run):
    """The first launch logged steps 0..SAVE_FREQ (perhaps SAVE_FREQ + 1) before the kill; its log is kept as
    metrics.1.jsonl. The same command continues from the checkpoint: it validates at step SAVE_FREQ and trains
    steps SAVE_FREQ + 1 .. RESUME_STEPS, with no step 1 and no second cold start."""
    run_dir, proc, before, after = resumed_run
    assert set(range(SAVE_FREQ + 1)) <= set(before) <= set(range(SAVE_FREQ + 2))
    assert records(run_dir / "metrics.1.jsonl") == before
    assert sorted(after) == list(range(SAVE_FREQ, RESUME_STEPS + 1))
    assert not any(k.startswith("actor/") for k in after[SAVE_FREQ])  # the resumed launch's validation only
    assert "building the cold start" not in proc.stdout
    assert (run_dir / "checkpoints" / f"global_step_{RESUME_STEPS}").is_dir()  # the last step saves too


def test_the_rollout_server_serves_the_resumed_weights_from_the_first_resumed_step(resumed_run):
    """verl loads the checkpoint into the actor and pushes those weights to the rollout server before its first
    generation (PPOTrainerSync.on_init_end). Three views of it, from verl's logs:
    - greedy validation, which the rollout server decodes, is deterministic in the weights: the resumed launch
      validates at step SAVE_FREQ as the first launch did at that step, not as the cold start did (step 0);
    - the rollout's and the actor's token probabilities on the first resumed step's samples agree as closely as
      before the kill (training/rollout_probs_diff_mean: 0.0034 at step 1, 0.0055 at the resumed step 3 when this
      test was written), where a server still holding the cold start would differ by about 0.068 (the mean
      |p_checkpoint - p_cold start| over 128 samples of the step-2 checkpoint, computed once from its weights);
    - the samples carry the step of the weights they came from (verl's staleness is 0)."""
    _, _, before, after = resumed_run
    assert after[SAVE_FREQ][VAL_KEY] == pytest.approx(before[SAVE_FREQ][VAL_KEY], abs=2 / 64)  # <= 2 of 64 rows flip
    assert abs(before[SAVE_FREQ][VAL_KEY] - before[0][VAL_KEY]) > 4 / 64, "the policy must have moved to tell"
    first = SAVE_FREQ + 1
    gap_before = max(before[s]["training/rollout_probs_diff_mean"] for s in range(1, SAVE_FREQ + 1))
    assert after[first]["training/rollout_probs_diff_mean"] < 3 * gap_before < 0.03, (after[first], gap_before)
    assert after[first]["training/off_policy/trajectory_staleness/max"] == 0


# --- the plugin's absence, and a user's gate --------------------------------------------------------------------

def test_without_the_plugin_verl_refuses_the_loss_before_any_rollout(data_dir, tmp_path, sspo_run):
    """With verl's plugin loading switched off (and no external_lib importing it), no process has the loss mode:
    the launch fails with verl's own `Unsupported loss mode` before any sample is generated."""
    proc = cpu_tiny("sspo", data_dir, tmp_path, "actor_rollout_ref.model.external_lib=null", timeout=300,
                    VERL_USE_EXTERNAL_PLUGINS="none")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Unsupported loss mode: sspo" in output, tail(proc)
    assert "step 1/" not in output and "Initial validation metrics" not in output


def test_a_users_gate_trains_through_main_ppo_with_gate_module(data_dir, tmp_path, sspo_run):
    """examples/custom_gate: GATE_MODULE names the file once; the recipe puts its folder on PYTHONPATH and makes it
    verl's external_lib, so the driver (validate_config) and every worker import it and sspo_algebraic is a method;
    main_ppo then trains with the user's loss mode."""
    proc = cpu_tiny("sspo_algebraic", data_dir, tmp_path, steps=1, PYTHONDONTWRITEBYTECODE="1",
                    GATE_MODULE=str(REPO / "examples" / "custom_gate" / "my_gates.py"))
    assert proc.returncode == 0, tail(proc)
    assert "loss_mode=sspo_algebraic registered" in proc.stdout  # the preflight, in a fresh interpreter
    logged = records(tmp_path / "metrics.jsonl")
    assert sorted(logged) == [0, 1]
    assert {"actor/sspo/seq_s_mean", "actor/sspo/token_w_mean", "actor/pg_loss"} <= set(logged[1])
