"""Every example runs as examples/README.md says (from the repository root, this interpreter as PYTHON) and prints
what it promises. A missing example fails here, it is never skipped."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sspo_verl.loss.methods import METHODS, hydra_overrides

ROOT = Path(__file__).resolve().parents[2]
# the placeholders of examples/hydra_lines.sh, for the custom gate's dry run
COMMON = ["algorithm.adv_estimator=grpo", "data.train_files=/path/to/train.parquet",
          "data.val_files=/path/to/test.parquet", "actor_rollout_ref.model.path=/path/to/model",
          "data.train_batch_size=256", "actor_rollout_ref.rollout.n=8",
          "actor_rollout_ref.actor.ppo_mini_batch_size=64", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
          "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16"]


def _run(example: str, *args: str, check: bool = True, timeout: int = 180, **env) -> subprocess.CompletedProcess:
    """An example as a user runs it; bash for .sh, this interpreter for .py. No __pycache__ is left in examples/."""
    assert (ROOT / example).is_file(), f"{example} is missing"
    command = ["bash" if example.endswith(".sh") else sys.executable, example, *args]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHON": sys.executable, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                              "PYTHONDONTWRITEBYTECODE": "1", **env})
    if check:
        assert out.returncode == 0, f"{example} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _sections(stdout: str) -> dict[str, str]:
    """hydra_lines.sh's output: '# <label>' then that block's dry run."""
    parts = re.split(r"^# (.+)$", stdout, flags=re.M)
    return {label: body for label, body in zip(parts[1::2], parts[2::2])}


def test_hydra_lines_prints_a_checked_block_per_method():
    out = _run("examples/hydra_lines.sh").stdout
    sections = _sections(out)
    assert list(sections)[: len(METHODS)] == list(METHODS)
    for method, settings in METHODS.items():
        body = sections[method]
        assert f"[dry run] loss_mode={settings['loss_mode']} registered" in body, body
        block = body.split("[dry run] command:\n", 1)[1]
        assert block.startswith("python3 -m verl.trainer.main_ppo \\\n")
        lines = [line.strip().removesuffix("\\").strip() for line in block.splitlines()]
        assert set(hydra_overrides(method)) <= set(lines), block  # the methods table's lines, as its CLI prints them
    # the temperature blocks: a later override wins; TAU_FROM_CLIP gives the calibrated pair
    assert "tau_pos=0.5 tau_neg=2.0" in sections["sspo, temperatures overridden"]
    from sspo_verl.tools.calibrate import taus_from_clip

    tau_pos, tau_neg = taus_from_clip("sspo", 0.2, 0.28)
    assert f"tau_pos={tau_pos:.6g} tau_neg={tau_neg:.6g}" in sections['sspo, TAU_FROM_CLIP="0.2 0.28"']
    assert f"{len(METHODS) + 2} blocks pass verl's config checks" in out


def test_hydra_lines_stops_on_an_unknown_method():
    out = _run("examples/hydra_lines.sh", "sspo", "sspo_cosine", check=False)
    assert out.returncode != 0 and "unknown method 'sspo_cosine'" in out.stderr
    assert "[dry run]" not in out.stdout  # nothing checked, nothing half-printed


def test_loss_on_tensors_reference_and_verl_registry_agree():
    out = _run("examples/loss_on_tensors.py").stdout
    reference = float(re.search(r"^reference loss (\S+)$", out, re.M).group(1))
    verl = float(re.search(r"^verl registry loss (\S+) ", out, re.M).group(1))
    assert reference == verl and reference != 0
    assert "reference == verl registry: loss and gradient agree" in out
    assert "gradient == plain policy gradient" in out and "actor/sspo/seq_s_mean" in out


def _table(stdout: str, title: str) -> dict[str, list[str]]:
    """The markdown table printed after `title`: method -> its cells."""
    text = stdout.split(title, 1)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    table = {}
    for cells in rows[1:]:  # rows[0] is the header
        if cells[0] == "method":  # the next table's header
            break
        table[cells[0]] = cells[1:]
    return table


