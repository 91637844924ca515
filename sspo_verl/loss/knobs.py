"""The baselines' knobs, checked on the driver: values that verl's own loss for that method would turn into NaN or
inf, an assertion on a worker, or a silently wrong update are refused when verl builds its actor config, with the
Hydra key, the value, the recipe variable that set it and the fix (plugin.check_actor_config calls `check_knobs`;
the dry run calls the same). SSPO's own temperatures are checked in plugin.check_temperatures (they depend on the
gate).

One table, `KNOB_RULES`: per verl loss mode, the settings it reads and the values it computes correctly with
(verl 0.9.1, verl/trainer/ppo/core_algos.py):

    vanilla   clamp(r, 1 - clip_ratio_low, 1 + clip_ratio_high); dual clip -A clip_ratio_c for A < 0
              (asserts clip_ratio_c > 1 at its first call, on a worker, after the models have loaded)
    gspo      clamp(s_i, 1 - clip_ratio_low, 1 + clip_ratio_high) on the length-normalized sequence ratio
    geo_mean  clamp(log r, -clip_ratio_low, clip_ratio_high)
    sapo      f(r) = (4 / tau) sigmoid(tau (r - 1)), tau = tau_pos (A > 0) or tau_neg

A clip ratio below 0 leaves r = 1 outside the band: on-policy tokens of one sign are clipped and get no gradient.
NaN makes the loss NaN. Large values (inf too) only switch that side of the clip off, which is a legitimate choice.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import SSPOError

ACTOR = "actor_rollout_ref.actor"
FLOAT32_MAX = 3.4028234663852886e38


class ConfigError(SSPOError):
    """A setting (Hydra key, recipe variable) that verl would train wrongly with, or not at all."""


class MisplacedKeyError(ConfigError, TypeError):
    """A key under the wrong config node (a TypeError, as the dataclass's own error for an unknown key is)."""


# The recipes (recipes/lib/run.sh) name the environment variable behind a Hydra key they set from one, when the
# user did not set the key again: "key=VAR;key=VAR". Errors about that key then name the variable too.
RECIPE_KNOBS_ENV = "SSPO_RECIPE_KNOBS"


def recipe_knob(key: str) -> Optional[str]:
    """The recipe's environment variable that set `key` (e.g. TAU_POS for actor_rollout_ref.actor.tau_pos)."""
    for item in os.environ.get(RECIPE_KNOBS_ENV, "").split(";"):
        name, _, variable = item.partition("=")
        if name.strip() == key and variable.strip():
            return variable.strip()
    return None


def from_knob(key: str, how: str = "") -> str:
    """' This value comes from the recipe's environment variable VAR=...: set VAR ...' or ''."""
    variable = recipe_knob(key)
    if variable is None:
        return ""
    value = os.environ.get(variable)
    shown = f"={value!r}" if value is not None else ""
    return f" This value comes from the recipe's environment variable {variable}{shown}: set {variable}{how} instead."


@dataclass(frozen=True)
class KnobRule:
    """One actor setting of one verl loss: the values it computes correctly with, and what it does with others."""

    key: str  # the actor key, e.g. clip_ratio_low
    need: str  # the values allowed, as the message says them: "a number >= 0"
    ok: Callable[[float], bool]  # False for NaN too
    why: str  # what verl's loss does with any other value
    example: str  # a good value, e.g. "0.2 (GRPO)"
    fallback: Optional[str] = None  # the key verl reads when `key` is None (clip_ratio)


def _clip_rules(band: str, low_example: str, high_example: str) -> tuple[KnobRule, KnobRule]:
    def rule(key: str, side: str, example: str) -> KnobRule:
        return KnobRule(key, "a number >= 0 (inf switches that side off)", lambda v: v >= 0,
                        f"verl's loss clamps {band}; below 0 the band leaves out r = 1, so every on-policy token with "
                        f"{side} is clipped and gets no gradient, and NaN makes the loss NaN", example, "clip_ratio")
    return rule("clip_ratio_low", "A < 0", low_example), rule("clip_ratio_high", "A > 0", high_example)


def _sapo_tau(key: str) -> KnobRule:
    return KnobRule(key, "a finite number > 0 (and 4 / tau finite in float32: tau >= 1.2e-38)",
                    lambda v: math.isfinite(v) and v > 0 and 4.0 / v <= FLOAT32_MAX,
                    "verl's sapo gate is f(r) = (4 / tau) sigmoid(tau (r - 1)): tau = 0 or inf makes the loss inf or "
                    "NaN, and tau < 0 makes f negative (the objective's sign flips while its gradient stays that of "
                    "abs(tau))", f"{'1.0' if key == 'tau_pos' else '1.05'} (SAPO's default)")


KNOB_RULES: dict[str, tuple[KnobRule, ...]] = {
    "vanilla": (
        *_clip_rules("the ratio r to [1 - clip_ratio_low, 1 + clip_ratio_high]", "0.2 (GRPO)", "0.28 (DAPO)"),
        KnobRule("clip_ratio_c", "a number > 1 (inf switches the dual clip off)", lambda v: v > 1,
                 "verl's vanilla loss caps -A r at -A clip_ratio_c for A < 0 (dual clip) and asserts clip_ratio_c > 1 "
                 "at its first call, on a worker, after the models have loaded", "3.0 (verl's default)"),
    ),
    "gspo": _clip_rules("the sequence ratio s_i to [1 - clip_ratio_low, 1 + clip_ratio_high]",
                        "3e-4 (GSPO)", "4e-4 (GSPO)"),
    "geo_mean": _clip_rules("log r to [-clip_ratio_low, clip_ratio_high]", "0.4 (GMPO)", "0.4 (GMPO)"),
    "sapo": (_sapo_tau("tau_pos"), _sapo_tau("tau_neg")),
}


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check_knobs(config: Any, loss_mode: str) -> None:
    """Apply KNOB_RULES[loss_mode] to an actor config (verl's ActorConfig, or a DictConfig with its keys); raise a
    ConfigError naming the key the value came from, the value, what verl's loss would do with it, and the fix."""
    for rule in KNOB_RULES.get(loss_mode, ()):
        key, value = rule.key, getattr(config, rule.key, None)
        if value is None and rule.fallback is not None:  # verl falls back to clip_ratio: that is the key to fix
            key, value = rule.fallback, getattr(config, rule.fallback, None)
        number = _number(value)
        if number is not None and rule.ok(number):
            continue
        raise ConfigError(
            f"loss_mode={loss_mode}: {ACTOR}.{key}={value!r} " + ("is not a number; it " if number is None else "")
            + f"must be {rule.need}: {rule.why}. Fix: {ACTOR}.{key}={rule.example}." + from_knob(f"{ACTOR}.{key}"))


def settings_read(loss_mode: str) -> list[str]:
    """The actor keys a loss mode reads, for the lines that report them (dry run, preflight): a baseline's own
    (KNOB_RULES), an SSPO mode's temperatures; none for a loss this package does not know."""
    if loss_mode in KNOB_RULES:
        return [rule.key for rule in KNOB_RULES[loss_mode]]
    return ["tau_pos", "tau_neg"] if loss_mode.startswith("sspo") else []
