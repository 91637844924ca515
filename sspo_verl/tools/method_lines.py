"""A method's Hydra lines for a recipe, temperatures from the recipe's knobs (recipes/lib/methods.sh runs it).

    python -m sspo_verl.tools.method_lines <method>       # one override per line; on an error nothing on stdout

The lines come from the methods table (sspo_verl/loss/methods.py). The recipes' temperature knobs, read from the
environment, in order of precedence (a Hydra override in the recipe's arguments comes after these lines, so it
wins over all of them):
    TAU_POS / TAU_NEG      the values themselves, passed through as given (verl's config check judges them);
    TAU_FROM_CLIP="lo hi"  the temperatures at which the method's gate passes half its gradient at a PPO clip
                           range's edges (calibrate.py); with TAU_POS or TAU_NEG it is an error.
Both apply to the soft-gate methods (sapo, sspo*) only; the clip methods ignore them (TAU_POS / TAU_NEG with a
warning on stderr: shared by several runs, TAU_FROM_CLIP is meant for the soft ones).
"""

from __future__ import annotations

import os
import sys

from ..loss.methods import METHODS, hydra_overrides

TEMPERATURE_KNOBS = ("TAU_POS", "TAU_NEG", "TAU_FROM_CLIP")


def temperatures_from_knobs(method: str, env) -> dict:
    """{tau_pos, tau_neg} that the recipes' knobs in `env` set for `method` ({} where none applies)."""
    knobs = {k: env.get(k, "") for k in TEMPERATURE_KNOBS}
    if "tau_pos" not in METHODS.get(method, {}):
        if method in METHODS and (knobs["TAU_POS"] or knobs["TAU_NEG"]):
            print(f"warning: TAU_POS / TAU_NEG are ignored: {method} has no temperature (only sapo and sspo* do)",
                  file=sys.stderr)
        return {}
    if not knobs["TAU_FROM_CLIP"]:
        return {key: knobs[knob] for key, knob in (("tau_pos", "TAU_POS"), ("tau_neg", "TAU_NEG")) if knobs[knob]}
    clip = knobs["TAU_FROM_CLIP"]
    if knobs["TAU_POS"] or knobs["TAU_NEG"]:
        raise ValueError(f'TAU_FROM_CLIP="{clip}" conflicts with TAU_POS="{knobs["TAU_POS"]}" '
                         f'TAU_NEG="{knobs["TAU_NEG"]}": both set the temperatures; unset one (TAU_FROM_CLIP derives '
                         f"them from a clip range, TAU_POS/TAU_NEG give them)")
    try:
        low, high = (float(x) for x in clip.split())
    except ValueError:
        raise ValueError(f'TAU_FROM_CLIP="{clip}": give two numbers, the clip range\'s low and high side, '
                         f'e.g. TAU_FROM_CLIP="0.2 0.28"') from None
    from .calibrate import taus_from_clip  # imports torch: only when asked

    try:
        tau_pos, tau_neg = taus_from_clip(method, low, high)  # sapo, sspo (arctan) or sspo_<gate>
    except ValueError as exc:  # an edge outside (0, inf), or a gate without a half-weight temperature
        raise ValueError(f'TAU_FROM_CLIP="{clip}": {exc}') from None
    return {"tau_pos": f"{tau_pos:.6g}", "tau_neg": f"{tau_neg:.6g}"}


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print(f"usage: python -m sspo_verl.tools.method_lines <method>  (one of: {' '.join(METHODS)}); the temperature "
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
