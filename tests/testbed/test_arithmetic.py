"""The testbed's task: problems, the verifier and the character tokenizer."""

import random

import pytest

from sspo_verl.testbed.arithmetic import ArithmeticTask, build_tokenizer, reward

TASK = ArithmeticTask(n_operands=3, max_operand=19)


def test_problems_are_right_and_deterministic():
    problems = TASK.problems(500, seed=3)
    assert problems == TASK.problems(500, seed=3) and problems != TASK.problems(500, seed=4)
    for p in problems:
        assert eval(p.prompt.rstrip("=")) == p.answer  # noqa: S307  (digits and +/- only)
        totals = [int(t) for t in p.solution.split(",")]
        assert len(totals) == 2 and totals[-1] == p.answer
        assert len(p.prompt) <= TASK.max_prompt_chars and len(p.solution) + 1 <= TASK.max_solution_chars + 1


def test_known_problem():
    p = ArithmeticTask(n_operands=3, max_operand=49).sample(random.Random(0))
    a, op1, b, op2, c = p.prompt[:-1].replace("+", " + ").replace("-", " - ").split()
    first = int(a) + int(b) if op1 == "+" else int(a) - int(b)
    assert p.solution == f"{first},{p.answer}"


@pytest.mark.parametrize("response, answer, expected", [
    ("64,47", 47, 1.0), ("47", 47, 1.0), ("-3,-12", -12, 1.0), (" 64,47 ", 47, 1.0),
    ("64,46", 47, 0.0), ("64,47,", 47, 0.0), ("64,,47", 47, 0.0), ("64 47", 47, 0.0), ("", 47, 0.0),
    ("64,47=", 47, 0.0), ("=47", 47, 0.0), ("647", 47, 0.0),
])
def test_verifier(response, answer, expected):
    assert reward(response, answer) == expected


def test_tokenizer_round_trip(tmp_path):
    tok = build_tokenizer(tmp_path)
    assert len(tok) == 16 and tok.pad_token_id == 14 and tok.eos_token_id == 15
    ids = tok.encode("23+41-17=")
    assert len(ids) == 9 and tok.decode(ids).replace(" ", "") == "23+41-17="
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path).encode("64,47") == tok.encode("64,47")


def test_bad_task():
    with pytest.raises(ValueError, match="n_operands=1"):
        ArithmeticTask(n_operands=1)
