"""GSM8K scoring against the shipped reference solutions."""

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
        assert result == {"score": 1.0, "acc_strict": 1.0, "acc_tolerant": 1.0}, r["answer"][-60:]


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
    ("#### 18.0", 1.0, 1.0),
    ("", 0.0, 0.0),
])
def test_strict_and_tolerant(response, strict, tolerant):
    result = compute_score("openai/gsm8k", response, "18")
    assert (result["acc_strict"], result["acc_tolerant"]) == (strict, tolerant)


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
