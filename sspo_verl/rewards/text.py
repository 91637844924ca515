"""Answer extraction in time linear in the response, by construction.

A policy can emit anything, up to the rollout's length limit: a reward must not stall on it. So:

- every scan over the whole response is one C-level pass (`str.rfind`, `str.lstrip`, a slice), made a fixed number
  of times per response, never once per match;
- every regular expression runs on a window of at most `WINDOW` characters, so however it backtracks its cost
  does not grow with the response.

tests/rewards/test_linear_time.py records every regex call on adversarial 1 MB responses and checks both;
`python -m sspo_verl.bench.rewards` measures the worst case.

Numbers are ASCII: an optional `-`, digits with optional `,` thousands separators, an optional decimal part
(`1,000`, `-3.5`, `.5`). Other Unicode digits (`١٨`, `１８`) are not numbers here, as the references never use them.
A "number" longer than MAX_NUMBER_CHARS is not an answer.
"""

from __future__ import annotations

import re
from typing import Optional

MAX_NUMBER_CHARS = 64
MAX_BOXED_CHARS = 1000  # a final answer longer than this is not a final answer
WINDOW = MAX_BOXED_CHARS + 64  # the most characters any regex below ever sees in one call

_NUMBER_SYNTAX = r"-?(?:[0-9][0-9,]*(?:\.[0-9]+)?|\.[0-9]+)"
NUMBER = re.compile(_NUMBER_SYNTAX)
_NUMBER_AT_END = re.compile(_NUMBER_SYNTAX + r"\Z")
_BRACE = re.compile(r"[{}]")
_NUMBER_CHARS = frozenset("0123456789,.")
BOXED = "\\boxed"


def to_number(text: Optional[str]) -> Optional[float]:
    """The value of a NUMBER string (commas dropped), None for anything else."""
    if text is None or len(text) > MAX_NUMBER_CHARS or NUMBER.fullmatch(text) is None:
        return None
    return float(text.replace(",", ""))


def number_after_last(text: str, marker: str) -> Optional[str]:
    """The number right after the last `marker` (whitespace and one `$` may sit between), else None.

    Only the last marker counts: `#### 72\\n#### 5` answers 5, and `#### 72 ####` gives no answer."""
    at = text.rfind(marker)
    if at < 0:
        return None
    rest = text[at + len(marker) :].lstrip()
    if rest.startswith("$"):
        rest = rest[1:].lstrip()
    match = NUMBER.match(rest, 0, MAX_NUMBER_CHARS + 1)
    if match is None or match.end() > MAX_NUMBER_CHARS:  # reaching the window's edge: too long to be an answer
        return None
    return match.group()


def last_number(text: str) -> Optional[str]:
    """The last number in the text (the one holding its last ASCII digit), else None."""
    last_digit = max(text.rfind(d) for d in "0123456789")  # ten C-level passes
    if last_digit < 0:
        return None
    start = max(0, last_digit + 1 - MAX_NUMBER_CHARS)
    match = _NUMBER_AT_END.search(text, start, last_digit + 1)
    if match is None:  # pragma: no cover - a digit is always a number
        return None
    if match.start() == start and start > 0 and text[start - 1] in _NUMBER_CHARS:
        return None  # the number runs past the window: longer than MAX_NUMBER_CHARS
    return match.group()


def last_boxed(text: str) -> Optional[str]:
    """The content of the last `\\boxed{...}` (braces balanced), else None: also when that last one is unclosed
    or its content is longer than MAX_BOXED_CHARS."""
    at = text.rfind(BOXED)
    if at < 0:
        return None
    head = text[at + len(BOXED) : at + len(BOXED) + 64]
    brace = at + len(BOXED) + len(head) - len(head.lstrip())
    if not text.startswith("{", brace):
        return None
    depth, start = 1, brace + 1
    for match in _BRACE.finditer(text, start, min(len(text), start + MAX_BOXED_CHARS + 1)):
        depth += 1 if match.group() == "{" else -1
        if depth == 0:
            return text[start : match.start()]
    return None


def boxed_number(text: str) -> Optional[str]:
    """The last `\\boxed{...}` when its content is a number (spaces and `$` around it allowed), else None."""
    content = last_boxed(text)
    if content is None:
        return None
    content = content.strip().strip("$").strip()
    return content if len(content) <= MAX_NUMBER_CHARS and NUMBER.fullmatch(content) else None
