"""Data sources we do not score ourselves, scored by verl's own `default_compute_score`.

Rows that verl's preprocessing scripts write (verl/examples/data_preprocess/*.py: `DigitalLearningGmbH/MATH-lighteval`,
`math_dapo`, `searchR1_nq`, ...) carry data sources that verl's default scorer knows. The recipes set
`reward.custom_reward_function` to our `compute_score`, which replaces verl's scorer for every row, so without this
such a row would fail. Its verdict is verl's, put in our result keys (schema.py):

    score          verl's reward, as verl's own scorer returns it (math_dapo: 1 right, -1 wrong)
    acc            verl's `acc` when its scorer reports one, else 1.0 when the reward is the full 1.0
    acc_tolerant   = acc (verl's scorers have no second reading)
    timeout        0.0 (verl's scorers bound their own time, or do not)
    scorer_error   0.0 (an exception inside verl's scorer is counted like one of ours: rewards/__init__)

Other keys verl's scorer returns (math_dapo's `pred`) are dropped: verl builds `reward_extra_info` from the first
item's keys, so every data source must return the same ones. A data source verl does not know either is an error.
"""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependencyError
from .schema import Verdict


class NotKnownToVerl(LookupError):
    """verl's default_compute_score has no scorer for this data source (it raised at its dispatch)."""


def _raised_by(exc: BaseException, function) -> bool:
    """Whether `exc` was raised in `function`'s own body (not in a scorer it called)."""
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code is function.__code__


def score(data_source: str, solution: str, ground_truth: Any, extra_info: Any = None, **kwargs) -> Verdict:
    """verl's verdict on one answer. NotKnownToVerl when verl has no scorer for `data_source`; an exception of
    verl's scorer propagates (the caller counts it)."""
    from verl.utils.reward_score import default_compute_score

    try:
        result = default_compute_score(data_source, solution, ground_truth, extra_info, **kwargs)
    except NotImplementedError as exc:
        if _raised_by(exc, default_compute_score):  # its dispatch: no branch for this data source
            raise NotKnownToVerl(data_source) from None
        raise
    except ImportError as exc:  # e.g. geo3k's mathruler: every answer of this source would fail
        raise MissingDependencyError(
            f"verl's scorer for data_source={data_source!r} needs the module {exc.name!r}, which is not installed: "
            f"pip install {exc.name}") from exc
    if isinstance(result, dict):
        if "score" not in result:
            raise ValueError(f"verl's scorer for {data_source!r} returned no 'score' (keys {sorted(result)})")
        reward = float(result["score"])
        correct = bool(result["acc"]) if "acc" in result else reward >= 1.0
    else:
        reward = float(result)
        correct = reward >= 1.0
    return Verdict(correct, reward=reward)
