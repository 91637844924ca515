"""The sweep's grid, its M = 1 sharing, the knob choice (on val, never test), the early-curve measures, and the
committed choice the main job runs at."""

import json
from pathlib import Path

import pytest

from sspo_verl.tools.calibrate import taus_from_clip
from sspo_verl.testbed import sweep
from sspo_verl.testbed.analysis import TARGET_GAIN, measure
from sspo_verl.testbed.jobs import Run

ROOT = Path(__file__).resolve().parents[2]


def test_every_method_gets_its_own_knob_grid():
    dapo = sweep.knob_grid("grpo_dapo")
    assert [k for _, k, _ in dapo] == [dict(clip_ratio_low=0.2, clip_ratio_high=0.28),
                                       dict(clip_ratio_low=0.1, clip_ratio_high=0.14),
                                       dict(clip_ratio_low=0.4, clip_ratio_high=0.56)]
    assert [k["clip_ratio"] for _, k, _ in sweep.knob_grid("gmpo")] == [0.4, 0.2, 0.8]
    for method in ("sapo", "sspo", "sspo_sigmoid", "sspo_erf", "sspo_softsign"):
        grid = sweep.knob_grid(method)
        assert len(grid) >= 4
        knobs = [k for _, k, _ in grid]
        cal = taus_from_clip(method if method != "sspo" else "arctan", 0.2, 0.28)
        assert knobs[0] == dict(tau_pos=cal[0], tau_neg=cal[1])  # the reference: calibrated to DAPO's clip
        assert dict(tau_pos=1.0, tau_neg=1.05) in knobs  # SAPO's default
    assert sweep.knob_grid("sspo")[0][0] == "tau 4.05/4.48 (calibrated to 0.2/0.28)"
    for method in sweep.SWEEP_METHODS:
        assert len(sweep.knob_grid(method)) >= 3


def test_m1_runs_are_shared_except_sapo():
    runs, shared = sweep.sweep_runs(["grpo_dapo", "sapo"], (1, 2), seeds=2)
    # grpo_dapo: 3 knobs; sapo: 4. At M = 1 grpo_dapo runs its reference only; sapo runs all four.
    assert len(runs) == 2 * (1 + 4) + 2 * (3 + 4) and len(shared) == 2 * 2
    assert all(r.mini_batches == 1 and r.method == "grpo_dapo" for r in shared)
    assert all(ref.label == "clip 0.2/0.28 (default)" and ref.seed == r.seed for r, ref in shared.items())
    assert not set(shared) & set(runs)


