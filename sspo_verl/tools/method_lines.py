"""A method's Hydra lines for a recipe, with the recipes' knobs applied (recipes/lib/methods.sh runs it).

    python -m sspo_verl.tools.method_lines <method> [-- <the recipe's arguments...>]
    python -m sspo_verl.tools.method_lines --list             # the methods, on one line

One override per line on stdout. On an error nothing goes to stdout (run_recipe then stops) and one line to
stderr, exit 2.

Methods: the methods table's (sspo_verl/loss/methods.py), plus `sspo_<gate>` for each gate that GATE_MODULE
registers. The recipes' knobs, read from the environment:

    GATE_MODULE            a gate module of your own: the path of a .py file, or a module name. It is imported here,
                           as every verl process will import it (it becomes the launch's
                           actor_rollout_ref.model.external_lib; recipes/lib/run.sh puts a file's folder on
                           PYTHONPATH, the multi-node recipes ship the file with the job). Each gate it registers
                           with sspo_verl.register_gate makes `sspo_<gate>` a method: the table's sspo row, that gate.
    TAU_POS / TAU_NEG      the temperatures themselves, passed through as given (verl's config check judges them);
    TAU_FROM_CLIP="lo hi"  the temperatures at which the selected loss mode's gate passes half its gradient at a PPO
                           clip range's edges (calibrate.py); with TAU_POS or TAU_NEG it is an error.

The selected loss mode is the method's, unless the recipe's arguments set
actor_rollout_ref.actor.policy_loss.loss_mode (they come after these lines, so they win): TAU_FROM_CLIP then
calibrates the gate of that mode, after importing GATE_MODULE and the arguments' own
actor_rollout_ref.model.external_lib (where a gate of one's own registers), or refuses. The temperature knobs
apply to soft-gate loss modes only (sapo, sspo*): a clip method ignores them (TAU_POS / TAU_NEG with a warning on
stderr; a shared TAU_FROM_CLIP is meant for the soft methods of a sweep), but a loss mode without temperatures
that the arguments select explicitly together with TAU_FROM_CLIP is an error. A temperature in the arguments
(actor_rollout_ref.actor.tau_pos=...) comes last and wins over all the knobs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Optional

from .. import cli
from ..errors import SSPOError
from ..loss.methods import ACTOR, METHODS, hydra_overrides

PROG = "python -m sspo_verl.tools.method_lines"
TEMPERATURE_KNOBS = ("TAU_POS", "TAU_NEG", "TAU_FROM_CLIP")
GATE_MODULE = "GATE_MODULE"
LOSS_MODE_KEY = f"{ACTOR}.policy_loss.loss_mode"
EXTERNAL_LIB_KEY = "actor_rollout_ref.model.external_lib"
SSPO = "sspo"  # the table's row that a user gate's method copies
SOFT_LOSS_MODES = frozenset(s["loss_mode"] for s in METHODS.values() if "tau_pos" in s)


def has_temperature(loss_mode: str) -> bool:
    """Whether a loss mode reads tau_pos / tau_neg: sapo and every SSPO mode (sspo, sspo_<gate>)."""
    return loss_mode in SOFT_LOSS_MODES or loss_mode.startswith(SSPO + "_")


def one_line(text: str) -> str:
    """A message on one line: Hydra's and OmegaConf's span several (key, full_key, object_type)."""
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------------------------
# GATE_MODULE
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateModule:
    """GATE_MODULE as typed, the module name verl imports (external_lib) and, for a file, the folder it is in."""

    typed: str
    name: str
    folder: Optional[str]


def gate_module(value: str) -> Optional[GateModule]:
    """GATE_MODULE's value: the path of a .py file, or a module name (dotted); None when unset. Checks the form
    and that a file exists, nothing is imported."""
    if not value:
        return None
    if value.endswith(".py"):
        path = os.path.abspath(value)
        if not os.path.isfile(path):
            raise SSPOError(f"GATE_MODULE={value}: no such file (a relative path starts at {os.getcwd()}); give the "
                            f"path of the .py file that calls sspo_verl.register_gate, e.g. "
                            f"GATE_MODULE=examples/custom_gate/my_gates.py, or the name of an installed module")
        name = os.path.basename(path)[: -len(".py")]
        if not name.isidentifier():
            raise SSPOError(f"GATE_MODULE={value}: {name!r} is not a Python module name, and every verl process "
                            f"imports the file as one; rename it with letters, digits and '_' (e.g. my_gates.py)")
        return GateModule(value, name, os.path.dirname(path))
    if not all(part.isidentifier() for part in value.split(".")):
        raise SSPOError(f"GATE_MODULE={value!r} is neither a .py file nor a module name; give the path of your gate "
                        f"module's file (e.g. GATE_MODULE=examples/custom_gate/my_gates.py) or its module name")
    return GateModule(value, value, None)


def registered_sspo_modes() -> list[str]:
    from ..loss.plugin import registered_loss_modes  # torch and verl: only when a gate module is asked for

    return registered_loss_modes()


def import_gate_module(module: GateModule) -> list[str]:
    """Import the module as verl's processes will (external_lib); returns the loss modes it registered."""
    if module.folder and module.folder not in sys.path:
        sys.path.insert(0, module.folder)
    before = set(registered_sspo_modes())
    already = module.name in sys.modules
    try:
        with contextlib.redirect_stdout(sys.stderr):  # what it prints must not join the Hydra lines on stdout
            importlib.import_module(module.name)
    except Exception as exc:  # the user's code: whatever it raises is reported, naming the knob
        raise SSPOError(f"GATE_MODULE={module.typed}: importing {module.name} failed ({type(exc).__name__}: "
                        f"{one_line(exc)}); fix the module (every verl process will import it)") from None
    added = [mode for mode in registered_sspo_modes() if mode not in before]
    if not added and not already:
        raise SSPOError(f"GATE_MODULE={module.typed}: {module.name} imports but registers no gate; call "
                        f"sspo_verl.register_gate(...) in it (docs/GATES.md, examples/custom_gate/my_gates.py)")
    return added


