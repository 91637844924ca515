"""math-verify scoring for DeepMath / MATH500 / AIME rows."""

import random

import pytest

from sspo_verl.rewards import compute_score

SRC = "HuggingFaceH4/MATH-500"


@pytest.mark.parametrize("response,truth,score", [
    ("... so the answer is \\boxed{\\frac{5}{6}}.", "\\frac{5}{6}", 1.0),
    ("\\boxed{0.5}", "\\frac{1}{2}", 1.0),
    ("\\boxed{4}", "4", 1.0),
    ("\\boxed{5}", "4", 0.0),
    ("\\boxed{\\frac{5}{7}}", "\\frac{5}{6}", 0.0),
    ("no answer here", "24", 0.0),
])
def test_known_cases(response, truth, score):
    assert compute_score(SRC, response, truth)["score"] == score


def test_malformed_outputs_never_raise():
    rng = random.Random(1)
    alphabet = "\\{}$^_()[]frac boxed 0123456789+-*/=\n"
    for _ in range(300):
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        assert compute_score(SRC, junk, "24")["score"] in (0.0, 1.0)
