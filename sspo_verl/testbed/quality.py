"""The quality gate on a cold start: is the policy RL starts from inside the range where RL learns here?

docs/TESTBED.md ("What made RL learn here") measured it: RL learns from a start that makes one repeatable mistake it
also knows how to avoid (sampled pass@G far above pass@1), and learns nothing from a start that rarely samples the
right answer, or from one that is already right. A weak start is never used silently: the testbed, its sweep and
cpu_tiny's first use all pass their cold start through `check_learnable`, which raises `ColdStartError` naming the
measured values, the range, and the fix.

The thresholds sit between the cold starts that learned and those that did not (greedy val, sampled pass@1,
pass@8 -> gain in greedy accuracy; docs/TESTBED.md and docs/results/what-learns/):

    learned       3 numbers, 70% flawed demos   (0.29-0.35, 0.30-0.33, 0.90)  +0.31 to +0.45 (9 runs, 5 cold starts)
    learned       12 numbers, 50% flawed demos  (0.53, 0.32, 0.91)            +0.14 in 4 steps (the long preset)
    nothing       3 numbers up to 19, right demos (0.33-0.34, 0.19, 0.72-0.74)  -0.002 (lr 3e-5), -0.09 (lr 1e-4)
    nothing       3 numbers, right demos        (0.79-0.86, 0.47, 0.97)       +0.016: already right
    nothing       12 numbers, 70% flawed demos  (0.05, 0.05, 0.36)            +0.004 in 6 steps (long-response probe)

pass@G and pass@1 separate the weak starts (0.74 / 0.19 against 0.90 / 0.30), greedy accuracy the already-right
one (0.86 against 0.53). Few points: the bounds are where the data leave room, not fitted values.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SSPOError


class ColdStartError(SSPOError):
    """The cold start is outside the learnable range."""


@dataclass(frozen=True)
class LearnableRange:
    val_pass_g_min: float = 0.8  # sampled pass@G on val: the right answer is within reach of a group
    val_pass1_min: float = 0.25  # sampled pass@1 on val: a group often holds a right and a wrong answer
    val_acc_max: float = 0.7  # greedy val accuracy: headroom left to sharpen


LEARNABLE = LearnableRange()


def check_learnable(info: dict, where: str, fix: str, bounds: LearnableRange = LEARNABLE) -> None:
    """Raise ColdStartError unless `info` (keys val_acc, val_pass1, val_pass_g, group_size) is in range.

    where: which cold start ("cold start seed 0 in /tmp/x"); fix: what the user can do (e.g. a flag to change)."""
    g = info.get("group_size", "G")
    problems = []
    if info["val_pass_g"] < bounds.val_pass_g_min:
        problems.append(f"sampled pass@{g} {info['val_pass_g']:.3f} < {bounds.val_pass_g_min}")
    if info["val_pass1"] < bounds.val_pass1_min:
        problems.append(f"sampled pass@1 {info['val_pass1']:.3f} < {bounds.val_pass1_min}")
    if info["val_acc"] > bounds.val_acc_max:
        problems.append(f"greedy val accuracy {info['val_acc']:.3f} > {bounds.val_acc_max}")
    if problems:
        raise ColdStartError(f"{where} is outside the range where RL learns here ({'; '.join(problems)}; "
                             f"docs/TESTBED.md, 'What made RL learn here'): {fix}")
