"""One result schema for every data source, and the policy for rewards that cannot be computed (errors.py)."""

import logging

import pytest

import sspo_verl.rewards as rewards
from sspo_verl.data.prepare import SPECS
from sspo_verl.rewards import RESULT_KEYS, compute_score
from sspo_verl.rewards.errors import ErrorBudget, RewardErrorRateExceeded, RewardSetupError

ANSWERS = {"openai/gsm8k": ("#### 18", "18"), "gsm8k": ("#### 18", "18"), "sspo/arithmetic": ("20,18", "18")}


@pytest.mark.parametrize("source", sorted(rewards.SCORERS))
@pytest.mark.parametrize("response", ["right", "wrong", "", None, "\\boxed{" + "{" * 500])
def test_every_source_returns_the_same_keys(source, response):
    solution, truth = ANSWERS.get(source, ("\\boxed{\\frac{1}{2}}", "0.5"))
    solution = {"right": solution, "wrong": solution.replace("18", "17").replace("1}{2", "1}{3")}.get(response, response)
    result = compute_score(source, solution, truth)
    assert tuple(result) == RESULT_KEYS and all(type(v) is float for v in result.values())
    assert result["score"] == result["acc"] == (1.0 if response == "right" else 0.0)
    assert result["scorer_error"] == 0.0


def test_every_prepared_dataset_has_a_scorer():
    assert {spec.data_source for spec in SPECS.values()} <= set(rewards.SCORERS)


def test_an_unknown_data_source_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match=r"no scorer for data_source='sspo/unknown'; known: \[.*'openai/gsm8k'"):
        compute_score("sspo/unknown", "#### 1", "1")


def test_a_response_that_is_not_text_is_an_error():
    with pytest.raises(TypeError, match="got bytes"):
        compute_score("openai/gsm8k", b"#### 1", "1")


def _raising_scorer(exc):
    def scorer(solution, ground_truth):
        raise exc

    return scorer


def test_unexpected_errors_are_counted_logged_once_and_fatal_past_the_rate(monkeypatch, caplog, fresh_error_budget):
    monkeypatch.setitem(rewards.SCORERS, "sspo/flaky", _raising_scorer(ZeroDivisionError("inside the scorer")))
    assert fresh_error_budget.max_errors == 10  # 5% of 200
    with caplog.at_level(logging.WARNING, logger="sspo_verl.rewards"):
        for _ in range(10):
            assert compute_score("sspo/flaky", "x", "1")["scorer_error"] == 1.0
        with pytest.raises(RewardErrorRateExceeded, match=r"11 of the last 11 answers .*ZeroDivisionError: inside"):
            compute_score("sspo/flaky", "x", "1")
    warnings = [r for r in caplog.records if "could not be scored" in r.getMessage()]
    assert len(warnings) == 1 and "in scorer" in warnings[0].getMessage()  # the cause, with its traceback


def test_rare_errors_never_stop_a_run(monkeypatch, fresh_error_budget):
    monkeypatch.setitem(rewards.SCORERS, "sspo/flaky", _raising_scorer(ValueError("odd one")))
    for i in range(2000):  # 1 in 25: 8 in any window of 200
        source, solution = ("sspo/flaky", "x") if i % 25 == 0 else ("openai/gsm8k", "#### 1")
        compute_score(source, solution, "1")
    assert fresh_error_budget.errors == 80 and fresh_error_budget.answers == 2000


@pytest.mark.parametrize("exc", [ImportError("no module named latex2sympy2_extended"), RewardSetupError("broken")])
def test_a_broken_scorer_stops_the_run_at_once(monkeypatch, exc, fresh_error_budget):
    monkeypatch.setitem(rewards.SCORERS, "sspo/broken", _raising_scorer(exc))
    with pytest.raises(type(exc)):
        compute_score("sspo/broken", "x", "1")
    assert fresh_error_budget.errors == 0


@pytest.mark.parametrize("value,max_errors", [("0", 0), ("0.1", 20), ("1", 200)])
def test_the_error_rate_is_configurable(monkeypatch, value, max_errors):
    monkeypatch.setenv("SSPO_REWARD_MAX_ERROR_FRACTION", value)
    assert ErrorBudget().max_errors == max_errors


