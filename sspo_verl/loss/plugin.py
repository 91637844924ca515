"""verl glue: the SSPO loss modes in verl's policy-loss registry, config checks, loud failures.

This is the only module that touches verl internals for the loss. It registers

    sspo            the paper's main gate (arctan, Cauchy-shaped)
    sspo_<gate>     one mode per gate in `gates.GATES` (arctan, sigmoid, erf, softsign, and user gates)
    sspo_sapo       the paper's first objective: SAPO's ratio-space gate inside the geometric mean (gates.SAPO_GATE)

Each mode follows verl's policy-loss contract (`verl.workers.utils.losses.ppo_loss` calls it by keyword)
and aggregates only through verl's `agg_loss(..., **config.global_batch_info)`, so the loss and its
gradient are exact under any micro-batch split and data-parallel size.

`loss_agg_mode` is honoured, as verl's vanilla and gspo losses honour it. The paper's objective (eq. 10)
is `seq-mean-token-mean`; any other mode keeps the gates and sequence weights but re-weights each
sequence's term (token-mean: by its length, DAPO-style). Because verl's default is `token-mean`, a run
that leaves it unset would silently train a different objective: we warn once per process and mode.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from importlib import metadata
from typing import Any, Optional

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from .. import VERL_RANGE, missing_dependency

try:
    import torch
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, agg_loss, register_policy_loss
    from verl.workers.config import ActorConfig, PolicyLossConfig
except ModuleNotFoundError as exc:  # say what to install, not just the missing name
    raise missing_dependency(exc) from exc

from .gates import DEFAULT_GATE, GATES, RESERVED_GATES, Gate, GateError, UnknownGateError, check_gate, get_gate
from .fused import sspo_token_loss_fused
from .knobs import RECIPE_KNOBS_ENV, ConfigError, MisplacedKeyError, check_knobs, recipe_knob  # noqa: F401 (public)
from .knobs import from_knob as _from_knob
from .objective import SSPOInputError, describe_bad_inputs, sspo_token_loss

logger = logging.getLogger("sspo_verl.loss.plugin")  # a child of "sspo_verl": silencing it leaves the rewards' warnings

SUPPORTED_VERL = SpecifierSet(VERL_RANGE)
PAPER_AGG_MODE = "seq-mean-token-mean"
LOSS_MODE_PREFIX = "sspo"
# s_i <= exp(bound(tau)); keep it far inside float32 (max ~ exp(88)) so s_i * A_i and its sums stay finite.
MAX_LOG_SEQ_WEIGHT = 60.0
INSTALL_HINT = "pip install sspo-verl (the `sspo_verl` package) into the Python that runs verl, on every node"

# The fused path is the default; SSPO_VERL_IMPL=reference runs the readable reference (same math, slower).
IMPLEMENTATION_ENV = "SSPO_VERL_IMPL"
IMPLEMENTATIONS = {"fused": sspo_token_loss_fused, "reference": sspo_token_loss}
IMPLEMENTATION = os.environ.get(IMPLEMENTATION_ENV) or "fused"  # (empty = unset) checked in register_loss_modes, loudly


def check_implementation(value: str) -> None:
    if value not in IMPLEMENTATIONS:
        raise ConfigError(
            f"{IMPLEMENTATION_ENV}={value!r} is not an implementation of the SSPO loss: set {IMPLEMENTATION_ENV}=fused "
            f"(the default) or {IMPLEMENTATION_ENV}=reference (the readable reference, same math, slower), or unset "
            f"it, in the environment of every process that runs verl.")

_warned: set[tuple] = set()
_collected: Optional[list[str]] = None  # set by collect_warnings


def _warn_once(key: tuple, message: str) -> None:
    if _collected is not None:  # the dry run reports them itself, every time
        _collected.append(message)
    elif key not in _warned:
        _warned.add(key)
        logger.warning(message)


@contextlib.contextmanager
def collect_warnings():
    """Within the block, config warnings are collected into the yielded list instead of logged (the dry run)."""
    global _collected
    previous, _collected = _collected, []
    try:
        yield _collected
    finally:
        _collected = previous


# ---------------------------------------------------------------------------------------------------
# Loss modes <-> gates
# ---------------------------------------------------------------------------------------------------


def loss_mode_for(gate_name: str) -> str:
    return f"{LOSS_MODE_PREFIX}_{gate_name}"


def has_gate(gate_name: str) -> bool:
    """Whether loss mode sspo_<gate_name> has a gate: a registered SSPO gate or a reserved one (sapo)."""
    return gate_name in GATES or gate_name in RESERVED_GATES


def gate_for_loss_mode(loss_mode: str) -> Optional[str]:
    """The gate name behind an SSPO loss mode, None for a mode that is not SSPO's."""
    if loss_mode == LOSS_MODE_PREFIX:
        return DEFAULT_GATE
    if loss_mode.startswith(LOSS_MODE_PREFIX + "_"):
        return loss_mode[len(LOSS_MODE_PREFIX) + 1 :]
    return None


