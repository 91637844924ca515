"""Dry run of a recipe: compose verl's real config with the recipe's overrides and check it without GPUs.

    python -m sspo_verl.tools.dry_run [--launcher "python3 -m verl.trainer.main_ppo"] -- <hydra overrides...>
    python -m sspo_verl.tools.dry_run --placeholders -- <your loss lines...>   # the docs' `main_ppo ...` blocks

It composes `ppo_trainer.yaml` from the installed verl with the overrides and runs verl's `validate_config` on
it, exactly as `main_ppo` does before it starts anything. With the plugin loaded (as in every verl process),
that covers verl's checks, the SSPO checks (temperatures, gate) and the launch checks (plugin.check_launch:
the batch split, the loss mode's registration): the dry run refuses what the launch refuses, and no more.
It then reports the warnings, the settings that apply to the loss mode, the optimizer steps per rollout batch
and whether the data files exist (or names them, for a cluster path not mounted here), prints the final
command and exits 0. A config that fails those checks is the user's error: one line naming the bad key (and the
recipe's environment variable behind it, when a recipe set it from one) and the fix, exit 2.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import warnings as python_warnings

from .. import cli
from ..errors import SSPOError
from .method_lines import one_line

PROG = "python -m sspo_verl.tools.dry_run"

# What a launch must name besides the loss lines (data, model, batch), as placeholders: `--placeholders` puts them
# first, so a block of loss lines can be checked alone (the docs' `python3 -m verl.trainer.main_ppo ... <lines>`);
# examples/hydra_lines.sh prints them in every block. The mini-batch is a quarter of the rollout batch: 4 optimizer
# steps per rollout batch, the off-policy regime where SSPO's gates act (on-policy every gate is open).
PLACEHOLDERS = [
    "algorithm.adv_estimator=grpo",
    "data.train_files=/path/to/train.parquet", "data.val_files=/path/to/test.parquet",
    "actor_rollout_ref.model.path=/path/to/model",
    "data.train_batch_size=256", "actor_rollout_ref.rollout.n=8",
    "actor_rollout_ref.actor.ppo_mini_batch_size=64", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16",
]

def compose(overrides: list[str]):
    """verl's `ppo_trainer.yaml` from the installed verl, composed with Hydra overrides as `main_ppo` does."""
    import verl
    from hydra import compose as hydra_compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


def validate(cfg) -> list[str]:
    """main_ppo's own checks on `cfg` (verl's validate_config, with the plugin's hooks); returns the warnings."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from ..loss import plugin  # registers the loss modes and the config hooks (the entry point does it too)

    # verl's own warnings too (warnings.warn, e.g. the disabled critic): with the plugin's, among the notes
    with plugin.collect_warnings() as warnings, python_warnings.catch_warnings(record=True) as verl_warnings:
        python_warnings.simplefilter("always")
        validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    return list(dict.fromkeys(warnings + [one_line(w.message) for w in verl_warnings]))


def loss_settings(actor) -> str:
    """`key=value` for the settings the loss mode reads (no clip ratios for sspo, no temperatures for vanilla)."""
    from ..loss.knobs import settings_read

    return " ".join(f"{k}={getattr(actor, k)}" for k in settings_read(actor.policy_loss.loss_mode))


def check(overrides: list[str]) -> list[str]:
    """Compose and validate as main_ppo does; returns notes for the user; raises on an error."""
    from verl.utils.config import omega_conf_to_dataclass

    cfg = compose(overrides)
    external = cfg.actor_rollout_ref.model.get("external_lib")
    if external:  # verl's own import error would not say which key made it import the module
        from .preflight import external_lib_error

        external_lib_error(external, "put its folder on PYTHONPATH (the recipes: GATE_MODULE=<its .py file>), "
                                     "or correct the override")
    warnings = validate(cfg)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)
    settings = loss_settings(actor)
    notes = [f"loss_mode={actor.policy_loss.loss_mode} registered; loss_agg_mode={actor.loss_agg_mode}"
             + (f"; {settings}" if settings else "")]
    steps = cfg.data.train_batch_size // actor.ppo_mini_batch_size * actor.ppo_epochs
    notes.append(f"{steps} optimizer step{'s' if steps != 1 else ''} per rollout batch (train_batch_size "
                 f"{cfg.data.train_batch_size}, ppo_mini_batch_size {actor.ppo_mini_batch_size}, ppo_epochs "
                 f"{actor.ppo_epochs}), rollout.n={cfg.actor_rollout_ref.rollout.n}")
    notes += [f"warning: {w}" for w in warnings]
    for key in ("train_files", "val_files"):
        files = cfg.data[key]
        for f in [files] if isinstance(files, str) else list(files):
            path = os.path.expanduser(str(f))
            notes.append(f"data.{key}: {path} " + ("(found)" if os.path.isfile(path) else
                                                     "(not on this machine: prepare it with python -m sspo_verl.data.prepare)"))
    if not external and actor.policy_loss.loss_mode.startswith("sspo"):  # a gate module of one's own imports sspo_verl
        notes.append("note: actor_rollout_ref.model.external_lib is not set (the entry point must then load the plugin)")
    return notes


def config_errors() -> tuple:
    """What composing and checking a config raises when the config is wrong (a bug raises something else)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return HydraException, OmegaConfBaseException, ValueError, TypeError, AssertionError, ImportError


