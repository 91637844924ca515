"""The CPU recipe's console line per step (sspo_verl/verl_on_cpu/progress.py), read from verl's file logger: the
records of a committed cpu_tiny run (docs/results/cpu-tiny-sspo, verl's own JSONL), and the follower as the
recipe runs it beside main_ppo (a separate process, stopped by SIGTERM or by the exit of the process it watches)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sspo_verl.verl_on_cpu import progress

RUN = Path(__file__).resolve().parents[2] / "docs" / "results" / "cpu-tiny-sspo" / "metrics.jsonl"


def verl_records() -> list[dict]:
    return [json.loads(line) for line in RUN.read_text().splitlines()]


def test_a_step_shows_reward_val_accuracy_and_seconds_from_verls_own_record():
    records = {r["step"]: r for r in verl_records()}
    validated = next(s for s in sorted(records) if s > 0 and any(k.startswith("val-core/") for k in records[s]["data"]))
    data = records[validated]["data"]
    shown = progress.line(records[validated], "30", "sspo/arithmetic")
    assert shown == (f"step {validated}/30: reward {data['critic/score/mean']:.3f}, val sspo/arithmetic "
                     f"{data['val-core/sspo/arithmetic/acc/mean@1']:.3f}, {data['timing_s/step']:.1f} s")
    assert len(data) > 50  # what verl's console logger would have printed on that line
    assert progress.line(records[0], "30", "sspo/arithmetic") == \
        f"step 0/30: val sspo/arithmetic {records[0]['data']['val-core/sspo/arithmetic/acc/mean@1']:.3f}"
    unvalidated = next(s for s in sorted(records) if s > 0 and s != validated and
                       not any(k.startswith("val-") for k in records[s]["data"]))
    assert "val" not in progress.line(records[unvalidated], None, "sspo/arithmetic")


def test_without_a_source_every_validated_source_is_shown():
    step0 = verl_records()[0]
    shown = progress.line(step0, None, None)
    assert all(f"val {s} " in shown for s in ("sspo/arithmetic", "openai/gsm8k", "HuggingFaceH4/MATH-500"))


def test_the_follower_returns_complete_lines_only(tmp_path):
    path = tmp_path / "metrics.jsonl"
    follower = progress.Follower(path)
    assert follower.new_records() == []  # verl has not created the file yet
    first, second = (json.dumps(r).encode() for r in verl_records()[:2])
    path.write_bytes(first + b"\n" + second[:10])  # verl is half-way through writing a line
    assert [r["step"] for r in follower.new_records()] == [0]
    with open(path, "ab") as f:
        f.write(second[10:] + b"\n")
    assert [r["step"] for r in follower.new_records()] == [1]
    assert follower.new_records() == []


def follow(path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sspo_verl.verl_on_cpu.progress", str(path), "--steps", "30",
                             "--val-source", "sspo/arithmetic", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("stop", ["sigterm", "watched process exits"])
def test_the_follower_prints_each_step_as_it_is_logged_and_all_of_them_before_it_stops(tmp_path, stop):
    path = tmp_path / "metrics.jsonl"
    records = verl_records()[:4]
    watched = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    proc = follow(path, "--watch", str(watched.pid))
    try:
        with open(path, "wb", buffering=0) as f:  # as verl's FileLogger writes
            f.write(json.dumps(records[0]).encode() + b"\n")
            assert proc.stdout.readline().startswith("step 0/30: val sspo/arithmetic ")  # while the run goes on
            for record in records[1:]:
                f.write(json.dumps(record).encode() + b"\n")
        if stop == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            watched.kill()
            watched.wait()
        out, err = proc.communicate(timeout=60)
    finally:
        watched.kill()
        proc.kill()
    assert proc.returncode == 0, err
    assert out.splitlines() == [progress.line(r, "30", "sspo/arithmetic") for r in records[1:]]


def test_a_bad_flag_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sspo_verl.verl_on_cpu.progress", str(tmp_path / "m.jsonl"),
                           "--watch", "me"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "--watch" in proc.stderr


def test_an_exited_but_unreaped_process_counts_as_gone():
    watched = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while progress._alive(watched.pid) and time.monotonic() < deadline:  # a zombie until wait() below
        time.sleep(0.05)
    assert not progress._alive(watched.pid) and watched.poll() == 0
    assert progress._alive(os.getpid())