def _records(accs, max_log_ratio=0.0, steps=None):
    steps = steps or list(range(0, 2 * len(accs), 2))
    return [{"method": "grpo_dapo", "seed": 0, "step": s, "val_acc": a, "test_acc": a, "max_abs_log_ratio": max_log_ratio,
             "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "knob": "clip 0.2/0.28 (default)"}
            for s, a in zip(steps, accs)]


def test_sharing_copies_exactly_on_policy_records_and_refuses_the_rest():
    ref = Run("grpo_dapo", 0, 1, (("clip_ratio_low", 0.2), ("clip_ratio_high", 0.28)), "clip 0.2/0.28 (default)")
    other = Run("grpo_dapo", 0, 1, (("clip_ratio_low", 0.1), ("clip_ratio_high", 0.14)), "clip 0.1/0.14")
    results = {ref: {"records": _records([0.3, 0.5, 0.6]), "wall_s": 1.0}}
    assert sweep.share_on_policy(results, {other: ref}) == []
    copied = results[other]["records"]
    assert [r["val_acc"] for r in copied] == [0.3, 0.5, 0.6] and results[other]["shared_from"] == ref.label
    assert all(r["knob"] == "clip 0.1/0.14" and r["clip_ratio_low"] == 0.1 for r in copied)
    results = {ref: {"records": _records([0.3, 0.5, 0.6], max_log_ratio=1e-8), "wall_s": 1.0}}
    assert sweep.share_on_policy(results, {other: ref}) == [other] and other not in results


def test_the_knob_is_chosen_on_val_and_never_on_test():
    rows = [{"method": "grpo_dapo", "label": label, "mini_batches": m, "seed": 0, "val_final": val, "test_final": test}
            for label, val, test in [("clip 0.2/0.28 (default)", 0.6, 0.9), ("clip 0.1/0.14", 0.7, 0.5),
                                     ("clip 0.4/0.56", 0.65, 0.95)] for m in (1, 2)]
    chosen = sweep.choose(rows, ["grpo_dapo"])["grpo_dapo"]
    assert chosen["label"] == "clip 0.1/0.14" and chosen["knob"] == dict(clip_ratio_low=0.1, clip_ratio_high=0.14)
    tied = [dict(r, val_final=0.6) for r in rows]
    assert sweep.choose(tied, ["grpo_dapo"])["grpo_dapo"]["label"] == "clip 0.2/0.28 (default)"


def test_early_curve_measures_by_hand():
    m = measure(_records([0.3, 0.4, 0.5, 0.4], steps=[0, 2, 4, 6]))
    assert m.start == 0.3 and m.final == 0.4 and m.best == 0.5 and m.gain == pytest.approx(0.1)
    # trapezoids: (0.35 + 0.45 + 0.45) * 2 / 6
    assert m.auc == pytest.approx((0.35 + 0.45 + 0.45) * 2 / 6)
    assert m.steps_to_target == 4 and TARGET_GAIN == 0.15  # 0.5 >= 0.3 + 0.15 first at step 4
    assert measure(_records([0.3, 0.4, 0.44])).steps_to_target is None
    with pytest.raises(ValueError, match="no val_acc at step 0"):
        measure(_records([0.3, 0.4], steps=[2, 4]))


@pytest.mark.parametrize("task,folder", [("short", "sweep-cpu"), ("long", "sweep-long-cpu")])
def test_the_main_job_runs_at_the_committed_choice(task, folder):
    """run.CHOSEN_BY_TASK (what `python -m sspo_verl.testbed --task <task>` runs) is its committed sweep's chosen.json."""
    from sspo_verl.testbed.run import CHOSEN_BY_TASK, method_knob, parse_args

    committed = json.loads((ROOT / "docs" / "results" / folder / "chosen.json").read_text())
    assert {m: (c["label"], c["knob"]) for m, c in committed.items()} == \
        {m: (label, knob) for m, (label, knob) in CHOSEN_BY_TASK[task].items()}
    args = parse_args(["--task", task, "--methods", "grpo_dapo,sspo"])
    assert method_knob("sspo", args) == (tuple(committed["sspo"]["knob"].items()), committed["sspo"]["label"])


@pytest.mark.slow
def test_a_tiny_sweep_end_to_end(tmp_path):
    """The real path on a tiny grid: M = 1 runs shared exactly, the choice, the tables and the three figures."""
    import gzip

    out = tmp_path / "sweep"
    assert sweep.main(["--methods", "grpo_dapo,sspo", "--mini-batches", "1,2", "--seeds", "1", "--steps", "2",
                       "--heldout", "16", "--sft-steps", "10", "--prompts", "8", "--group-size", "4", "--workers", "1",
                       "--no-quality-gate", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["runs_executed"] == 1 + 1 + 3 + 4 and config["runs_shared_at_m1"] == 2 + 3
    assert config["runs_not_shared"] == 0 and config["cpu_s"] > 0
    rows = json.loads((out / "runs.json").read_text())
    assert len(rows) == 2 * (3 + 4)
    shared = [r for r in rows if r["shared_from"]]
    assert len(shared) == 5 and all(r["mini_batches"] == 1 and r["wall_s"] == 0.0 for r in shared)
    chosen = json.loads((out / "chosen.json").read_text())
    assert set(chosen) == {"grpo_dapo", "sspo"}
    with gzip.open(out / "metrics.jsonl.gz", "rt") as f:
        records = [json.loads(line) for line in f]
    assert {(r["method"], r["knob"], r["mini_batches"]) for r in records if r["step"] == 0} == \
        {(r["method"], r["label"], r["mini_batches"]) for r in rows}
    summary = (out / "summary.md").read_text()
    assert "## Best vs best" in summary and "## Where a step spends its time" in summary
    assert "## Stability at the chosen knobs" in summary and "| sspo | 2 | 1 |" in summary
    for name in ("central.png", "robustness.png", "drift.png", "stability.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