def test_compare_runs_reads_the_committed_runs_and_verl_file_logger_logs(tmp_path):
    out = _run("examples/compare_runs.sh", OUT=str(tmp_path)).stdout
    testbed = _table(out, "measured against grpo_dapo")
    sweep = _table(out, "at M = 16")
    verl = _table(out, "== verl file-logger logs")
    assert list(testbed) == ["grpo_dapo", "grpo", "sspo"]  # the testbed's baseline first, by default
    assert set(verl) == {"grpo_dapo", "sspo"}
    for method in ("grpo_dapo", "sspo"):
        assert testbed[method][0] == verl[method][0] == "3"  # seeds
        assert testbed[method][1] == verl[method][1]  # final held-out accuracy: the same runs, read from verl's format
        assert re.fullmatch(r"0\.\d+ ± 0\.\d+", verl[method][1])
    # the sweep: one row per method and knob at M = 16, three seeds each; the main run's knobs are two of its rows
    assert len(sweep) == 29 and {cells[0] for cells in sweep.values()} == {"3"}
    assert list(sweep)[0] == "grpo_dapo [clip 0.2/0.28 (default)]"
    assert sweep["grpo_dapo [clip 0.1/0.14]"][1] == testbed["grpo_dapo"][1]
    assert sweep["sspo [tau 8.1/8.96]"][1] == testbed["sspo"][1]
    assert "held-out metric: val_acc (the testbed's held-out val split)" in out
    assert "held-out metric: val-core/sspo/arithmetic/acc/mean@1 (the run's only val-core key)" in out
    line = json.loads((tmp_path / "verl_runs" / "sspo_seed0" / "metrics.jsonl").read_text().splitlines()[0])
    assert set(line) == {"step", "data"} and "critic/score/mean" in line["data"]  # verl FileLogger's format
    for report in ("testbed", "sweep_m16", "verl"):
        assert (tmp_path / report / "summary.md").is_file()


def _algebraic_loss() -> float:
    """run_in_ray.py's batch through the algebraic gate, by hand: -1/N sum_i s_i A_i."""
    def s(xs, tau):
        return math.exp(sum(x / math.sqrt(1 + (tau * x) ** 2) for x in xs) / len(xs))

    return -(2.0 * s([0.5, -1.0, 0.0], 1.0) - 1.0 * s([-0.5, 0.0], 1.05)) / 2


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and text in cmdline:
            found.append(f"{proc.name} {cmdline[:200]}")
    return found


@pytest.mark.slow  # a local Ray and two worker processes that import verl: ~15-25 s
def test_custom_gate_is_seen_by_a_ray_worker_only_through_external_lib():
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        out = _run("examples/custom_gate/run_in_ray.py", RAY_TMPDIR=ray_tmp).stdout
        for _ in range(20):  # ray.shutdown() stops its processes; give them a moment to exit
            if not _processes_mentioning(ray_tmp):
                break
            time.sleep(0.5)
        assert not _processes_mentioning(ray_tmp), "Ray processes outlived the example"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    driver = int(re.search(r"^driver pid (\d+)$", out, re.M).group(1))
    found = re.search(r"^with external_lib=my_gates \(worker pid (\d+)\): sspo_algebraic loss (\S+),", out, re.M)
    refused = re.search(r"^without external_lib \(worker pid (\d+)\): Unsupported loss mode: sspo_algebraic$", out,
                        re.M)
    assert found and refused, out
    assert len({driver, int(found.group(1)), int(refused.group(1))}) == 3  # three processes
    assert float(found.group(2)) == pytest.approx(_algebraic_loss(), rel=1e-5)  # the algebraic gate, not arctan


def test_custom_gate_launch_passes_the_dry_run():
    overrides = [*COMMON, "actor_rollout_ref.actor.policy_loss.loss_mode=sspo_algebraic",
                 "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
                 "actor_rollout_ref.model.external_lib=my_gates"]
    out = subprocess.run([sys.executable, "-m", "sspo_verl.tools.dry_run", "--", *overrides], cwd=ROOT,
                         capture_output=True, text=True, timeout=180,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "examples" / "custom_gate"),
                              "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[dry run] loss_mode=sspo_algebraic registered" in out.stdout


def test_custom_gate_calibrates_as_docs_gates_shows():
    """docs/GATES.md's command line: the example's gate, imported first, calibrated to the clip 0.2/0.28."""
    for gate in ("algebraic", "sspo_algebraic"):
        out = subprocess.run([sys.executable, "-m", "sspo_verl.tools.calibrate", "--import", "my_gates", "--gate", gate,
                              "--clip-low", "0.2", "--clip-high", "0.28"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT / "examples" / "custom_gate"),
                                               "PYTHONDONTWRITEBYTECODE": "1"})
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == "tau_pos=3.10468 tau_neg=3.43465"
        assert "tau_pos=3.10468 tau_neg=3.43465" in (ROOT / "docs" / "GATES.md").read_text()
