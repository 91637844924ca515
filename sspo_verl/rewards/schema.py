"""The one result every data source returns.

verl builds `reward_extra_info` from the keys of the first item of a batch (0.9.1: reward_loop.py and
agent_loop.py), so a key that only some data sources return breaks a mixed validation set with a KeyError.
Scorers therefore return a `Verdict`, and only `Verdict.result` (or `error_result`) makes the dict verl sees:

    score          the reward: 1.0 for a right answer, 0.0 otherwise (wrong, malformed, timed out, scorer error);
                   for a data source delegated to verl's own scorer (verl_default.py), that scorer's reward
    acc            1.0 for a right answer, else 0.0; verl files `acc` under val-core (val-core/<data_source>/acc/mean@N)
    acc_tolerant   the scorer's lenient reading (GSM8K: `####`, else the last \\boxed{}, else the last number);
                   equal to acc for scorers without one (math-verify)
    timeout        1.0 when checking the answer ran past its time bound (scored 0)
    scorer_error   1.0 when the scorer failed for a reason that is not the answer (scored 0; see rewards/__init__)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

RESULT_KEYS = ("score", "acc", "acc_tolerant", "timeout", "scorer_error")


@dataclass(frozen=True)
class Verdict:
    """What a scorer found about one answer."""

    correct: bool
    correct_tolerant: Optional[bool] = None  # None: the scorer has no lenient reading (acc_tolerant = acc)
    timed_out: bool = False
    unreadable: Optional[str] = None  # why the scorer could not read the answer (malformed: scores 0, logged once)
    reward: Optional[float] = None  # None: 1.0 when correct, else 0.0; verl's scorers give their own (math_dapo: -1)

    def result(self) -> dict[str, float]:
        right = float(self.correct and not self.timed_out)
        score = right if self.reward is None or self.timed_out else float(self.reward)
        tolerant = right if self.correct_tolerant is None else float(self.correct_tolerant and not self.timed_out)
        return {"score": score, "acc": right, "acc_tolerant": tolerant, "timeout": float(self.timed_out),
                "scorer_error": 0.0}


def error_result() -> dict[str, float]:
    """The result of an answer the scorer could not check (an unexpected error, counted and logged)."""
    return {"score": 0.0, "acc": 0.0, "acc_tolerant": 0.0, "timeout": 0.0, "scorer_error": 1.0}
