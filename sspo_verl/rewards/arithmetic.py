"""The testbed's arithmetic task, scored for verl's reward loop (data_source `sspo/arithmetic`, the CPU recipe).

A response is right when it is the list of running totals ending in the answer ("64,47" for 23+41-17), the
format the cold start teaches (sspo_verl.testbed.arithmetic.reward). Pure string work: no torch, no verl.
"""

from __future__ import annotations

from ..testbed.arithmetic import reward

SOURCE = "sspo/arithmetic"


def compute_score(solution_str: str, ground_truth: str) -> dict:
    acc = reward(solution_str or "", int(ground_truth))
    return {"score": acc, "acc": acc}
