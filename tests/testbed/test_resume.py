"""Long jobs survive interruption: a sweep killed (SIGKILL of its process group) during its cold start and again
mid-way, then rerun, ends with the records and report of an uninterrupted sweep; the main job resumes the same way;
a different command on the folder is refused, naming what differs."""

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sspo_verl.errors import SSPOError
from sspo_verl.testbed.store import JobMismatchError, RunFolder

TINY_SWEEP = ["--methods", "grpo_dapo,sspo", "--mini-batches", "1,2", "--seeds", "1", "--steps", "2", "--heldout", "16",
              "--sft-steps", "10", "--prompts", "8", "--group-size", "4", "--no-sapo-default", "--no-quality-gate"]
TINY_MAIN = ["--methods", "grpo_dapo,sspo", "--seeds", "1", "--steps", "2", "--sft-steps", "10", "--prompts", "8",
             "--group-size", "4", "--mini-batches", "4", "--heldout", "16", "--eval-every", "1", "--no-quality-gate",
             "--workers", "1"]
TIMING_SECTION = "## Where a step spends its time"  # seconds per step: differ between any two runs


def _sweep(out: Path, extra=(), **popen):
    cmd = [sys.executable, "-m", "sspo_verl.testbed.sweep", *TINY_SWEEP, *extra, "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)  # its own process group: the kill takes the workers too


def _kill_when(proc, ready, timeout=600.0) -> None:
    """SIGKILL proc's whole process group as soon as ready() holds (the job must not have ended by then)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the job ended before it could be killed:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "timed out waiting to kill the job"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _finish(proc) -> str:
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output
    return output


def _records(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return [{k: v for k, v in json.loads(line).items() if not k.startswith("time_")} for line in f]


def _report(folder: Path) -> list[str]:
    """summary.md without what differs between any two runs: the wall-time line, the step-time table, the folder."""
    text = (folder / "summary.md").read_text().split(TIMING_SECTION)[0].replace(str(folder), "<out>")
    return [line for line in text.splitlines() if not line.startswith("Wall time: ")]


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_the_report_of_an_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole"
    _finish(_sweep(whole, ["--workers", "1"]))

    out = tmp_path / "killed"
    cold = out / "cold_start"
    # 1. killed while its cold start is being built
    _kill_when(_sweep(out, ["--workers", "2"]), lambda: (cold / "seed0.building").exists())
    assert not (cold / "seed0.json").exists() and not (out / "runs").exists()
    # 2. resumed, killed again once some runs (not all) have finished; the cold start is kept in the folder
    runs = lambda: list((out / "runs").glob("*.json.gz")) if (out / "runs").exists() else []  # noqa: E731
    _kill_when(_sweep(out, ["--workers", "2"]), lambda: len(runs()) >= 2)
    finished = len(runs())
    assert 2 <= finished < 8 and not (out / "summary.md").exists()
    assert (cold / "seed0" / "config.json").exists() and (cold / "seed0.json").exists()
    # 3. rerun to the end (another worker count: the records do not depend on it)
    output = _finish(_sweep(out, ["--workers", "1"]))
    assert f"{finished} of 8 runs already finished" in output and ", reused)" in output
    assert not [p for p in out.rglob("*") if ".tmp" in p.name or ".building" in p.name]  # nothing half-written left

    assert _records(out / "metrics.jsonl.gz") == _records(whole / "metrics.jsonl.gz")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]  # noqa: E731
    assert strip(json.loads((out / "runs.json").read_text())) == strip(json.loads((whole / "runs.json").read_text()))
    assert (out / "chosen.json").read_text() == (whole / "chosen.json").read_text()
    assert _report(out) == _report(whole)
    assert len(_report(whole)) > 30  # the tables are there, not only a title
    config = json.loads((out / "config.json").read_text())
    untimed = lambda infos: [{k: v for k, v in i.items() if k != "sft_s"} for i in infos]  # noqa: E731
    assert len(config["invocations"]) == 3
    assert untimed(config["cold_start"]) == untimed(json.loads((whole / "config.json").read_text())["cold_start"])
    assert not (cold / "seed0").exists()  # the checkpoint goes when the job ends; its measured quality stays


@pytest.mark.slow
def test_the_main_job_resumes_and_skips_its_finished_runs(tmp_path):
    from sspo_verl.testbed.run import main

    whole = tmp_path / "whole"
    assert main(TINY_MAIN + ["--out", str(whole)]) == 0
    # the state of a job killed after its first run: job.json, the cold start's info, one run
    part = tmp_path / "part"
    (part / "runs").mkdir(parents=True)
    shutil.copy(whole / "job.json", part / "job.json")
    shutil.copytree(whole / "cold_start", part / "cold_start")  # its checkpoint is gone: it is rebuilt, identically
    first = sorted((whole / "runs").glob("grpo-*.json.gz"))[0]
    shutil.copy(first, part / "runs" / first.name)
    stamp = (part / "runs" / first.name).stat().st_mtime_ns
    assert main(TINY_MAIN + ["--out", str(part)]) == 0
    assert (part / "runs" / first.name).stat().st_mtime_ns == stamp  # skipped, not run again
    assert _records(part / "metrics.jsonl") == _records(whole / "metrics.jsonl")
    assert _report(part) == _report(whole)


def test_another_command_on_the_folder_is_refused_naming_what_differs(tmp_path):
    from sspo_verl.testbed.jobs import Run

    identity = {"task": {"n_operands": 3}, "rl": {"lr": 3e-5, "steps": 30}}
    first = RunFolder(tmp_path, identity, "python -m sspo_verl.testbed --out x")
    first.claim()
    first.save_result(Run("grpo_dapo", 0, 16), {"run": {}, "records": [], "wall_s": 1.0})
    assert RunFolder(tmp_path, identity, "the same, --workers 1").claim() == 1  # the same job: taken again
    other = {"task": {"n_operands": 12}, "rl": {"lr": 3e-5, "steps": 30}}
    with pytest.raises(JobMismatchError, match=r"task.n_operands: 3 there, 12 here") as err:
        RunFolder(tmp_path, other, "python -m sspo_verl.testbed --task long --out x").claim()
    assert isinstance(err.value, SSPOError) and "python -m sspo_verl.testbed --out x" in str(err.value)
    assert "holds 1 finished runs of another job" in str(err.value) and "another --out" in str(err.value)


def test_a_killed_write_leaves_the_old_file_or_none(tmp_path, monkeypatch):
    from sspo_verl.testbed import store

    target = tmp_path / "a.json"
    store.write_json(target, {"v": 1})

    def crash(*args):
        raise KeyboardInterrupt  # stands for a kill between writing and renaming

    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}


def test_a_job_stopped_by_the_quality_gate_keeps_its_cold_starts(tmp_path):
    """The gate's error names the seed, its values and the fix; the cold starts stay (the same command with
    --no-quality-gate runs from them); another command takes over a folder that holds no finished run."""
    from sspo_verl.testbed.jobs import check_cold_starts
    from sspo_verl.testbed.quality import ColdStartError

    folder = RunFolder(tmp_path, {"task": 1}, "cmd")
    folder.claim()
    good = {"seed": 0, "val_acc": 0.53, "val_pass1": 0.32, "val_pass_g": 0.91, "group_size": 8}
    weak = {"seed": 2, "val_acc": 0.266, "val_pass1": 0.155, "val_pass_g": 0.633, "group_size": 8}  # measured
    for info in (good, weak):
        folder.save_cold_start(info["seed"], info)
    with pytest.raises(ColdStartError, match=r"seed 2 .*pass@8 0.633 .*pass@1 0.155 .*--sft-steps"):
        check_cold_starts([good, weak], "raise --sft-steps")
    again = RunFolder(tmp_path, {"task": 1}, "cmd --no-quality-gate")
    again.claim()
    assert again.cold_start_info(2, need_weights=False) == weak  # kept for the same job
    lines = []
    RunFolder(tmp_path, {"task": 2}, "another command").claim(log=lines.append)
    assert "held the cold starts of another job (`cmd`, which differs in 1 setting(s) (task: 1 there, 2 here))" \
        in lines[0] and not (tmp_path / "cold_start").exists()


def test_a_cold_start_whose_folder_lacks_a_file_is_built_again(tmp_path):
    """A checkpoint without its tokenizer (a build that something else touched: a killed job's orphaned worker
    finishing into the folder of the job that replaced it) once loaded verl's fallback tokenizer, which encodes every
    prompt to nothing, and the first RL step failed inside verl (prompt_len 0). A seed's cold start is reused only
    when its folder holds the weights, their config and the tokenizer."""
    from sspo_verl.testbed.store import CHECKPOINT_FILES

    folder = RunFolder(tmp_path, {"task": 1}, "cmd")
    folder.claim()
    info = {"seed": 0, "val_acc": 0.5}
    folder.save_cold_start(0, info)
    weights = folder.cold_start_path(0)
    weights.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        (weights / name).write_text("{}")
    assert folder.cold_start_info(0, need_weights=True) == info
    for name in CHECKPOINT_FILES:
        (weights / name).rename(weights / f"{name}.gone")
        assert folder.cold_start_info(0, need_weights=True) is None, f"reused without {name}"
        assert folder.cold_start_info(0, need_weights=False) == info  # its runs are done: the numbers suffice
        (weights / f"{name}.gone").rename(weights / name)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # the parent pid, after the state
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running: its /proc entry exists and it is not a zombie (exited, not yet reaped by its new parent)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the workers' parent-death signal is Linux's prctl")
def test_a_job_killed_alone_takes_its_workers_with_it(tmp_path):
    """SIGKILL of the job's process only (not its group): its pool workers die too, instead of finishing their cold
    starts into a folder that a rerun may own by then (how the middle-length sweep got a checkpoint without its
    tokenizer)."""
    proc = _sweep(tmp_path / "out", extra=["--seeds", "2"])  # overrides TINY_SWEEP's 1 seed: two workers build
    deadline = time.monotonic() + 300
    while len(workers := _children(proc.pid)) < 2:
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "the pool's workers never started"
        time.sleep(0.05)
    time.sleep(1.0)  # past their initializer
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in workers if _alive(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"workers of the killed job still running: {alive}"
