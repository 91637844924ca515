"""The quality gate on a cold start: is the policy RL starts from inside the range where RL learns here?

docs/TESTBED.md ("What made RL learn here") measured it: RL learns from a start that makes one repeatable mistake it
also knows how to avoid (sampled pass@G far above pass@1), and learns nothing from a start that rarely samples the
right answer, or from one that is already right. A weak start is never used silently: the testbed, its sweep and
cpu_tiny's first use all pass their cold start through `check_learnable`, which raises `ColdStartError` naming the
measured values, the range, and the fix.

PROVISIONAL thresholds (owner: the testbed; to be set from measured cold starts and what learned from them).
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
    val_acc_max: float = 0.6  # greedy val accuracy: headroom left to sharpen


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
