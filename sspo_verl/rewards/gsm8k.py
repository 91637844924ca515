"""GSM8K scoring: the strict `#### <answer>` format, and a tolerant variant reported beside it.

strict:   the last `#### <number>` in the response equals the reference (verl's GSM8K convention).
tolerant: strict, else the last \\boxed{...}, else the last number in the response.
Numbers compare as values (`1,000` = `1000` = `1000.0` = `$1000`). Malformed responses score 0, never raise.
"""

from __future__ import annotations

import re
from typing import Optional

_NUMBER = r"-?[\d,]*\.?\d+"
_STRICT = re.compile(r"####\s*\$?\s*(" + _NUMBER + r")")
_BOXED = re.compile(r"\\boxed\{\s*\$?\s*(" + _NUMBER + r")\s*\}")
_ANY = re.compile(_NUMBER)


def _to_number(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    try:
        return float(text.replace(",", "").replace("$", "").strip())
    except ValueError:
        return None


def reference_answer(answer_field: str) -> str:
    """The final answer of a GSM8K reference solution (the text after `####`), commas removed."""
    match = _STRICT.findall(answer_field)
    if not match:
        raise ValueError(f"no '#### <number>' in GSM8K answer: {answer_field[-80:]!r}")
    return match[-1].replace(",", "")


def extract_strict(response: str) -> Optional[str]:
    found = _STRICT.findall(response or "")
    return found[-1] if found else None


def extract_tolerant(response: str) -> Optional[str]:
    response = response or ""
    for pattern in (_STRICT, _BOXED, _ANY):
        found = pattern.findall(response)
        if found:
            return found[-1]
    return None


def _same(pred: Optional[str], ground_truth: str) -> bool:
    a, b = _to_number(pred), _to_number(str(ground_truth))
    return a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(b))  # 1450001 != 1450000


def compute_score(solution_str: str, ground_truth: str) -> dict:
    """{"score": strict accuracy (the reward), "acc_strict": same, "acc_tolerant": tolerant accuracy}."""
    try:
        strict = float(_same(extract_strict(solution_str), ground_truth))
        tolerant = float(_same(extract_tolerant(solution_str), ground_truth))
    except Exception:  # a reward must never crash a rollout; malformed input scores 0
        strict = tolerant = 0.0
    return {"score": strict, "acc_strict": strict, "acc_tolerant": tolerant}