def check_temperatures(gate: Gate, tau_pos: Any, tau_neg: Any) -> tuple[float, float]:
    """Validate tau_pos / tau_neg for `gate`; return them as floats or raise a ConfigError with the fix."""
    taus = {}
    for key, value in (("tau_pos", tau_pos), ("tau_neg", tau_neg)):
        fix = f"set actor_rollout_ref.actor.{key}=<a positive number>, e.g. {key}=1.0"
        knob = _from_knob(f"actor_rollout_ref.actor.{key}")
        try:
            tau = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"SSPO: actor_rollout_ref.actor.{key}={value!r} is not a number; {fix}.{knob}") from None
        if not (math.isfinite(tau) and tau > 0):
            raise ConfigError(f"SSPO: actor_rollout_ref.actor.{key}={value!r} must be a finite number > 0; {fix}.{knob}")
        bound = gate.max_log_g(tau)
        if bound > MAX_LOG_SEQ_WEIGHT:
            candidates = (10.0 ** (k / 10) for k in range(-60, 61))
            tau_min = next((t for t in candidates if gate.max_log_g(t) <= MAX_LOG_SEQ_WEIGHT), None)
            raise ConfigError(
                f"SSPO: actor_rollout_ref.actor.{key}={tau} is too small for the {gate.name} gate: the sequence weight "
                f"could reach exp({bound:.3g}); SSPO keeps it under exp({MAX_LOG_SEQ_WEIGHT:g}) so sums stay finite "
                f"in float32. " + (f"Use {key} >= {tau_min:.3g}." if tau_min else f"Use a larger {key}.") + knob
            )
        taus[key] = tau
    if taus["tau_neg"] < taus["tau_pos"]:
        _warn_once(
            ("tau_order", taus["tau_pos"], taus["tau_neg"]),
            f"SSPO: tau_neg={taus['tau_neg']} < tau_pos={taus['tau_pos']}; the paper uses tau_neg > tau_pos "
            "(negative-advantage tokens gated more sharply, as in SAPO's 1.0 / 1.05).",
        )
    return taus["tau_pos"], taus["tau_neg"]


def _warn_agg_mode(loss_mode: str, loss_agg_mode: str) -> None:
    if loss_agg_mode != PAPER_AGG_MODE:
        _warn_once(
            ("agg", loss_mode, loss_agg_mode),
            f"SSPO: loss_mode={loss_mode} with loss_agg_mode={loss_agg_mode}: sequence weights and gates are kept, "
            f"but each sequence's term is re-weighted by the aggregation (token-mean: by its length), which is not "
            f"the paper's objective (eq. 10). Set actor_rollout_ref.actor.loss_agg_mode={PAPER_AGG_MODE} to train "
            f"the paper's objective. (Warned once per process.)",
        )


