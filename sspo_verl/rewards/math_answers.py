"""Math answers (DeepMath-103K, MATH500, AIME) scored with math-verify: the response's last \\boxed{...} (or its
last math expression) against the reference, compared symbolically. Malformed responses score 0, never raise."""

from __future__ import annotations


def _math_verify():
    try:
        from math_verify import parse, verify
    except ImportError as exc:  # pragma: no cover - exercised by the install, not by tests
        raise ImportError("math rewards need math-verify: pip install 'sspo-verl[math]' (or pip install math-verify)") from exc
    return parse, verify


def compute_score(solution_str: str, ground_truth: str) -> dict:
    parse, verify = _math_verify()
    try:
        gold = parse(f"${ground_truth}$" if "$" not in str(ground_truth) and "\\boxed" not in str(ground_truth) else str(ground_truth))
        pred = parse(solution_str or "")
        ok = bool(gold) and bool(pred) and bool(verify(gold, pred))
    except Exception:  # math-verify can raise on pathological LaTeX; a reward must not
        ok = False
    return {"score": float(ok), "acc": float(ok)}
