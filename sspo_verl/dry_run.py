"""Dry run of a recipe: compose verl's real config with the recipe's overrides and check it without GPUs.

    python -m sspo_verl.dry_run [--launcher "python3 -m verl.trainer.main_ppo"] -- <hydra overrides...>

It composes `ppo_trainer.yaml` from the installed verl with the overrides (as `main_ppo` would), converts the
actor config to verl's dataclass (verl's own validation, plus the plugin's SSPO checks), checks the loss mode
is registered, that the data files exist (or names them, for a cluster path not mounted here), that each
rollout batch gives at least 4 optimizer steps, then prints the final command and exits 0.
Exit 1 with the reason on any failure.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

MIN_STEPS_PER_BATCH = 4  # the off-policy regime SSPO targets


def compose(overrides: list[str]):
    """verl's `ppo_trainer.yaml` from the installed verl, composed with Hydra overrides as `main_ppo` does."""
    import verl
    from hydra import compose as hydra_compose, initialize_config_dir

    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


def check(overrides: list[str]) -> list[str]:
    """Compose and validate; returns notes for the user; raises on an error."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
    from verl.utils.config import omega_conf_to_dataclass

    import sspo_verl.plugin  # noqa: F401  (the entry point loads it too; explicit so a broken install fails here)

    cfg = compose(overrides)
    actor = omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)  # verl's checks + SSPO's (tau, gate)
    loss_mode = actor.policy_loss.loss_mode
    if loss_mode not in POLICY_LOSS_REGISTRY:
        raise ValueError(f"loss_mode={loss_mode} is not registered; known: {sorted(POLICY_LOSS_REGISTRY)}")
    notes = [f"loss_mode={loss_mode} registered; loss_agg_mode={actor.loss_agg_mode}; "
             f"tau_pos={actor.tau_pos} tau_neg={actor.tau_neg}; clip={actor.clip_ratio_low}/{actor.clip_ratio_high}"]
    steps = cfg.data.train_batch_size // actor.ppo_mini_batch_size
    if steps < MIN_STEPS_PER_BATCH:
        raise ValueError(f"data.train_batch_size={cfg.data.train_batch_size} / ppo_mini_batch_size="
                         f"{actor.ppo_mini_batch_size} = {steps} optimizer steps per rollout batch; the comparison "
                         f"needs >= {MIN_STEPS_PER_BATCH} (the off-policy regime): raise STEPS_PER_BATCH")
    notes.append(f"{steps} optimizer steps per rollout batch (train_batch_size {cfg.data.train_batch_size}, "
                 f"ppo_mini_batch_size {actor.ppo_mini_batch_size}), rollout.n={cfg.actor_rollout_ref.rollout.n}")
    for key in ("train_files", "val_files"):
        files = cfg.data[key]
        for f in [files] if isinstance(files, str) else list(files):
            path = os.path.expanduser(str(f))
            notes.append(f"data.{key}: {path} " + ("(found)" if os.path.isfile(path) else
                                                     "(not on this machine: prepare it with python -m sspo_verl.data.prepare)"))
    external = cfg.actor_rollout_ref.model.get("external_lib")
    if external != "sspo_verl" and loss_mode.startswith("sspo"):
        notes.append("note: actor_rollout_ref.model.external_lib=sspo_verl is not set (the entry point must then load the plugin)")
    return notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launcher", default="python3 -m verl.trainer.main_ppo")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    try:
        notes = check(args.overrides)
    except Exception as exc:  # report, do not bury in a traceback: this runs before a cluster is spent
        cause = exc.__cause__ or exc
        print(f"DRY RUN FAILED: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"[dry run] {note}")
    print("[dry run] command:")
    print(" \\\n    ".join([args.launcher] + [shlex.quote(o) for o in args.overrides]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
