"""GSM8K scoring: the strict `#### <answer>` format (the reward), and a tolerant reading reported beside it.

strict:   the number after the response's last `####` equals the reference (verl's GSM8K format). Only the last
          `####` counts: `#### 72\\n#### 5` answers 5, as in verl's own GSM8K scorer, so writing several answers
          gains nothing; `#### 72 ####` (a last marker with no number) answers nothing.
tolerant: the strict answer if there is one, else the last \\boxed{<number>}, else the last number.
Numbers compare as values (`1,000` = `1000` = `1000.0` = `$1000`); ASCII digits only (text.py). Every step runs
in time linear in the response (text.py).
"""

from __future__ import annotations

from typing import Any, Optional

from . import text
from .schema import Verdict

SOURCES = ("openai/gsm8k", "gsm8k")
MARKER = "####"


def reference_answer(answer_field: str) -> str:
    """The final answer of a GSM8K reference solution (the number after its last `####`), commas removed."""
    found = text.number_after_last(answer_field, MARKER)
    if found is None:
        raise ValueError(f"no '#### <number>' in GSM8K answer: {answer_field[-80:]!r}")
    return found.replace(",", "")


def _same(pred: Optional[str], reference: float) -> bool:
    value = text.to_number(pred)
    return value is not None and abs(value - reference) <= 1e-9 * max(1.0, abs(reference))  # 1450001 != 1450000


def score(solution: str, ground_truth: Any) -> Verdict:
    reference = text.to_number(str(ground_truth).strip())
    if reference is None:
        raise ValueError(f"the GSM8K reference answer {ground_truth!r} is not a number: reward_model.ground_truth "
                         f"holds the number after '####' (python -m sspo_verl.data.prepare gsm8k writes it)")
    strict = text.number_after_last(solution, MARKER)
    tolerant = strict if strict is not None else text.boxed_number(solution) or text.last_number(solution)
    return Verdict(_same(strict, reference), _same(tolerant, reference))
