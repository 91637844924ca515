"""Rewards for verl's `reward.custom_reward_function`:

    reward.custom_reward_function.path=pkg://sspo_verl.rewards reward.custom_reward_function.name=compute_score

`SCORERS` maps each row's `data_source` to its scorer: GSM8K rows get the GSM8K scorer (gsm8k.py), DeepMath,
MATH500 and AIME rows get math-verify (math_answers.py), the testbed's arithmetic rows (the CPU recipe) the
testbed's verifier (arithmetic.py). A data source not in SCORERS goes to verl's own `default_compute_score`
(verl_default.py), so rows written by verl's preprocessing scripts (`DigitalLearningGmbH/MATH-lighteval`,
`math_dapo`, ...) score as they would without this reward function. A data source neither knows is an error
(UnknownDataSource), not a guess.

One result for every source (schema.py), so mixed validation sets work:

    {"score", "acc", "acc_tolerant", "timeout", "scorer_error"}   (floats; score is the reward)

Adding a data source: write `score(solution: str, ground_truth) -> Verdict` (schema.Verdict: correct, and
optionally correct_tolerant and timed_out) in a module of its own, and add `"<data_source>": score` to `SCORERS`.
The dispatcher builds the result dict, so the keys cannot differ; raise on a reference you cannot read.

Every scorer runs in time linear in the response (text.py), and math-verify within a time bound per answer that
holds in verl's reward threads and Ray workers (verifier_pool.py).

When a reward cannot be computed (errors.py):
- wrong or malformed answers score 0: that is the answer's fault, not an error (when the verifier raised while
  reading an answer, the cause is logged once per error type);
- an answer whose check runs past its time bound scores 0 with timeout = 1 (logged once per data source);
- an unexpected error on one answer (an unreadable reference, an exception inside the verifier) scores 0 with
  scorer_error = 1; each distinct cause is logged once with its traceback; the run stops with
  RewardErrorRateExceeded when more than 5% (SSPO_REWARD_MAX_ERROR_FRACTION) of the last 200 answers scored by
  the process failed this way: rare oddities do not kill a run, a systematic failure stops it within a few
  dozen answers;
- a broken scorer (ImportError, a verifier that cannot start or fails its self-test) stops the run at once
  (RewardSetupError), as do a data_source that no scorer knows (UnknownDataSource) and a knob set to a bad
  value (settings.py). The same policy holds for the data sources delegated to verl's scorer.
verl 0.9.1 logs the result keys as validation metrics (val-aux/<data_source>/scorer_error/mean@N, .../timeout/...);
during training they go to the rollout dumps (trainer.rollout_data_dir) only.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable

from . import arithmetic, gsm8k, math_answers, settings, verl_default
from .errors import ErrorBudget, RewardErrorRateExceeded, RewardSetupError, UnknownDataSource
from .schema import RESULT_KEYS, Verdict, error_result

__all__ = ["compute_score", "SCORERS", "RESULT_KEYS", "Verdict", "RewardSetupError", "RewardErrorRateExceeded",
           "UnknownDataSource"]

Scorer = Callable[[str, Any], Verdict]
SCORERS: dict[str, Scorer] = {
    **{source: gsm8k.score for source in gsm8k.SOURCES},
    **{source: math_answers.score for source in math_answers.SOURCES},
    **{source: arithmetic.score for source in arithmetic.SOURCES},  # the testbed's task (recipes/cpu_tiny.sh)
}

ERRORS = ErrorBudget()  # this process's count of unexpected errors (reward workers are processes)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict[str, float]:
    """verl's custom reward function: the result dict (schema.py) for one response.

    kwargs (verl's reward.custom_reward_function.reward_kwargs) reach verl's scorer for the sources it scores."""
    scorer = SCORERS.get(data_source)
    if solution_str is None:
        solution_str = ""  # no response: scores 0 like any malformed one
    elif not isinstance(solution_str, str):
        raise TypeError(f"solution_str must be the decoded response (a str), got {type(solution_str).__name__}")
    try:
        if scorer is not None:
            verdict = scorer(solution_str, ground_truth)
        else:
            verdict = verl_default.score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    except verl_default.NotKnownToVerl:
        raise UnknownDataSource(
            f"sspo_verl.rewards has no scorer for data_source={data_source!r}; known: {sorted(SCORERS)}; nor has "
            f"verl's default_compute_score (verl.utils.reward_score). python -m sspo_verl.data.prepare and verl's "
            f"data_preprocess scripts write known ones; for another dataset, add its scorer to "
            f"sspo_verl.rewards.SCORERS.") from None
    except (RewardSetupError, settings.SettingError, ImportError):
        raise  # the scorer cannot work at all (or is set up wrong): every answer would score 0
    except Exception as exc:  # counted, logged once, reported (scorer_error), fatal past the rate (errors.py)
        ERRORS.error(data_source, f"{type(exc).__name__}: {exc}", getattr(exc, "traceback_text", "") or traceback.format_exc())
        return error_result()
    if verdict.timed_out:
        ERRORS.timeout(data_source, f"{settings.TIMEOUT_ENV} sets the bound")
    else:
        ERRORS.ok(data_source, verdict.unreadable)
    return verdict.result()
