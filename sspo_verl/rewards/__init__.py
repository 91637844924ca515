"""Rewards for verl's `reward.custom_reward_function`:

    reward.custom_reward_function.path=pkg://sspo_verl.rewards reward.custom_reward_function.name=compute_score

GSM8K rows (data_source openai/gsm8k, as verl's own preprocessing writes) get the GSM8K scorer, with the
tolerant accuracy reported beside the strict reward; everything else gets math-verify.
"""

from __future__ import annotations

from . import arithmetic, gsm8k, math_answers

GSM8K_SOURCES = {"openai/gsm8k", "gsm8k"}


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    if data_source == arithmetic.SOURCE:
        return arithmetic.compute_score(solution_str, ground_truth)
    if data_source in GSM8K_SOURCES:
        return gsm8k.compute_score(solution_str, ground_truth)
    return math_answers.compute_score(solution_str, ground_truth)
