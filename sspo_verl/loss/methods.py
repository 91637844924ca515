"""The compared methods and their actor settings: the one table the recipes, the testbed and the demo read.

A method is a loss mode plus the hyperparameters the paper's baselines use (docs/REPRODUCE.md); `sspo_sapo` is the
paper's first objective (SAPO's gate inside SSPO's geometric mean, docs/GATES.md). The testbed and the
demo build verl's actor config from it; the recipes (recipes/lib/methods.sh) print its Hydra lines with
`python -m sspo_verl.tools.method_lines <method>`.
"""

from __future__ import annotations

TAU_POS, TAU_NEG = 1.0, 1.05  # SAPO's defaults, also the recipes' defaults for SSPO
SSPO_GATES = ["arctan", "sigmoid", "erf", "softsign"]

_PAPER_AGG = "seq-mean-token-mean"
METHODS: dict[str, dict] = {
    "grpo": dict(loss_mode="vanilla", clip_ratio_low=0.2, clip_ratio_high=0.2, loss_agg_mode="token-mean"),
    "grpo_dapo": dict(loss_mode="vanilla", clip_ratio_low=0.2, clip_ratio_high=0.28, loss_agg_mode="token-mean"),
    "gspo": dict(loss_mode="gspo", clip_ratio_low=3e-4, clip_ratio_high=4e-4, loss_agg_mode=_PAPER_AGG),
    "gmpo": dict(loss_mode="geo_mean", clip_ratio=0.4, clip_ratio_low=0.4, clip_ratio_high=0.4, loss_agg_mode=_PAPER_AGG),
    "sapo": dict(loss_mode="sapo", tau_pos=TAU_POS, tau_neg=TAU_NEG, loss_agg_mode=_PAPER_AGG),
    **{mode: dict(loss_mode=mode, tau_pos=TAU_POS, tau_neg=TAU_NEG, loss_agg_mode=_PAPER_AGG)
       for mode in ["sspo"] + [f"sspo_{gate}" for gate in SSPO_GATES]},
    # the paper's first objective: SAPO's gate f(r) = (4/tau) sigmoid(tau (r - 1)) inside the geometric mean
    "sspo_sapo": dict(loss_mode="sspo_sapo", tau_pos=TAU_POS, tau_neg=TAU_NEG, loss_agg_mode=_PAPER_AGG),
}


def actor_settings(method: str, **overrides) -> dict:
    """{loss_mode, clip or tau keys, loss_agg_mode} of `method`, with `overrides` (e.g. tau_pos) applied.

    Temperatures apply to the soft-gate methods only: overriding tau_pos of a clipping method is an error."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    settings = dict(METHODS[method])
    misplaced = [k for k in overrides if k not in settings and k.startswith("tau_")]
    if misplaced:
        raise ValueError(f"{method} has no temperature ({', '.join(misplaced)}); temperatures apply to sapo and sspo*")
    settings.update(overrides)
    return settings


ACTOR = "actor_rollout_ref.actor"


def hydra_overrides(method: str, **overrides) -> list[str]:
    """verl's Hydra lines for `method`: loss mode, clip or tau keys, aggregation, and for the SSPO modes the
    `external_lib` backstop that fails at config time when the plugin is not installed."""
    settings = actor_settings(method, **overrides)
    lines = [f"{ACTOR}.policy_loss.loss_mode={settings.pop('loss_mode')}"]
    lines += [f"{ACTOR}.{key}={value}" for key, value in settings.items()]
    if METHODS[method]["loss_mode"].startswith("sspo"):
        lines.append("actor_rollout_ref.model.external_lib=sspo_verl")
    return lines