def unknown_gate(loss_mode: str, gate_name: str, external_lib: Optional[str] = None) -> UnknownGateError:
    imported = f" after importing external_lib={external_lib}" if external_lib else ""
    return UnknownGateError(
        f"SSPO: actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode} names gate {gate_name!r}, which is not "
        f"registered{imported}. Known SSPO loss modes: {sorted(registered_loss_modes())}. For a gate of your own, "
        f"register it with sspo_verl.register_gate(...) in a module that every worker imports "
        f"(actor_rollout_ref.model.external_lib=<your module>).")


def check_actor_config(config: Any, unknown_gate_later: bool = False) -> None:
    """Config-time check of an actor config (verl ActorConfig or a DictConfig with the same keys).

    For verl's baselines (vanilla, gspo, geo_mean, sapo): the settings their loss reads (knobs.KNOB_RULES). For SSPO
    modes: the gate exists, the temperatures are valid, and a warning (once) when the aggregation is not the paper's.
    unknown_gate_later: skip the checks of a gate that is not registered yet (the launch check raises, after it
    has imported `external_lib`, where a gate of the user's own registers).
    """
    loss_mode = config.policy_loss.get("loss_mode", "vanilla") if config.policy_loss is not None else "vanilla"
    gate_name = gate_for_loss_mode(loss_mode)
    if gate_name is None:
        check_knobs(config, loss_mode)
        return
    if unknown_gate_later and not has_gate(gate_name):
        return
    if not has_gate(gate_name):
        raise unknown_gate(loss_mode, gate_name)
    check_temperatures(get_gate(gate_name), config.tau_pos, config.tau_neg)
    _warn_agg_mode(loss_mode, config.loss_agg_mode)


# ---------------------------------------------------------------------------------------------------
# The policy loss
# ---------------------------------------------------------------------------------------------------


