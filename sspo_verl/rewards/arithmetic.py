"""The testbed's arithmetic task scored for verl's reward loop: data_source `sspo/arithmetic` (recipes/cpu_tiny.sh).

Right means what the testbed's verifier means (sspo_verl.testbed.arithmetic.reward): the response, stripped, is
a comma-separated list of integers (the running totals: "13+7-2=" -> "20,18") whose last one is the answer.
Linear in the response by construction, without a regex: one split, then per part a strip of the sign and an
ASCII-digit check; an integer of more than MAX_DIGITS digits is not an answer (nor converted).
"""

from __future__ import annotations

from typing import Any

from .schema import Verdict

SOURCES = ("sspo/arithmetic",)
MAX_DIGITS = 18  # every total of the task has a few digits; a longer run is not an answer


def _integer(part: str) -> bool:
    digits = part[1:] if part.startswith("-") else part
    return 0 < len(digits) <= MAX_DIGITS and digits.isascii() and digits.isdigit()


def score(solution: str, ground_truth: Any) -> Verdict:
    try:
        reference = int(str(ground_truth).strip())
    except ValueError:
        raise ValueError(f"the arithmetic reference answer {ground_truth!r} is not an integer: reward_model.ground_truth "
                         f"holds the final total (python -m sspo_verl.testbed.cpu_recipe writes it)") from None
    parts = solution.strip().split(",")
    return Verdict(all(map(_integer, parts)) and int(parts[-1]) == reference)
