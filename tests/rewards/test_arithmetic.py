"""The arithmetic scorer (data_source sspo/arithmetic), the testbed's verifier too, in verl's result schema."""

import random
import re

import pytest

from sspo_verl.rewards import RESULT_KEYS, compute_score
from sspo_verl.rewards.arithmetic import MAX_DIGITS, score
from sspo_verl.testbed.arithmetic import reward

SOURCE = "sspo/arithmetic"


@pytest.mark.parametrize("response, answer, right", [
    ("20", 20, True), ("20,18", 18, True), ("-3,-12", -12, True), (" 20,18\n", 18, True),
    ("20,18", 20, False),  # the last total is the answer
    ("18,", 18, False), (",18", 18, False), ("2 0", 20, False), ("20.0", 20, False), ("+20", 20, False),
    ("--20", 20, False), ("", 0, False), ("#### 20", 20, False), ("20</s>", 20, False),
    ("١٨", 18, False), ("１８", 18, False),  # other Unicode digits are not the task's digits
    ("1" * (MAX_DIGITS + 1), int("1" * (MAX_DIGITS + 1)), False),  # too long to be an answer
])
def test_known_responses(response, answer, right):
    assert score(response, str(answer)).correct is right


def test_agrees_with_the_format_rule_on_random_text():
    """The testbed trains with arithmetic.reward and verl's reward loop scores with `score`: both must follow the
    rule, written here as a regular expression (ASCII digits, comma-separated, the last one the answer)."""
    rule = re.compile(r"(?:-?[0-9]+,)*(-?[0-9]+)")
    rng = random.Random(0)
    alphabet = "0123456789,-\n +x"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        answer = rng.randint(-20, 40)
        match = rule.fullmatch(text.strip())
        expected = match is not None and int(match.group(1)) == answer
        assert score(text, answer).correct == expected == bool(reward(text, answer)), (text, answer)


def test_through_verls_custom_reward_function_with_the_common_schema():
    right = compute_score(SOURCE, "20,18", "18")
    assert set(right) == set(RESULT_KEYS) and right["score"] == right["acc"] == 1.0 and right["scorer_error"] == 0
    assert compute_score(SOURCE, "20,19", "18")["score"] == 0.0
    assert compute_score(SOURCE, None, "18")["score"] == 0.0


def test_an_unreadable_reference_is_a_scorer_error_not_a_wrong_answer():
    result = compute_score(SOURCE, "20", "twenty")
    assert result["scorer_error"] == 1.0 and result["score"] == 0.0
