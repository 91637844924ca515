"""sspo_verl.loss.methods: the one methods table of the recipes, the testbed and the demo."""

import pytest

from sspo_verl.loss.methods import actor_settings, hydra_overrides

ACTOR = "actor_rollout_ref.actor."


def test_the_lines_of_two_methods_as_the_paper_sets_them():
    assert hydra_overrides("grpo_dapo") == [
        ACTOR + "policy_loss.loss_mode=vanilla", ACTOR + "clip_ratio_low=0.2", ACTOR + "clip_ratio_high=0.28",
        ACTOR + "loss_agg_mode=token-mean"]
    assert hydra_overrides("gspo")[1:3] == [ACTOR + "clip_ratio_low=0.0003", ACTOR + "clip_ratio_high=0.0004"]
    assert hydra_overrides("sspo_erf", tau_neg="2.0") == [
        ACTOR + "policy_loss.loss_mode=sspo_erf", ACTOR + "tau_pos=1.0", ACTOR + "tau_neg=2.0",
        ACTOR + "loss_agg_mode=seq-mean-token-mean", "actor_rollout_ref.model.external_lib=sspo_verl"]
    assert not any("external_lib" in line for line in hydra_overrides("sapo"))  # verl's own mode: no plugin needed


def test_actor_settings_applies_temperatures_only_to_soft_methods():
    assert actor_settings("sspo_erf", tau_pos=0.5)["tau_pos"] == 0.5
    with pytest.raises(ValueError, match="temperatures apply to sapo and sspo"):
        actor_settings("grpo_dapo", tau_pos=0.5)
    with pytest.raises(ValueError, match="unknown method 'ppo'"):
        actor_settings("ppo")


def test_sspo_sapo_is_a_method_with_the_sspo_defaults():
    assert hydra_overrides("sspo_sapo") == [
        ACTOR + "policy_loss.loss_mode=sspo_sapo", ACTOR + "tau_pos=1.0", ACTOR + "tau_neg=1.05",
        ACTOR + "loss_agg_mode=seq-mean-token-mean", "actor_rollout_ref.model.external_lib=sspo_verl"]
