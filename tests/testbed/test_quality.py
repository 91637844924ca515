"""The quality gate's bounds against the committed evidence: it passes every cold start RL learned from in the
committed run folders and refuses every one it learned nothing from; its error names the values, range and fix."""

import json
from pathlib import Path

import pytest

from sspo_verl.errors import SSPOError
from sspo_verl.testbed.analysis import measure
from sspo_verl.testbed.quality import LEARNABLE, ColdStartError, check_learnable

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def _cold_starts_and_gains(folder: Path) -> list[tuple[dict, float]]:
    """(cold-start info, gain in greedy val accuracy of the on-policy or first method's run) per seed."""
    config = json.loads((folder / "config.json").read_text())
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    method = config.get("on_policy_control") or config["methods"][0]
    out = []
    for info in config["cold_start"]:
        run = [r for r in records if r["method"] == method and r["seed"] == info["seed"]]
        out.append((info, measure(run).gain))
    return out


LEARNED = ["what-learns/d-new-task-old-lr", "what-learns/e-new-no-warmup", "what-learns/f-new-default", "main-cpu"]
NOTHING = ["what-learns/b-old-task-new-lr", "what-learns/c-new-task-clean-demos"]


@pytest.mark.parametrize("folder", LEARNED)
def test_the_gate_passes_the_cold_starts_that_learned(folder):
    for info, gain in _cold_starts_and_gains(RESULTS / folder):
        assert gain > 0.15  # the evidence: these learned
        check_learnable(info, f"seed {info['seed']} of {folder}", "n/a")


@pytest.mark.parametrize("folder", NOTHING)
def test_the_gate_refuses_the_cold_starts_that_learned_nothing(folder):
    for info, gain in _cold_starts_and_gains(RESULTS / folder):
        assert gain < 0.05  # the evidence: these did not learn
        with pytest.raises(ColdStartError):
            check_learnable(info, f"seed {info['seed']} of {folder}", "n/a")


def test_the_error_names_the_values_the_range_and_the_fix():
    weak = {"seed": 0, "val_acc": 0.047, "val_pass1": 0.053, "val_pass_g": 0.359, "group_size": 8}
    with pytest.raises(SSPOError) as err:
        check_learnable(weak, "the cold start of seed 0", "raise --sft-steps")
    text = str(err.value)
    assert text.startswith("the cold start of seed 0 is outside the range where RL learns here (sampled pass@8 0.359 "
                           f"< {LEARNABLE.val_pass_g_min}; sampled pass@1 0.053 < {LEARNABLE.val_pass1_min};")
    assert text.endswith("raise --sft-steps") and "\n" not in text
    right = {"seed": 1, "val_acc": 0.86, "val_pass1": 0.47, "val_pass_g": 0.97, "group_size": 8}
    with pytest.raises(ColdStartError, match=rf"greedy val accuracy 0.860 > {LEARNABLE.val_acc_max}"):
        check_learnable(right, "the cold start of seed 1", "fix")