FULL_KEY = re.compile(r"[A-Za-z_]\w+(?:\.[A-Za-z_]\w+)+")  # a Hydra key: actor_rollout_ref.model.path (not "e.g.")


def knob_note(message: str) -> str:
    """' (<key> comes from the recipe's environment variable VAR='...': set VAR instead)' when the first key that
    `message` names (what it is about) was set by a recipe from one of its knobs (recipes/lib/run.sh), unless the
    message names that variable already (the plugin's own messages do)."""
    from ..loss.plugin import recipe_knob

    keys = FULL_KEY.findall(message)
    variable = recipe_knob(keys[0]) if keys else None
    if not variable or variable in message:
        return ""
    return (f" ({keys[0]} comes from the recipe's environment variable {variable}="
            f"{os.environ.get(variable, '')!r}: set {variable} instead)")


def describe(exc: BaseException) -> str:
    """An error on one line; with its type where the message needs it (OmegaConf's "Key 'x' is not in struct")."""
    from hydra.errors import HydraException

    plain = isinstance(exc, (ValueError, HydraException))  # the plugin's, verl's and Hydra's say what they are
    return one_line(exc) if plain else f"{type(exc).__name__}: {one_line(exc)}"


def config_error(exc: BaseException, what: str, error: type = SSPOError) -> SSPOError:
    """The user's config error `exc` as one line after `what`, with the error it wraps (Hydra's do) and the
    recipe knob behind a key it names."""
    text = describe(exc)
    if exc.__cause__ is not None:
        text += f" ({describe(exc.__cause__)})"
    return error(f"{what}: {text}{knob_note(text)}")


def run(args) -> int:
    if args.placeholders:
        args.overrides = PLACEHOLDERS + args.overrides  # later keys win: the user's lines over the placeholders
    try:
        notes = check(args.overrides)
    except config_errors() as exc:  # the config is wrong: one line, before a cluster is spent
        raise config_error(exc, "main_ppo would refuse this config") from None
    for note in notes:
        print(f"[dry run] {note}")
    print("[dry run] command:")
    print(" \\\n    ".join([args.launcher] + [shlex.quote(o) for o in args.overrides]))
    return 0


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--launcher", default="python3 -m verl.trainer.main_ppo",
                        help="the command the printed launch starts with")
    parser.add_argument("--placeholders", action="store_true",
                        help="put placeholders for the data, model and batch keys first (PLACEHOLDERS), to check a "
                             "block of loss lines alone")
    parser.add_argument("overrides", nargs="*", help="after --: the recipe's Hydra overrides")
    return cli.run(PROG, run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
