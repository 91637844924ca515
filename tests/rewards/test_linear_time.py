"""Scoring time is linear in the response, by construction (rewards/text.py): on adversarial 1 MB responses every
regular expression the scorers run sees a bounded window, and only a bounded number of them run. (The rest is
str.rfind / lstrip / slicing: single C-level passes.) Timings themselves are the benchmark's job:
python -m sspo_verl.bench.rewards."""

import re
import sys

import pytest

import sspo_verl.rewards as rewards
from sspo_verl.bench.rewards import adversarial
from sspo_verl.rewards import compute_score, gsm8k, math_answers, text

MB = 1 << 20
ADVERSARIAL = adversarial(MB)  # the slow responses of issue 13 and their relatives (the benchmark's)
PATTERN_METHODS = {"match", "fullmatch", "search", "findall", "finditer"}
MODULE_FUNCTIONS = ["match", "fullmatch", "search", "findall", "finditer", "sub", "subn", "split"]


class _Recording:
    """Wraps a compiled pattern; records the size of the window every call scans."""

    def __init__(self, pattern, windows):
        self._pattern, self._windows = pattern, windows

    def __getattr__(self, name):
        method = getattr(self._pattern, name)
        if name not in PATTERN_METHODS:
            return method

        def recorded(string, pos=0, endpos=sys.maxsize):
            self._windows.append(min(endpos, len(string)) - pos)
            return method(string, pos, endpos)

        return recorded


@pytest.fixture
def regex_windows(monkeypatch):
    """Every regex call of the reward modules, as the number of characters it may scan."""
    windows = []
    for module in (rewards, text, gsm8k, math_answers):
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                monkeypatch.setattr(module, name, _Recording(value, windows))
    for name in MODULE_FUNCTIONS:  # re.search(...) and friends, compiled or not
        original = getattr(re, name)

        def recorded(pattern, string, *args, _original=original, **kwargs):
            windows.append(len(string))
            return _original(pattern, string, *args, **kwargs)

        monkeypatch.setattr(re, name, recorded)
    return windows


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_gsm8k_regexes_see_bounded_windows(name, regex_windows):
    result = compute_score("openai/gsm8k", ADVERSARIAL[name], "18")
    assert result["scorer_error"] == 0.0
    assert regex_windows and max(regex_windows) <= text.WINDOW and len(regex_windows) <= 8, \
        (max(regex_windows), len(regex_windows))


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_math_verify_gets_a_bounded_answer(name, regex_windows):
    answer = math_answers.answer_text(ADVERSARIAL[name])
    assert len(answer) <= max(math_answers.TAIL_CHARS, text.MAX_BOXED_CHARS + len("\\boxed{}"))
    assert max(regex_windows, default=0) <= text.WINDOW and len(regex_windows) <= 4


@pytest.mark.parametrize("response,strict,tolerant", [
    ("#### " + " " * MB + "18", 1.0, 1.0),  # any whitespace may separate the marker and the number
    ("#### " + "\n" * MB + "$ 18", 1.0, 1.0),
    ("\\boxed{" + " " * MB + "18}", 0.0, 1.0),  # a \boxed too long to be an answer; the last number still is
    ("1" * (text.MAX_NUMBER_CHARS + 1) + " #### " + "9" * (text.MAX_NUMBER_CHARS + 1), 0.0, 0.0),  # too long
    ("#### 18" + "١" * MB, 1.0, 1.0),
])
def test_adversarial_responses_still_score_right(response, strict, tolerant):
    result = compute_score("openai/gsm8k", response, "18")
    assert (result["score"], result["acc_tolerant"]) == (strict, tolerant)


def test_math_scorer_on_adversarial_responses_ends_with_a_verdict():
    for name in ("nested braces", "balanced nesting", "many \\boxed{", "prose"):
        result = compute_score("HuggingFaceH4/MATH-500", ADVERSARIAL[name], "18")
        assert result["scorer_error"] == 0.0 and result["score"] == (1.0 if name == "prose" else 0.0), name
