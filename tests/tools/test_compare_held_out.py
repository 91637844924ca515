"""Which held-out metric the comparison reports, and which verl runs it pools, read from what verl writes.

The runs are made the way recipes/cpu_tiny.sh makes them: verl's main_ppo (its real `@hydra.main`, with the
training itself replaced by a no-op) writes `.hydra/config.yaml` into the run folder (hydra.run.dir; here a Hydra
multirun, one folder per job), and verl's `Tracking` loggers write metrics.jsonl and tensorboard/ beside it, with
cpu_tiny's three validation sources: the arithmetic it trains on, and GSM8K- and MATH-format rows it never scores.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sspo_verl.loss.methods import hydra_overrides
from sspo_verl.tools import compare

from .compare_cli import run_compare  # noqa: F401 (the fixture)

ARITHMETIC = "val-core/sspo/arithmetic/acc/mean@1"
VAL_KEYS = ["val-core/HuggingFaceH4/MATH-500/acc/mean@1", "val-core/openai/gsm8k/acc/mean@1", ARITHMETIC]
PROG = "python -m sspo_verl.tools.compare: error: "

# verl's main_ppo as a user launches it, with run_ppo (Ray, the workers, training) replaced by a no-op: Hydra composes
# verl's config, writes .hydra/ into the run folder, and main() validates the config, exactly as in a real launch.
MAIN_PPO = """
import sys
from verl.trainer import main_ppo
main_ppo.run_ppo = lambda config, task_runner_class=None: None
sys.argv = ["main_ppo", *sys.argv[1:]]
main_ppo.main()
"""


def _metrics(step: int, offset: float) -> dict:
    """What verl logs for a cpu_tiny step; validation (steps 0, 3, 6) of the three sources: arithmetic rises
    0.3 -> 0.7 (+ offset), GSM8K and MATH-500 stay 0 (the tiny model never learned their format)."""
    m = {"critic/score/mean": 0.2 + 0.05 * step + offset, "actor/ppo_kl": np.float64(0.001 * step),
         "actor/entropy": 0.5, "actor/pg_loss": np.float64(-0.01), "actor/grad_norm": np.float64(1.0)}
    if step % 3 == 0:
        m |= {VAL_KEYS[0]: np.float64(0.0), VAL_KEYS[1]: np.float64(0.0),
              ARITHMETIC: np.float64(0.3 + 0.4 * step / 6 + offset),
              "val-aux/sspo/arithmetic/acc_tolerant/mean@1": np.float64(0.35 + 0.4 * step / 6 + offset)}
    return m


def _log_run(run_dir: Path, offset: float) -> None:
    from verl.utils.tracking import Tracking

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VERL_FILE_LOGGER_PATH", str(run_dir / "metrics.jsonl"))
        mp.setenv("TENSORBOARD_DIR", str(run_dir / "tensorboard"))
        tracker = Tracking(project_name="sspo_cpu_tiny", experiment_name=run_dir.name,
                           default_backend=["file", "tensorboard"])
        for step in range(7):
            tracker.log(data=_metrics(step, offset), step=step)
        tracker.finish()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Four run folders from one Hydra multirun of main_ppo, launched from `root` with a relative data.train_files
    (as cpu_tiny's DATA_DIR may be), over loss_mode {sspo, vanilla} x tau_neg {1.05, 2.0}."""
    import pandas as pd

    from sspo_verl.testbed.cpu_recipe import TASK, arithmetic_row
    from sspo_verl.verl_on_cpu.harness import make_tiny_model

    root = tmp_path_factory.mktemp("cpu_tiny")
    (root / "data").mkdir()
    pd.DataFrame([arithmetic_row(p, "train", i) for i, p in enumerate(TASK.heldout(8, "val"))]).to_parquet(
        root / "data" / "train.parquet")
    model = make_tiny_model(root / "model")
    method_lines = [line for line in hydra_overrides("grpo_dapo") if "loss_mode" not in line]
    overrides = [
        "-m", f"hydra.sweep.dir={root / 'runs'}", "hydra.sweep.subdir=${hydra.job.num}",
        "actor_rollout_ref.actor.policy_loss.loss_mode=sspo,vanilla", "actor_rollout_ref.actor.tau_neg=1.05,2.0",
        *method_lines, "data.train_files=data/train.parquet", f"actor_rollout_ref.model.path={model}",
        "algorithm.adv_estimator=grpo", "trainer.device=cpu", "trainer.n_gpus_per_node=1", "data.train_batch_size=16",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.n=8",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32"]
    proc = subprocess.run([sys.executable, "-c", MAIN_PPO, *overrides], cwd=root, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = {}
    for job in sorted((root / "runs").iterdir()):
        if job.is_dir():
            config = (job / ".hydra" / "config.yaml").read_text()
            mode = re.search(r"^      loss_mode: (\w+)$", config, re.M).group(1)
            tau_neg = re.search(r"^    tau_neg: ([\d.]+)$", config, re.M).group(1)
            folders[f"{mode}_{tau_neg}"] = job
    assert sorted(folders) == ["sspo_1.05", "sspo_2.0", "vanilla_1.05", "vanilla_2.0"], folders
    for offset, job in zip((0.0, 0.05, -0.05, -0.03), [folders[k] for k in sorted(folders)]):
        _log_run(job, offset)
    return {"root": root, **folders}


def _row(table: str, label: str) -> list[str]:
    (line,) = [line for line in table.splitlines() if line.startswith(f"| {label} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_cpu_tiny_run_is_measured_on_the_task_it_trains_on(runs, run_compare):
    """It used to report 0.000: the alphabetically first val-core key (MATH-500, never scored), unnamed."""
    r = run_compare("--run", f"sspo={runs['sspo_1.05'] / 'metrics.jsonl'}",
                    "--run", f"grpo_dapo={runs['vanilla_1.05']}")  # a run folder
    assert r.code == 0, r.err
    assert _row(r.out, "sspo")[2] == "0.700 ± 0.000"  # arithmetic at step 6: 0.3 + 0.4
    assert _row(r.out, "grpo_dapo")[2] == "0.650 ± 0.000"
    config = runs["sspo_1.05"] / ".hydra" / "config.yaml"
    assert f"final `{ARITHMETIC}` (mean ± std)" in r.out and f"final `{ARITHMETIC}` (mean ± std)" in r.summary()
    assert (f"Held-out metric: `{ARITHMETIC}`, the run's training data source sspo/arithmetic, from data.train_files "
            f"in {config}. Baseline: grpo_dapo.") in r.summary()
    assert f"held-out metric: {ARITHMETIC} (the run's training data source" in r.out
    assert r.out.splitlines()[2].startswith("| grpo_dapo |")  # the testbed's baseline, though given second


def test_the_tensorboard_folder_of_a_run_finds_its_config_one_folder_up(runs, run_compare):
    r = run_compare("--run", f"sspo={runs['sspo_1.05'] / 'tensorboard'}",
                    "--run", f"sspo={runs['sspo_1.05'] / 'metrics.jsonl'}")
    assert r.code == 0, r.err
    assert _row(r.out, "sspo")[:3] == ["sspo", "2", "0.700 ± 0.000"]


def test_without_a_config_one_source_is_used_and_several_are_an_error_listing_them(runs, tmp_path, run_compare):
    alone = tmp_path / "copied"
    alone.mkdir()
    shutil.copy(runs["sspo_1.05"] / "metrics.jsonl", alone / "metrics.jsonl")
    r = run_compare("--run", f"sspo={alone}")
    assert r.code == 2 and len(r.err.splitlines()) == 1, r.err
    assert r.err.startswith(PROG + f"{alone / 'metrics.jsonl'} logs several held-out metrics ({', '.join(VAL_KEYS)}) "
                            f"and no .hydra/config.yaml beside it to tell its training data (launch main_ppo with "
                            f"hydra.run.dir=<run folder>): pass --val-key"), r.err
    one = tmp_path / "one_source.jsonl"
    one.write_text("".join(json.dumps({"step": e["step"], "data": {k: v for k, v in e["data"].items()
                                                                    if k not in VAL_KEYS[:2]}}) + "\n"
                           for e in map(json.loads, (alone / "metrics.jsonl").read_text().splitlines())))
    r = run_compare("--run", f"sspo={one}")
    assert r.code == 0, r.err
    assert _row(r.out, "sspo")[2] == "0.700 ± 0.000" and "the run's only val-core key" in r.summary()


def test_a_config_whose_data_is_gone_falls_back_and_says_why(runs, tmp_path, run_compare):
    moved = tmp_path / "elsewhere"
    shutil.copytree(runs["sspo_1.05"], moved)
    hydra_yaml = moved / ".hydra" / "hydra.yaml"
    hydra_yaml.write_text(hydra_yaml.read_text().replace(f"cwd: {runs['root']}", f"cwd: {tmp_path / 'gone'}"))
    r = run_compare("--run", f"sspo={moved}")
    assert r.code == 2 and len(r.err.splitlines()) == 1, r.err
    assert (f"logs several held-out metrics ({', '.join(VAL_KEYS)}) and data.train_files in "
            f"{moved / '.hydra' / 'config.yaml'} names {tmp_path / 'gone' / 'data' / 'train.parquet'}, not readable "
            f"here: pass --val-key") in r.err


def test_val_key_names_any_logged_key_and_an_unknown_one_lists_the_keys(runs, run_compare):
    tolerant = "val-aux/sspo/arithmetic/acc_tolerant/mean@1"
    r = run_compare("--run", f"sspo={runs['sspo_1.05']}", "--val-key", tolerant)
    assert r.code == 0, r.err
    assert _row(r.out, "sspo")[2] == "0.750 ± 0.000"
    assert f"Held-out metric: `{tolerant}`, given with --val-key" in r.summary()
    r = run_compare("--run", f"sspo={runs['sspo_1.05']}", "--val-key", "val-core/arithmetic/acc")
    assert r.code == 2 and r.out == "" and len(r.err.splitlines()) == 1, r.err
    assert r.err.startswith(PROG + f"--val-key 'val-core/arithmetic/acc' is not logged by "
                            f"{runs['sspo_1.05'] / 'metrics.jsonl'} (sspo); its held-out metrics: "
                            f"{', '.join(VAL_KEYS)} (any val-aux/... key it logs works too)"), r.err


def test_runs_given_as_one_method_must_differ_only_in_their_seed(runs, run_compare):
    """sspo at tau_neg 1.05 and 2.0 are two settings, not two seeds; for vanilla tau_neg is no setting at all."""
    r = run_compare("--run", f"sspo={runs['sspo_1.05']}", "--run", f"sspo={runs['sspo_2.0']}")
    assert r.code == 2 and len(r.err.splitlines()) == 1, r.err
    assert r.err.startswith(PROG + f"--run 'sspo={runs['sspo_1.05']}' and --run 'sspo={runs['sspo_2.0']}' differ in "
                            f"actor_rollout_ref.actor.tau_neg (1.05 vs 2.0): they are not seeds of one method; give "
                            f"them different names, e.g. --run sspo_2={runs['sspo_2.0']}"), r.err
    r = run_compare("--run", f"grpo_dapo={runs['vanilla_1.05']}", "--run", f"grpo_dapo={runs['vanilla_2.0']}")
    assert r.code == 0, r.err
    assert _row(r.out, "grpo_dapo")[:3] == ["grpo_dapo", "2", "0.660 ± 0.010"]  # 0.65 and 0.67


def test_runs_of_different_tasks_are_refused(runs, tmp_path, run_compare):
    gsm8k_run = tmp_path / "gsm8k.jsonl"  # a run validated on GSM8K only, as the GPU recipe's
    gsm8k_run.write_text("".join(json.dumps({"step": s, "data": {"val-core/openai/gsm8k/acc/mean@1": 0.4}}) + "\n"
                                 for s in (0, 6)))
    r = run_compare("--run", f"sspo={runs['sspo_1.05']}", "--run", f"grpo_dapo={gsm8k_run}")
    assert r.code == 2 and len(r.err.splitlines()) == 1, r.err
    assert r.err.startswith(PROG + f"the runs' held-out metrics differ: {ARITHMETIC} "
                            f"({runs['sspo_1.05'] / 'metrics.jsonl'}); val-core/openai/gsm8k/acc/mean@1 ({gsm8k_run}): "
                            f"compare runs of one task"), r.err


def test_the_same_log_twice_is_refused(runs, run_compare):
    r = run_compare("--run", f"sspo={runs['sspo_1.05']}", "--run", f"sspo={runs['sspo_1.05'] / 'metrics.jsonl'}")
    assert r.code == 2 and "runs are given twice; pass each log once" in r.err, r.err


def test_a_gzipped_file_log_reads_like_the_plain_one(runs, tmp_path):
    import gzip

    packed = tmp_path / "metrics.jsonl.gz"
    with gzip.open(packed, "wt") as f:
        f.write((runs["sspo_1.05"] / "metrics.jsonl").read_text())
    assert compare.read_log(packed) == compare.read_log(runs["sspo_1.05"] / "metrics.jsonl")


def test_a_run_without_validation_has_no_held_out_metric_and_says_so(runs, tmp_path, run_compare):
    """Its config names its training source, but with no validation there is nothing to pick: no error, n/a."""
    quiet = tmp_path / "no_validation"
    shutil.copytree(runs["sspo_1.05"], quiet)
    lines = [json.loads(line) for line in (quiet / "metrics.jsonl").read_text().splitlines()]
    (quiet / "metrics.jsonl").write_text("".join(
        json.dumps({"step": e["step"], "data": {k: v for k, v in e["data"].items() if not k.startswith("val-")}}) + "\n"
        for e in lines))
    r = run_compare("--run", f"sspo={quiet}")
    assert r.code == 0, r.err
    assert _row(r.out, "sspo")[2] == "n/a"
    assert "held-out metric: none logged (none: the run logs no val-core key)" in r.out