# ---------------------------------------------------------------------------------------------------
# The recipe's arguments
# ---------------------------------------------------------------------------------------------------


def argument_values(arguments: list[str]) -> dict:
    """{key: value} of the recipe's Hydra arguments, the last one of each key winning as in Hydra (a deleted key:
    None), read with Hydra's own override parser."""
    if not arguments:
        return {}
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
    except HydraException as exc:
        raise SSPOError(f"the recipe's arguments are not Hydra overrides: {one_line(exc)}") from None
    return {o.key_or_group: (None if o.is_delete() else o.value()) for o in parsed}


def import_argument_libs(libs) -> None:
    """Import the arguments' actor_rollout_ref.model.external_lib (a name or a list), as verl will."""
    from .preflight import import_failure

    with contextlib.redirect_stdout(sys.stderr):
        failure = import_failure(libs)  # the user's module: whatever it raises is reported, naming the argument
    if failure:
        raise SSPOError(f"your argument {EXTERNAL_LIB_KEY}={libs} does not import here ({failure}); put its folder "
                        f"on PYTHONPATH, or name its .py file in GATE_MODULE instead")


# ---------------------------------------------------------------------------------------------------
# Method and temperatures
# ---------------------------------------------------------------------------------------------------


def check_method(method: str, module: Optional[GateModule], imported: bool) -> str:
    """The table's row behind `method`: itself, or sspo for a registered user gate's `sspo_<gate>`."""
    if method in METHODS:
        return method
    if imported and method.startswith(SSPO + "_") and method in registered_sspo_modes():
        return SSPO
    if module is None:
        hint = " (a gate of your own: GATE_MODULE=<its .py file> makes sspo_<gate> a method)"
    else:
        mine = [m for m in registered_sspo_modes() if m not in METHODS]
        hint = f", or one that GATE_MODULE={module.typed} registers: {', '.join(mine) or 'none'}"
    raise SSPOError(f"unknown method {method!r}; choose from {', '.join(METHODS)}{hint}")


def clip_knob(env) -> Optional[tuple[float, float]]:
    """TAU_FROM_CLIP as (low, high); checked before anything is imported."""
    clip = env.get("TAU_FROM_CLIP", "")
    if not clip:
        return None
    if env.get("TAU_POS") or env.get("TAU_NEG"):
        raise SSPOError(f'TAU_FROM_CLIP="{clip}" conflicts with TAU_POS="{env.get("TAU_POS", "")}" '
                        f'TAU_NEG="{env.get("TAU_NEG", "")}": both set the temperatures; unset one (TAU_FROM_CLIP '
                        f"derives them from a clip range, TAU_POS/TAU_NEG give them)")
    try:
        low, high = (float(x) for x in clip.split())
    except ValueError:
        raise SSPOError(f'TAU_FROM_CLIP="{clip}": give two numbers, the clip range\'s low and high side, '
                        f'e.g. TAU_FROM_CLIP="0.2 0.28"') from None
    return low, high


