"""`make run` ends by comparing its result with the committed run (committed.py); the gap-against-length table and
figure (lengths.py); the stability table (analysis.stability_table). All on the committed run folders."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from sspo_verl.errors import SSPOError
from sspo_verl.testbed import committed, lengths
from sspo_verl.testbed.analysis import stability_table

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "docs" / "results" / "main-cpu"
SWEEP = ROOT / "docs" / "results" / "sweep-cpu"


def _main_run():
    records = [json.loads(line) for line in (MAIN / "metrics.jsonl").read_text().splitlines()]
    config = {**json.loads((MAIN / "config.json").read_text()), "task_preset": "short"}
    return records, config


def test_the_committed_run_holds_against_itself(tmp_path):
    records, config = _main_run()
    text = committed.compare(records, config, tmp_path)
    assert "Records identical to the committed ones (times aside): yes" in text
    assert "| every method gains at least +0.15 over the cold start (test, mean over seeds) |" in text
    # the committed numbers (docs/TESTBED.md): cold start 0.349, sspo behind grpo_dapo by 0.047 in 3 of 3 seeds
    assert "| cold start | 0.349 | 0.349 | +0.000 |" in text
    assert "| sspo behind grpo_dapo at M = 16 (final test accuracy, paired by seed) | -0.047 (0/3 seeds ahead) | " \
           "-0.047 (0/3 seeds ahead) | yes |" in text
    assert "**no**" not in text


def test_a_run_that_contradicts_a_conclusion_says_so(tmp_path):
    records, config = _main_run()
    flipped = copy.deepcopy(records)
    for r in flipped:  # sspo ends 0.2 above its committed final: ahead of grpo_dapo in every seed
        if r["method"] == "sspo" and r["step"] == 30:
            r["test_acc"] += 0.2
    text = committed.compare(flipped, config, tmp_path)
    assert "| sspo behind grpo_dapo at M = 16 (final test accuracy, paired by seed) | -0.047 (0/3 seeds ahead) | " \
           "+0.153 (3/3 seeds ahead) | **no** |" in text
    assert "Records identical to the committed ones (times aside): no" in text
    weak = copy.deepcopy(records)
    for r in weak:  # no method gains: every final equals its cold start
        if r["step"] == 30:
            r["test_acc"] = next(x["test_acc"] for x in records if x["method"] == r["method"] and
                                 x["seed"] == r["seed"] and x["step"] == 0)
    assert "grpo M=1 +0.000" in committed.compare(weak, config, tmp_path)
    assert "| every method gains at least +0.15" in committed.compare(weak, config, tmp_path).split("**no**")[0]


def test_another_job_is_not_compared(tmp_path):
    records, config = _main_run()
    other = {**config, "task": {"n_operands": 12, "max_operand": 9, "total_width": 3}}
    assert "Not compared: this job differs from the committed one in task." in committed.compare(records, other, tmp_path)
    # a field added to the task since the committed run, at its default, is the same task
    same = {**config, "task": {**config["task"], "total_width": 0}}
    assert "Not compared" not in committed.compare(records, same, tmp_path)
    assert "This is the committed run" in committed.compare(records, config, MAIN)


def test_the_gap_against_length_reads_the_committed_sweep(tmp_path):
    sweep = lengths.read_sweep(SWEEP)
    gap = sweep["gaps"]["sspo"]
    # docs/TESTBED.md: SSPO -0.047 at M = 16 (range -0.102 to -0.012), behind in 3 of 3 seeds
    assert sweep["M"] == 16 and round(float(np.mean(list(gap.values()))), 3) == -0.047
    assert round(min(gap.values()), 3) == -0.102 and round(max(gap.values()), 3) == -0.012
    assert 4.5 < sweep["tokens"] < 6  # responses of about 5 tokens
    assert lengths.main([str(SWEEP), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "gap_vs_length.png").read_bytes()[:4] == b"\x89PNG"
    assert "| sweep-cpu | 5.1 | 16 | sspo (tau 8.1/8.96) | -0.047 [-0.102, -0.012] | 0/3 |" in \
        (tmp_path / "summary.md").read_text()
    with pytest.raises(SSPOError, match="is not a finished sweep folder .*runs.json"):
        lengths.read_sweep(MAIN)


def test_the_stability_table_by_hand():
    def run(entropies, iw, accs):
        return [{"method": "sspo", "seed": 0, "step": k, "entropy": e, "token_iw_var": v, "seq_iw_var": v / 10,
                 "val_acc": a, "pg_loss": 0.1} for k, (e, v, a) in enumerate(zip(entropies, iw, accs))]

    runs = {("sspo", 16, 0): run([0.5, 0.3, 0.4], [0.0, 0.02, 0.04], [0.3, 0.6, 0.2]),  # collapsed: 0.2 < 0.6 / 2
            ("sspo", 16, 1): run([0.7, 0.6, 0.5], [0.0, 0.01, 0.01], [0.3, 0.5, 0.5])}
    for r in runs[("sspo", 16, 1)]:
        r["seed"] = 1
    row = stability_table(runs).splitlines()[2]
    # token IW variance: mean of (0, .02, .04, 0, .01, .01); entropy first (0.5 + 0.7) / 2, last (0.4 + 0.5) / 2,
    # lowest (0.3 + 0.5) / 2; one collapse of two
    assert row == "| sspo | 16 | 2 | 0.0133 | 0.00133 | 0.600 | 0.450 | 0.400 | 1/2 |"
