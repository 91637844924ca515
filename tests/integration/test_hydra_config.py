"""verl's ppo_trainer.yaml composed with Hydra and the overrides our recipes use, converted to verl's actor
dataclass as main_ppo's validate_config does on the driver: good overrides pass, bad ones fail there, clearly."""

import os

import pytest
import verl
from hydra import compose, initialize_config_dir
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import ActorConfig

CONFIG_DIR = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
RECIPE_OVERRIDES = [  # the SSPO lines of a recipe, with the batch sizes that give 4 optimizer steps per rollout batch
    "data.train_batch_size=256",
    "actor_rollout_ref.actor.ppo_mini_batch_size=64",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
    "actor_rollout_ref.actor.strategy=fsdp2",
    "actor_rollout_ref.actor.policy_loss.loss_mode=sspo",
    "actor_rollout_ref.actor.tau_pos=1.0",
    "actor_rollout_ref.actor.tau_neg=1.05",
    "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
    "actor_rollout_ref.model.external_lib=sspo_verl",
]


def _actor(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=RECIPE_OVERRIDES + overrides)
    return cfg, omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


@pytest.mark.parametrize("mode", ["sspo", "sspo_arctan", "sspo_sigmoid", "sspo_erf", "sspo_softsign"])
def test_recipe_overrides_convert_to_verls_actor_dataclass(mode):
    cfg, actor = _actor([f"actor_rollout_ref.actor.policy_loss.loss_mode={mode}", "actor_rollout_ref.actor.tau_neg=2.5"])
    assert isinstance(actor, ActorConfig)
    assert actor.policy_loss.loss_mode == mode and (actor.tau_pos, actor.tau_neg) == (1.0, 2.5)
    assert actor.loss_agg_mode == "seq-mean-token-mean"
    assert cfg.data.train_batch_size // actor.ppo_mini_batch_size == 4  # the off-policy regime: 4 steps per batch


@pytest.mark.parametrize("override,match", [
    ("actor_rollout_ref.actor.tau_pos=0", r"actor_rollout_ref.actor.tau_pos=0 must be a finite number > 0"),
    ("actor_rollout_ref.actor.tau_neg=-1.05", r"actor_rollout_ref.actor.tau_neg=-1.05 must be a finite number > 0"),
    # verl's SAPO README suggests this key; PolicyLossConfig has no such field
    ("+actor_rollout_ref.actor.policy_loss.tau_pos=1.0",
     r"policy_loss has no key tau_pos.*Use actor_rollout_ref.actor.tau_pos=<value> \(no '\+', not under policy_loss\)"),
])
def test_bad_overrides_fail_at_config_time(override, match):
    with pytest.raises(Exception, match=match):
        _actor([override])


def test_an_unknown_gate_fails_in_main_ppos_validation_not_before():
    """The driver builds the actor dataclass before it imports model.external_lib (where a user's gate registers):
    the gate is checked in validate_config's launch check, still before any worker starts."""
    from sspo_verl.tools.dry_run import validate

    cfg, actor = _actor(["actor_rollout_ref.actor.policy_loss.loss_mode=sspo_cosine", "trainer.n_gpus_per_node=8",
                         "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8"])
    assert actor.policy_loss.loss_mode == "sspo_cosine"
    with pytest.raises(ValueError, match=r"names gate 'cosine', which is not registered after importing "
                                         r"external_lib=sspo_verl.*Known SSPO loss modes"):
        validate(cfg)


def test_policy_loss_tau_without_plus_is_rejected_by_hydra():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="policy_loss.tau_pos"):
        _actor(["actor_rollout_ref.actor.policy_loss.tau_pos=1.0"])