@pytest.mark.parametrize("value", ["-0.1", "2", "lots", "nan"])
def test_a_bad_error_rate_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("SSPO_REWARD_MAX_ERROR_FRACTION", value)
    with pytest.raises(ValueError, match=rf"SSPO_REWARD_MAX_ERROR_FRACTION='{value}' must be a number in \[0, 1\]"):
        ErrorBudget()


@pytest.mark.parametrize("name,value", [("SSPO_REWARD_TIMEOUT_S", "0"), ("SSPO_REWARD_TIMEOUT_S", "soon"),
                                        ("SSPO_REWARD_PROCESSES", "0"), ("SSPO_REWARD_PROCESSES", "2.5")])
def test_bad_math_knobs_name_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=rf"{name}='{value}' must be a positive"):
        compute_score("HuggingFaceH4/MATH-500", "\\boxed{1}", "1")


# Rows that verl's own preprocessing scripts write, with data sources we do not score: verl's default scorer does
# (verl/examples/data_preprocess/math_dataset.py writes DigitalLearningGmbH/MATH-lighteval; DAPO's data math_dapo).
# (data_source, response, reference, verl's reward, right)
VERL_ONLY = [
    ("DigitalLearningGmbH/MATH-lighteval", "So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", 1.0, True),
    ("DigitalLearningGmbH/MATH-lighteval", "So $x = \\boxed{\\frac{1}{3}}$.", "\\frac{1}{2}", 0.0, False),
    ("math_dapo", "The remainder is 204.\nAnswer: 204", "204", 1.0, True),
    ("math_dapo", "The remainder is 240.\nAnswer: 240", "204", -1.0, False),  # DAPO's reward: -1 when wrong
]


@pytest.mark.parametrize("source,response,reference,reward,right", VERL_ONLY)
def test_a_source_only_verl_knows_scores_as_verl_scores_it(source, response, reference, reward, right):
    from verl.utils.reward_score import default_compute_score

    assert source not in rewards.SCORERS
    verls = default_compute_score(source, response, reference)
    assert (verls["score"] if isinstance(verls, dict) else verls) == reward  # the reward verl itself gives
    result = compute_score(source, response, reference, extra_info={"split": "test", "index": 0})
    assert tuple(result) == RESULT_KEYS and all(type(v) is float for v in result.values())  # math_dapo's `pred` dropped
    assert result == {"score": reward, "acc": float(right), "acc_tolerant": float(right), "timeout": 0.0,
                      "scorer_error": 0.0}


def test_an_unknown_source_names_both_scorers_and_is_the_packages_error():
    from sspo_verl.errors import SSPOError

    with pytest.raises(rewards.UnknownDataSource, match=r"'nowhere/data'.*nor has verl's default_compute_score") as info:
        compute_score("nowhere/data", "#### 1", "1")
    assert isinstance(info.value, SSPOError)


def test_not_implemented_inside_verls_scorer_is_a_scorer_error_not_an_unknown_source(monkeypatch, fresh_error_budget):
    """Only verl's dispatch saying it has no branch means 'unknown source'; the same exception type raised inside a
    scorer it knows is an error on that answer, counted like any other."""
    from verl.utils.reward_score import math_reward

    def broken(solution_str, ground_truth):
        raise NotImplementedError("inside the scorer")

    monkeypatch.setattr(math_reward, "compute_score", broken)
    result = compute_score("DigitalLearningGmbH/MATH-lighteval", "\\boxed{1}", "1")
    assert result["scorer_error"] == 1.0 and fresh_error_budget.errors == 1


def test_a_verl_scorer_missing_its_package_stops_the_run_naming_it(monkeypatch, fresh_error_budget):
    import sys

    from sspo_verl.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "mathruler", None)  # geo3k's scorer imports mathruler.grader
    monkeypatch.setitem(sys.modules, "mathruler.grader", None)
    monkeypatch.delitem(sys.modules, "verl.utils.reward_score.geo3k", raising=False)
    with pytest.raises(MissingDependencyError, match=r"data_source='hiyouga/geometry3k' needs the module 'mathruler"):
        compute_score("hiyouga/geometry3k", "\\boxed{1}", "1")
    assert fresh_error_budget.errors == 0
