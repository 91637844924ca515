"""GSM8K scoring against the shipped reference solutions, and the format decisions (gsm8k.py docstring)."""

import json
import random

import pytest

from sspo_verl.rewards import compute_score
from sspo_verl.rewards.gsm8k import reference_answer

from ..helpers import require_gsm8k



@pytest.fixture(scope="module")
def references():
    return [json.loads(line) for line in (require_gsm8k() / "test.jsonl").open()]


def test_every_reference_solution_scores_one_against_its_own_answer(references):
    assert len(references) == 1319
    for r in references:
        result = compute_score("openai/gsm8k", r["answer"], reference_answer(r["answer"]))
        assert result == {"score": 1.0, "acc": 1.0, "acc_tolerant": 1.0, "timeout": 0.0, "scorer_error": 0.0}, \
            r["answer"][-60:]


def test_perturbed_answers_score_zero(references):
    for r in references:
        truth = reference_answer(r["answer"])
        wrong = str(int(float(truth)) + 1) if float(truth).is_integer() else truth + "1"
        assert compute_score("openai/gsm8k", r["answer"], wrong)["score"] == 0.0


@pytest.mark.parametrize("response,strict,tolerant", [
    ("So she makes 18 dollars.\n#### 18", 1.0, 1.0),
    ("#### $1,8", 1.0, 1.0),  # commas are thousands separators and dropped: "1,8" reads 18
    ("The answer is \\boxed{18}.", 0.0, 1.0),
    ("I think 7, no wait, 18", 0.0, 1.0),
    ("#### 17 ... actually #### 18", 1.0, 1.0),  # the last #### wins
    ("#### 18\n#### 5", 0.0, 0.0),  # ... also against the right answer: several answers gain nothing
    ("#### 5\n#### 18", 1.0, 1.0),
    ("#### 18 ####", 0.0, 1.0),  # a last marker with no number: no strict answer; the last number is 18
    ("#### 18.0", 1.0, 1.0),
    ("####\n\n  $ 18", 1.0, 1.0),  # whitespace and one $ between the marker and the number
    ("#### ١٨", 0.0, 0.0),  # Arabic-Indic digits are not numbers here (ASCII only)
    ("#### １８", 0.0, 0.0),  # nor fullwidth ones
    ("\\boxed{18} and then \\boxed{x}", 0.0, 1.0),  # the last \\boxed is not a number: the last number wins
    ("\\boxed{ $18$ }", 0.0, 1.0),
    ("", 0.0, 0.0),
])
def test_strict_and_tolerant(response, strict, tolerant):
    result = compute_score("openai/gsm8k", response, "18")
    assert (result["score"], result["acc"], result["acc_tolerant"]) == (strict, strict, tolerant)


def test_malformed_outputs_never_raise():
    rng = random.Random(0)
    alphabet = "#$0123456789,.-{}\\boxed \n\x00é∑"
    for _ in range(2000):
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        result = compute_score("openai/gsm8k", junk, "42")
        assert result["score"] in (0.0, 1.0)
    assert compute_score("openai/gsm8k", None, "42")["score"] == 0.0


def test_loads_through_verls_custom_reward_function_config():
    # what verl does with reward.custom_reward_function.path=pkg://sspo_verl.rewards, name=compute_score
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    cfg = OmegaConf.create({"reward": {"custom_reward_function": {"path": "pkg://sspo_verl.rewards", "name": "compute_score"}}})
    fn = get_custom_reward_fn(cfg)
    result = fn(data_source="openai/gsm8k", solution_str="... #### 18", ground_truth="18", extra_info={"index": 0})
    assert result["score"] == 1.0 and result["acc_tolerant"] == 1.0


def test_a_reference_that_is_not_a_number_is_a_counted_scorer_error():
    result = compute_score("openai/gsm8k", "#### 18", "eighteen")
    assert result == {"score": 0.0, "acc": 0.0, "acc_tolerant": 0.0, "timeout": 0.0, "scorer_error": 1.0}
