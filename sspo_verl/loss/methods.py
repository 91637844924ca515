"""The compared methods and their actor settings: the one table the recipes, the testbed and the demo read.

A method is a loss mode plus the hyperparameters the paper's baselines use (docs/REPRODUCE.md). The testbed and the
demo build verl's actor config from it; the recipes (recipes/lib/methods.sh) print its Hydra lines with

    python -m sspo_verl.loss.methods <method>        # one override per line, temperatures from the recipe's knobs

The recipes' temperature knobs, read from the environment, in order of precedence (a Hydra override in the
recipe's arguments comes after these lines, so it wins over all of them):
    TAU_POS / TAU_NEG      the values themselves, passed through as given (verl's config check judges them);
    TAU_FROM_CLIP="lo hi"  the temperatures at which the method's gate passes half its gradient at a PPO clip
                           range's edges (sspo_verl.tools.calibrate); with TAU_POS or TAU_NEG it is an error.
Both apply to the soft-gate methods (sapo, sspo*) only; the clip methods ignore them.
"""

from __future__ import annotations

import os
import sys

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
TEMPERATURE_KNOBS = ("TAU_POS", "TAU_NEG", "TAU_FROM_CLIP")


def hydra_overrides(method: str, **overrides) -> list[str]:
    """verl's Hydra lines for `method`: loss mode, clip or tau keys, aggregation, and for the SSPO modes the
    `external_lib` backstop that fails at config time when the plugin is not installed."""
    settings = actor_settings(method, **overrides)
    lines = [f"{ACTOR}.policy_loss.loss_mode={settings.pop('loss_mode')}"]
    lines += [f"{ACTOR}.{key}={value}" for key, value in settings.items()]
    if METHODS[method]["loss_mode"].startswith("sspo"):
        lines.append("actor_rollout_ref.model.external_lib=sspo_verl")
    return lines


def temperatures_from_knobs(method: str, env) -> dict:
    """{tau_pos, tau_neg} that the recipes' knobs in `env` set for `method` ({} where none applies)."""
    knobs = {k: env.get(k, "") for k in TEMPERATURE_KNOBS}
    if "tau_pos" not in METHODS.get(method, {}):
        return {}
    if not knobs["TAU_FROM_CLIP"]:
        return {key: knobs[knob] for key, knob in (("tau_pos", "TAU_POS"), ("tau_neg", "TAU_NEG")) if knobs[knob]}
    clip = knobs["TAU_FROM_CLIP"]
    if knobs["TAU_POS"] or knobs["TAU_NEG"]:
        raise ValueError(f'TAU_FROM_CLIP="{clip}" conflicts with TAU_POS="{knobs["TAU_POS"]}" '
                         f'TAU_NEG="{knobs["TAU_NEG"]}": both set the temperatures; unset one (TAU_FROM_CLIP derives '
                         f"them from a clip range, TAU_POS/TAU_NEG give them)")
    pair = clip.split()
    try:
        low, high = (float(x) for x in pair)
    except ValueError:
        raise ValueError(f'TAU_FROM_CLIP="{clip}": give two numbers, the clip range\'s low and high side, '
                         f'e.g. TAU_FROM_CLIP="0.2 0.28"') from None
    from ..tools.calibrate import taus_from_clip  # imports torch: only when asked

    try:
        tau_pos, tau_neg = taus_from_clip(method, low, high)  # sapo, sspo (arctan) or sspo_<gate>
    except ValueError as exc:  # an edge outside (0, inf), or a gate without a half-weight temperature
        raise ValueError(f'TAU_FROM_CLIP="{clip}": {exc}') from None
    return {"tau_pos": f"{tau_pos:.6g}", "tau_neg": f"{tau_neg:.6g}"}


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print(f"usage: python -m sspo_verl.loss.methods <method>  (one of: {' '.join(METHODS)}); the temperature "
              f"knobs {', '.join(TEMPERATURE_KNOBS)} come from the environment", file=sys.stderr)
        return 2
    try:
        lines = hydra_overrides(args[0], **temperatures_from_knobs(args[0], os.environ))
    except ValueError as exc:  # nothing on stdout: run_recipe stops on an empty loss block
        print(exc, file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
