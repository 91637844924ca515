"""The testbed's task: problems, the verifier and the character tokenizer."""

import random

import pytest

from sspo_verl.testbed.arithmetic import ArithmeticTask, build_tokenizer, flawed, reward, split_of

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


def test_splits_are_disjoint_and_fixed():
    task = ArithmeticTask(n_operands=3, max_operand=9)
    val, test = task.heldout(256, "val"), task.heldout(256, "test")
    assert val == task.heldout(256, "val")  # one fixed set per split, whatever the run
    val_prompts, test_prompts = {p.prompt for p in val}, {p.prompt for p in test}
    assert len(val_prompts) == 256 and len(test_prompts) == 256  # distinct problems
    assert not val_prompts & test_prompts
    train = {p.prompt for seed in range(3) for p in task.problems(2000, seed=seed)}
    assert not train & (val_prompts | test_prompts)  # nothing held out is ever trained on
    assert {split_of(p) for p in train} == {"train"}
    # the hash split puts about 1/8 of all problems in each held-out split
    everything = {task.sample(random.Random(s)).prompt for s in range(20_000)}
    share = sum(split_of(p) == "val" for p in everything) / len(everything)
    assert 0.09 < share < 0.16


def test_heldout_asks_fail_clearly():
    with pytest.raises(ValueError, match="256 held-out problems asked of a task with 200 problems"):
        ArithmeticTask(n_operands=2, max_operand=9).heldout(256)
    with pytest.raises(ValueError, match="held-out split 'train'"):
        TASK.heldout(8, "train")
    with pytest.raises(ValueError, match="split 'dev'"):
        TASK.problems(8, seed=0, split="dev")


def test_flawed_demonstration_is_off_by_one_in_the_final_total_only():
    p = ArithmeticTask(n_operands=3, max_operand=9).problems(1, seed=0)[0]
    wrong = flawed(p)
    assert wrong.split(",")[:-1] == p.solution.split(",")[:-1] and int(wrong.split(",")[-1]) == p.answer + 1
    assert reward(wrong, p.answer) == 0.0 and reward(p.solution, p.answer) == 1.0
    worst = ArithmeticTask(n_operands=3, max_operand=9)
    assert len("9,18,28") <= worst.max_solution_chars  # 9+9+9 = 27, flawed 28: still fits the response length