def make_policy_loss(gate_name: str, loss_mode: Optional[str] = None):
    """verl policy-loss function for one gate, registered as `loss_mode` (default sspo_<gate>)."""
    gate = get_gate(gate_name)
    loss_mode = loss_mode or loss_mode_for(gate_name)

    def compute_policy_loss_sspo(
        old_log_prob: torch.Tensor,  # (B, T)
        log_prob: torch.Tensor,  # (B, T)
        advantages: torch.Tensor,  # (B, T)
        response_mask: torch.Tensor,  # (B, T) bool
        loss_agg_mode: str = PAPER_AGG_MODE,
        config: Optional[ActorConfig] = None,
        rollout_is_weights: Optional[torch.Tensor] = None,  # (B, T)
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if config is None:
            raise ConfigError(f"SSPO loss {loss_mode} needs the actor config (config=...) for tau_pos / tau_neg.")
        tau_pos, tau_neg = check_temperatures(gate, config.tau_pos, config.tau_neg)
        _warn_agg_mode(loss_mode, loss_agg_mode)

        token_loss = IMPLEMENTATIONS[IMPLEMENTATION]
        loss_mat, stats = token_loss(log_prob, old_log_prob, advantages, response_mask, gate, tau_pos, tau_neg)
        if rollout_is_weights is not None:  # per-token rollout-correction weights, as verl's other losses apply them
            loss_mat = loss_mat * torch.where(response_mask.bool(), rollout_is_weights.to(loss_mat.dtype), 0)
        loss = agg_loss(loss_mat, response_mask, loss_agg_mode, **config.global_batch_info)

        values = stats.as_floats()  # the one host sync of this call
        if values["n_bad"] > 0:
            raise SSPOInputError(describe_bad_inputs(log_prob, old_log_prob, advantages, response_mask))
        return loss, {
            "actor/ppo_kl": values["ppo_kl"],
            # A token is "clipped" when the gate passes less than half its gradient (w < 0.5).
            "actor/pg_clipfrac": values["clipfrac_pos"],
            "actor/pg_clipfrac_lower": values["clipfrac_neg"],  # A <= 0 tokens
            "actor/sspo/token_w_mean": values["w_mean"],
            "actor/sspo/token_w_min": values["w_min"],
            "actor/sspo/token_w_frac_below_half": values["w_frac_clipped"],
            "actor/sspo/seq_s_mean": values["s_mean"],
            "actor/sspo/seq_s_min": values["s_min"],
            "actor/sspo/seq_s_max": values["s_max"],
            "actor/sspo/log_ratio_abs_max": values["log_ratio_abs_max"],
        }

    compute_policy_loss_sspo.__name__ = f"compute_policy_loss_{loss_mode}"
    compute_policy_loss_sspo.__doc__ = f"SSPO policy loss (paper eq. 10/13) with the {gate.name} gate: {gate.formula}."
    return compute_policy_loss_sspo


def registered_loss_modes() -> list[str]:
    return [m for m in POLICY_LOSS_REGISTRY if gate_for_loss_mode(m) is not None]


GATE_NAME = re.compile(r"[a-z0-9_]+")


def register_gate(name: str, log_g, weight, bound, formula: str = "", replace: bool = False) -> str:
    """Add a gate of your own; its requirements are checked numerically; returns its loss mode `sspo_<name>`.

    log_g(x, tau) and weight(x, tau) are elementwise torch functions of x = log r (weight = d log_g / dx);
    bound(tau) is a finite bound on |log_g|. Example (w = (1 + tau^2 x^2)^(-3/2)):

        sspo_verl.register_gate("algebraic", lambda x, t: x / torch.sqrt(1 + (t * x) ** 2),
                                lambda x, t: (1 + (t * x) ** 2) ** -1.5, lambda t: 1 / t)

    `name` is lowercase letters, digits and `_`. A gate that exists already (built-in or yours) is only replaced
    with replace=True; replacing the default gate (arctan) replaces `sspo` too, so the two modes stay one loss.
    Ray workers need the registration too: call it in a module they import
    (actor_rollout_ref.model.external_lib=<that module>).
    """
    if not isinstance(name, str) or not GATE_NAME.fullmatch(name):
        raise GateError(f"SSPO gate name {name!r} is not usable: it becomes the loss mode sspo_<name>, so use "
                         f"lowercase letters, digits and '_' only (e.g. 'algebraic').")
    mode = loss_mode_for(name)
    if name in RESERVED_GATES:
        raise GateError(f"SSPO gate name {name!r} is taken: the loss mode {mode} is built in "
                         f"({RESERVED_GATES[name].formula.split(':')[0]}, the paper's first objective) and a gate of "
                         f"that name would shadow it; pick another name (e.g. '{name}_v2').")
    if name in GATES and not replace:
        modes = [mode] + ([LOSS_MODE_PREFIX] if name == DEFAULT_GATE else [])
        raise GateError(f"SSPO gate {name!r} is already registered (loss modes {', '.join(modes)}); pick another "
                         f"name, or pass replace=True to replace it.")
    gate = Gate(name, log_g, weight, bound, formula or f"user gate {name}")
    try:
        check_gate(gate)
    except GateError as exc:
        raise type(exc)(f"{exc}. The gate is not registered; the requirements are in docs/GATES.md (Custom gates).") from exc
    GATES[name] = gate
    register_policy_loss(mode)(make_policy_loss(name))
    if name == DEFAULT_GATE:
        register_policy_loss(LOSS_MODE_PREFIX)(make_policy_loss(name, LOSS_MODE_PREFIX))
    return mode


MINI_BATCH_KEY, TRAIN_BATCH_KEY = "actor_rollout_ref.actor.ppo_mini_batch_size", "data.train_batch_size"


def check_batch_settings(train_batch_size: Any, ppo_mini_batch_size: Any, rollout_n: Any, ppo_epochs: Any = 1,
                         loss_mode: str = "vanilla") -> list[str]:
    """Launch-time check of the rollout batch split, for every loss mode; returns warnings, raises ConfigError.

    Errors: values verl cannot train with, which it reports late or not at all (a mini-batch of 0, no responses
    per prompt, a mini-batch that does not divide the rollout batch: its workers assert that after loading the
    models). Warning: SSPO on-policy (one optimizer step per rollout batch), legitimate, but every gate is open.
    """
    values = {TRAIN_BATCH_KEY: train_batch_size, MINI_BATCH_KEY: ppo_mini_batch_size,
              "actor_rollout_ref.rollout.n": rollout_n, "actor_rollout_ref.actor.ppo_epochs": ppo_epochs}
    steps_knob = " to one of the step counts above"  # the recipes' STEPS_PER_BATCH sets the mini-batch
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            is_mini = key == MINI_BATCH_KEY
            raise ConfigError(f"{key}={value!r} must be a whole number >= 1" + (
                f"; {_mini_batch_fix(train_batch_size)}" if is_mini else ".") + _from_knob(key, steps_knob if is_mini else ""))
    if ppo_mini_batch_size > train_batch_size:
        raise ConfigError(f"{MINI_BATCH_KEY}={ppo_mini_batch_size} is larger than {TRAIN_BATCH_KEY}={train_batch_size}: "
                         f"a mini-batch is a part of one rollout batch; {_mini_batch_fix(train_batch_size)}"
                         + _from_knob(MINI_BATCH_KEY, steps_knob))
    if train_batch_size % ppo_mini_batch_size:
        raise ConfigError(
            f"{MINI_BATCH_KEY}={ppo_mini_batch_size} does not divide {TRAIN_BATCH_KEY}={train_batch_size} (verl's "
            f"workers assert it, after the models have loaded); {_mini_batch_fix(train_batch_size)}"
            + _from_knob(MINI_BATCH_KEY, steps_knob))
    steps = train_batch_size // ppo_mini_batch_size * ppo_epochs
    warnings = []
    if steps == 1 and gate_for_loss_mode(loss_mode) is not None:
        warnings.append(
            f"SSPO: {TRAIN_BATCH_KEY}={train_batch_size} / {MINI_BATCH_KEY}={ppo_mini_batch_size} x ppo_epochs="
            f"{ppo_epochs} = 1 optimizer step per rollout batch: on-policy, where every SSPO gate is open (w = s = 1) "
            f"and the update is the plain policy gradient, as for every other loss. Legitimate, but the gates only act "
            f"off-policy: for that regime, {_mini_batch_fix(train_batch_size)}" + _from_knob(MINI_BATCH_KEY, steps_knob))
    return warnings


def _mini_batch_fix(train_batch_size: Any) -> str:
    if not isinstance(train_batch_size, int) or train_batch_size < 1:
        return f"set {MINI_BATCH_KEY} to a divisor of {TRAIN_BATCH_KEY}."
    options = [f"{train_batch_size // k} ({k} steps)" for k in (2, 4, 8, 16) if train_batch_size % k == 0]
    return (f"set {MINI_BATCH_KEY} to a divisor of {TRAIN_BATCH_KEY}={train_batch_size}"
            + (f", e.g. {', '.join(options)}." if options else "."))


def check_loss_mode_registered(loss_mode: str, external_lib: Optional[str]) -> None:
    """The loss mode is in verl's registry once the model's external_lib is imported (as every worker does)."""
    if external_lib:
        from verl.utils.import_utils import import_external_libs

        import_external_libs(external_lib)
    gate_name = gate_for_loss_mode(loss_mode)
    if gate_name is not None and not has_gate(gate_name):
        raise unknown_gate(loss_mode, gate_name, external_lib)
    if loss_mode not in POLICY_LOSS_REGISTRY:
        raise ConfigError(f"actor_rollout_ref.actor.policy_loss.loss_mode={loss_mode} is not registered; known: "
                         f"{sorted(POLICY_LOSS_REGISTRY)}. A loss of your own must be registered by a module named in "
                         f"actor_rollout_ref.model.external_lib.")


def check_launch(actor: Any, train_batch_size: Any, model_config: Any = None) -> None:
    """What main_ppo's validate_config runs through ActorConfig.validate (and so the dry run, which calls it):
    the batch split and the loss mode's registration, for every loss mode."""
    loss_mode = actor.policy_loss.get("loss_mode", "vanilla") if actor.policy_loss is not None else "vanilla"
    for warning in check_batch_settings(train_batch_size, actor.ppo_mini_batch_size, actor.rollout_n,
                                        actor.ppo_epochs, loss_mode):
        _warn_once(("batch", warning), warning)
    external_lib = model_config.get("external_lib") if model_config is not None else None
    check_loss_mode_registered(loss_mode, external_lib)
    check_actor_config(actor)  # a user's gate is registered by now: its temperatures get checked too


def _extend_config_validation() -> None:
    """Validate SSPO settings when verl builds its ActorConfig (main_ppo does so on the driver, before any worker),
    the launch settings when main_ppo's validate_config calls ActorConfig.validate (the dry run calls the same), and
    say where the temperatures live when someone puts them under policy_loss (as verl's SAPO README does)."""
    original = ActorConfig.__post_init__
    if getattr(original, "_sspo_checked", False):
        return

    def __post_init__(self):
        original(self)
        # main_ppo builds the actor config on the driver before it imports the model's external_lib, where a
        # user's gate registers: an unknown gate is left to the launch check (validate, below), which imports it
        check_actor_config(self, unknown_gate_later=True)

    __post_init__._sspo_checked = True
    ActorConfig.__post_init__ = __post_init__

    original_validate = ActorConfig.validate

    def validate(self, n_gpus: int, train_batch_size: int, model_config: dict = None):
        check_launch(self, train_batch_size, model_config)  # first: its messages name the fix (and recipe knob)
        original_validate(self, n_gpus, train_batch_size, model_config)

    ActorConfig.validate = validate

    original_init = PolicyLossConfig.__init__

    def __init__(self, *args, **kwargs):
        misplaced = sorted({"tau_pos", "tau_neg"} & set(kwargs))
        if misplaced:
            raise MisplacedKeyError(
                f"actor_rollout_ref.actor.policy_loss has no key {misplaced[0]}: the temperatures are actor keys. "
                f"Use actor_rollout_ref.actor.{misplaced[0]}=<value> (no '+', not under policy_loss)."
            )
        original_init(self, *args, **kwargs)

    PolicyLossConfig.__init__ = __init__


def register_loss_modes() -> list[str]:
    """Register `sspo` and every `sspo_<gate>`; idempotent. Failures are logged at ERROR before raising,
    because verl's entry-point loader swallows plugin exceptions at DEBUG level."""
    try:
        check_implementation(IMPLEMENTATION)
        version = metadata.version("verl")
        if Version(version) not in SUPPORTED_VERL:
            _warn_once(("verl_version",), f"sspo_verl is tested with verl{VERL_RANGE}; found verl {version}.")
        for name in [*GATES, *RESERVED_GATES]:  # sspo_<gate>, and sspo_sapo
            register_policy_loss(loss_mode_for(name))(make_policy_loss(name))
        register_policy_loss(LOSS_MODE_PREFIX)(make_policy_loss(DEFAULT_GATE, LOSS_MODE_PREFIX))
        _extend_config_validation()
    except Exception as exc:
        logger.error(
            "sspo_verl failed to register its loss modes (%s: %s); loss_mode=sspo* will be reported as "
            "'Unsupported loss mode'. Fix: reinstall matching versions, %s, with verl%s.",
            type(exc).__name__, exc, INSTALL_HINT, VERL_RANGE,
        )
        raise
    return registered_loss_modes()


# verl's entry point (`sspo = sspo_verl.loss.plugin`) imports this module in every process: register on import.
register_loss_modes()


def __getattr__(name: str):
    if name == "LOSS_MODES":  # computed on each access, so a gate registered later is in it (and a removed one not)
        return registered_loss_modes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
