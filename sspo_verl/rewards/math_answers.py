"""Math answers (DeepMath-103K, MATH500, AIME) scored with math-verify, symbolically, within a time bound.

The answer sent to math-verify is the response's last \\boxed{...} (found in linear time, text.py), or, when
there is none, the response's last TAIL_CHARS characters, where math-verify looks for a final expression. So
math-verify never sees more than about a thousand characters, whatever the response's length.

math-verify runs in worker processes (verifier_pool), so the time bound holds in verl's reward threads and
Ray workers alike; SSPO_REWARD_TIMEOUT_S and SSPO_REWARD_PROCESSES set it up (settings.py).
"""

from __future__ import annotations

import sys
from typing import Any

from . import settings, text
from .schema import Verdict
from .verifier_pool import shared_pool

SOURCES = ("zwhe99/DeepMath-103K", "HuggingFaceH4/MATH-500", "HuggingFaceH4/aime_2024", "opencompass/AIME2025")
TAIL_CHARS = 300  # as verl's own math_dapo scorer: the final sentence, not the derivation
WORKER = [sys.executable, "-m", "sspo_verl.rewards.math_worker"]


class ScorerError(RuntimeError):
    """math-verify raised on this answer (the worker's message and traceback)."""

    def __init__(self, message: str, traceback_text: str = ""):
        super().__init__(message)
        self.traceback_text = traceback_text


def answer_text(solution: str) -> str:
    """What math-verify checks: the last \\boxed{...}, else the response's tail."""
    boxed = text.last_boxed(solution)
    return f"\\boxed{{{boxed}}}" if boxed is not None else solution[-TAIL_CHARS:]


def pool():
    return shared_pool(WORKER, settings.processes(), settings.timeout_s())


def score(solution: str, ground_truth: Any) -> Verdict:
    gold = "" if ground_truth is None else str(ground_truth).strip()
    if not gold:
        raise ValueError(f"the reference answer is empty ({ground_truth!r}): check the row's reward_model.ground_truth")
    reply = pool().check({"gold": gold, "pred": answer_text(solution)})
    if reply.get("timeout"):
        return Verdict(False, timed_out=True)
    if "error" in reply:
        raise ScorerError(reply["error"], reply.get("traceback", ""))
    return Verdict(bool(reply["correct"]), unreadable=reply.get("unreadable"))