def temperatures(method: str, loss_mode: str, chosen_by_arguments: bool, env,
                 clip: Optional[tuple[float, float]], module: Optional[GateModule]) -> dict:
    """{tau_pos, tau_neg} that the knobs in `env` set for `loss_mode` ({} where none applies)."""
    where = f"your argument {LOSS_MODE_KEY}={loss_mode}" if chosen_by_arguments else method
    if not has_temperature(loss_mode):
        if env.get("TAU_POS") or env.get("TAU_NEG"):
            print(f"warning: TAU_POS / TAU_NEG are ignored: {where} has no temperature (only sapo and sspo* do)",
                  file=sys.stderr)
        if clip is not None and chosen_by_arguments:
            raise SSPOError(f'TAU_FROM_CLIP="{env["TAU_FROM_CLIP"]}" calibrates a soft gate, but {where} selects a '
                            f"loss without temperatures; unset TAU_FROM_CLIP, or drop that argument")
        return {}
    if clip is None:
        return {key: env[knob] for key, knob in (("tau_pos", "TAU_POS"), ("tau_neg", "TAU_NEG")) if env.get(knob)}
    from .calibrate import taus_from_clip  # imports torch: only when asked

    try:
        tau_pos, tau_neg = taus_from_clip(loss_mode, *clip)  # sapo, sspo (arctan), sspo_<gate> as registered now
    except ValueError as exc:  # an edge outside (0, inf), an unknown gate, a gate without a half-weight temperature
        fix = ("" if module is not None or not chosen_by_arguments else
               "; a gate of your own registers when its module is imported: GATE_MODULE=<its .py file>")
        chosen = f" for {where}" if chosen_by_arguments else ""
        raise SSPOError(f'TAU_FROM_CLIP="{env["TAU_FROM_CLIP"]}"{chosen}: {one_line(exc).rstrip(".")}{fix}') from None
    return {"tau_pos": f"{tau_pos:.6g}", "tau_neg": f"{tau_neg:.6g}"}


def _replace(lines: list[str], key: str, value: str) -> list[str]:
    """`lines` with `key=value` in place of the line of `key` (appended when there is none)."""
    kept = [line for line in lines if not line.startswith(key + "=")]
    at = next((i for i, line in enumerate(lines) if line.startswith(key + "=")), len(kept))
    return kept[:at] + [f"{key}={value}"] + kept[at:]


def loss_lines(method: str, arguments: list[str], env) -> list[str]:
    """The Hydra lines of `method` with the knobs in `env` applied, for a recipe whose own arguments (which come
    after these lines) are `arguments`. Every knob is checked before anything heavy is imported."""
    clip = clip_knob(env)
    module = gate_module(env.get(GATE_MODULE, ""))
    values = argument_values(arguments)
    if module is not None:
        import_gate_module(module)
    argument_libs = values.get(EXTERNAL_LIB_KEY)
    if argument_libs:
        import_argument_libs(argument_libs)
    row = check_method(method, module, imported=module is not None or bool(argument_libs))
    chosen = values.get(LOSS_MODE_KEY)
    loss_mode = str(chosen) if chosen is not None else method if row != method else METHODS[row]["loss_mode"]
    taus = temperatures(method, loss_mode, chosen is not None, env, clip, module)
    row_reads_taus = "tau_pos" in METHODS[row]
    lines = hydra_overrides(row, **(taus if row_reads_taus else {}))
    if row != method:  # a user gate: the sspo row with its own loss mode
        lines = _replace(lines, LOSS_MODE_KEY, method)
    if taus and not row_reads_taus:  # the arguments chose a soft-gate mode for a clip method
        lines += [f"{ACTOR}.{key}={value}" for key, value in taus.items()]
    if module is not None:  # every verl process imports the user's module (which imports sspo_verl itself)
        lines = _replace(lines, EXTERNAL_LIB_KEY, module.name)
    return lines


def method_names(env) -> list[str]:
    """The methods: the table's, then those a GATE_MODULE registers."""
    module = gate_module(env.get(GATE_MODULE, ""))
    added = import_gate_module(module) if module is not None else []
    return list(METHODS) + [m for m in added if m not in METHODS]


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("method", nargs="?", help=f"one of: {' '.join(METHODS)}, or sspo_<gate> of GATE_MODULE")
    parser.add_argument("arguments", nargs="*", help="after --: the recipe's own Hydra arguments (they decide "
                        "which loss mode TAU_FROM_CLIP calibrates)")
    parser.add_argument("--list", action="store_true", help="print the methods on one line and exit")
    args = parser.parse_args(argv)
    if args.list:
        if args.method:
            parser.error("--list takes no method")
        return cli.run(PROG, lambda: print(" ".join(method_names(os.environ))))
    if not args.method:
        parser.error(f"give a method, one of: {' '.join(METHODS)} (the temperature knobs "
                     f"{', '.join(TEMPERATURE_KNOBS)} and {GATE_MODULE} come from the environment)")
    return cli.run(PROG, lambda: print("\n".join(loss_lines(args.method, args.arguments, os.environ))))


if __name__ == "__main__":
    sys.exit(main())
