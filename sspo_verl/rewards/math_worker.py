"""math-verify in a process of its own: `python -m sspo_verl.rewards.math_worker`, started by math_answers.

Request {"gold": reference, "pred": the answer text to check}; reply {"correct": bool}, plus
{"unreadable": "<Type: message>"} when math-verify raised while reading the answer. The time bound is the
caller's (verifier_pool: a timer in this process's main thread, a kill past it), so math-verify's own
signal-based timeouts are off. Its errors are raised (raise_on_error=True), not turned into a silent 0, and
sorted by where they happen:

- reading the answer (parse of the prediction): the answer is malformed (e.g. `\\boxed{١٨}` raises
  SympifyError): it scores 0 and the caller logs the cause once, without counting it against the scorer;
- reading the reference, or comparing two parsed expressions: not the answer's fault; raised, and the caller
  counts it as a scorer error (errors.py).
"""

from __future__ import annotations

import logging
import sys
from functools import lru_cache

from .verifier_pool import serve

MATH_VERIFY_FIX = "pip install 'sspo-verl[math]' (math-verify==0.9.0) in the Python that runs verl's reward workers"


def setup():
    try:
        from math_verify import parse, verify
    except ImportError as exc:
        raise ImportError(f"math rewards need math-verify ({exc}): {MATH_VERIFY_FIX}") from exc
    # its "timeout is disabled" warning: the bound is ours (verifier_pool), not missing
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    @lru_cache(maxsize=4096)  # G samples of a prompt share one reference
    def parse_gold(gold: str):
        plain = "$" not in gold and "\\boxed" not in gold
        return parse(f"${gold}$" if plain else gold, parsing_timeout=None, raise_on_error=True)

    def check(request: dict) -> dict:
        gold = parse_gold(request["gold"])
        if not gold:
            raise ValueError(f"math-verify cannot parse the reference answer {request['gold'][:200]!r}")
        try:
            pred = parse(request["pred"], parsing_timeout=None, raise_on_error=True)
        except Exception as exc:  # the answer's text made the parser fail: a malformed answer
            return {"correct": False, "unreadable": f"{type(exc).__name__}: {exc}"[:500]}
        return {"correct": bool(pred) and bool(verify(gold, pred, timeout_seconds=None, raise_on_error=True))}

    # a broken install (e.g. an antlr4 runtime latex2sympy cannot use) parses every answer to nothing: every
    # reward would be 0. Refuse to start instead.
    try:
        right = check({"gold": "\\frac{1}{2}", "pred": "so the answer is \\boxed{0.5}"})["correct"]
        wrong = check({"gold": "\\frac{1}{2}", "pred": "\\boxed{0.6}"})["correct"]
        outcome = f"\\boxed{{0.5}} vs \\frac{{1}}{{2}} gave {right}, \\boxed{{0.6}} gave {wrong}"
    except Exception as exc:
        right, outcome = False, f"{type(exc).__name__}: {exc}"
    if not right or wrong:
        raise RuntimeError(f"math-verify's self-test failed ({outcome}): its LaTeX parser is broken in this "
                           f"environment; reinstall: {MATH_VERIFY_FIX}")
    return check


if __name__ == "__main__":
    sys.exit(serve(setup))
