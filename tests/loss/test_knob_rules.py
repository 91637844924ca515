"""The baselines' knobs (sspo_verl/loss/knobs.py): each value refused on the driver is one that verl's own loss turns
into NaN or inf, an assertion on a worker, or a silently wrong update. Each case shows that on verl's loss, then the
refusal through verl's Hydra composition and dataclass (as main_ppo builds the actor config) and the dry run."""

import math
import re

import pytest
import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils.config import omega_conf_to_dataclass

from sspo_verl.loss.knobs import KNOB_RULES, ConfigError
from sspo_verl.loss.methods import hydra_overrides
from sspo_verl.tools import dry_run

from ..helpers import Batch, actor_config

ACTOR = "actor_rollout_ref.actor"
METHOD = {"vanilla": "grpo_dapo", "gspo": "gspo", "geo_mean": "gmpo", "sapo": "sapo"}  # the recipes' method per loss
NAN, INF = float("nan"), float("inf")
COMMON = ["algorithm.adv_estimator=grpo", "data.train_batch_size=64", f"{ACTOR}.ppo_mini_batch_size=16",
          f"{ACTOR}.ppo_micro_batch_size_per_gpu=4", "actor_rollout_ref.rollout.n=4",
          "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
          "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4", "trainer.n_gpus_per_node=4"]

# (loss mode, key, value, what verl's loss does with it)
CASES = [
    ("vanilla", "clip_ratio_low", -0.1, "no gradient for A < 0"),
    ("vanilla", "clip_ratio_high", -0.1, "no gradient for A > 0"),
    ("vanilla", "clip_ratio_low", NAN, "NaN loss"),
    ("vanilla", "clip_ratio_c", 1.0, "assertion"),
    ("vanilla", "clip_ratio_c", 0.5, "assertion"),
    ("vanilla", "clip_ratio_c", NAN, "assertion"),
    ("gspo", "clip_ratio_low", -1e-4, "no gradient for A < 0"),
    ("gspo", "clip_ratio_high", NAN, "NaN loss"),
    ("geo_mean", "clip_ratio_high", -0.1, "no gradient for A > 0"),
    ("geo_mean", "clip_ratio_low", NAN, "NaN loss"),
    ("sapo", "tau_pos", 0.0, "inf or NaN"),
    ("sapo", "tau_neg", INF, "inf or NaN"),
    ("sapo", "tau_neg", NAN, "inf or NaN"),
    ("sapo", "tau_pos", -1.0, "sign of the objective flipped"),
]
IDS = [f"{mode}-{key}={value}" for mode, key, value, _ in CASES]


def _on_policy_batch() -> Batch:
    """Rows with A = +1, -1, 0, +2; log pi = log pi_old, so every loss here should give the plain policy gradient."""
    old = -torch.rand(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    adv = torch.tensor([[1.0], [-1.0], [0.0], [2.0]], dtype=torch.float64).expand(4, 5)
    return Batch(old, old.clone().requires_grad_(True), adv, torch.ones(4, 5, dtype=torch.bool))


def _verl_loss(mode: str, key: str, value) -> tuple[torch.Tensor, torch.Tensor]:
    """verl's own loss for `mode` with `key` forced to `value` (past the config check, as a hand-built config could)."""
    cfg = actor_config(mode, **{k: v for k, v in (("clip_ratio_low", 0.2), ("clip_ratio_high", 0.28)) if mode != "sapo"})
    object.__setattr__(cfg, key, value)
    batch = _on_policy_batch()
    loss, _ = get_policy_loss_fn(mode)(old_log_prob=batch.old_log_prob, log_prob=batch.log_prob,
                                       advantages=batch.advantages, response_mask=batch.mask,
                                       loss_agg_mode="seq-mean-token-mean", config=cfg, rollout_is_weights=None)
    (grad,) = torch.autograd.grad(loss, batch.log_prob)
    return loss, grad


@pytest.mark.parametrize("mode,key,value,effect", CASES, ids=IDS)
def test_verls_own_loss_breaks_with_the_refused_value(mode, key, value, effect):
    if effect == "assertion":
        with pytest.raises(AssertionError, match="clip_ratio_c for dual-clip PPO should be greater than 1.0"):
            _verl_loss(mode, key, value)
        return
    good_loss, good_grad = _verl_loss(mode, key, getattr(actor_config(mode), key) if mode == "sapo" else 0.2)
    assert torch.isfinite(good_loss) and (good_grad[[0, 1, 3]] != 0).all()  # on-policy: the plain gradient
    loss, grad = _verl_loss(mode, key, value)
    if effect == "NaN loss":
        assert math.isnan(loss.item())
    elif effect == "inf or NaN":
        assert not (torch.isfinite(loss) and torch.isfinite(grad).all())
    elif effect == "no gradient for A < 0":
        assert (grad[1] == 0).all() and (grad[[0, 3]] == good_grad[[0, 3]]).all()  # the A < 0 row lost its gradient
    elif effect == "no gradient for A > 0":
        assert (grad[[0, 3]] == 0).all() and (grad[1] == good_grad[1]).all()
    else:  # tau < 0: f = (4 / tau) sigmoid(...) < 0, the logged objective changes sign; the gradient is abs(tau)'s
        assert loss.item() > 0 > good_loss.item()
        torch.testing.assert_close(grad, _verl_loss(mode, key, abs(value))[1])


def _compose(method: str, overrides: list[str]):
    return dry_run.compose(COMMON + hydra_overrides(method) + overrides)


def _refusal(call, *args) -> ConfigError:
    """The ConfigError behind what `call` raises: Hydra wraps errors of a dataclass's __post_init__ (main_ppo's
    traceback shows both); fails the test when there is none."""
    with pytest.raises(Exception) as raised:
        call(*args)
    error = raised.value
    while error is not None and not isinstance(error, ConfigError):
        error = error.__cause__
    assert error is not None, f"no ConfigError behind {raised.value!r}"
    return error


def _build_actor(cfg):
    return omega_conf_to_dataclass(cfg.actor_rollout_ref.actor)


@pytest.mark.parametrize("mode,key,value,effect", CASES, ids=IDS)
def test_refused_when_verl_builds_the_actor_config_and_by_the_dry_run(mode, key, value, effect):
    override = f"{ACTOR}.{key}={value}"
    cfg = _compose(METHOD[mode], [override])
    expected = rf"loss_mode={mode}: {ACTOR}\.{key}={value!r} must be .*Fix: {ACTOR}\.{key}="
    assert re.search(expected, str(_refusal(_build_actor, cfg)))  # main_ppo's driver, before any worker starts
    assert re.search(expected, str(_refusal(dry_run.check, COMMON + hydra_overrides(METHOD[mode]) + [override])))


def test_the_fallback_key_is_the_one_named():
    """verl reads clip_ratio where clip_ratio_low is null: the error names the key the value came from."""
    cfg = _compose("grpo", [f"{ACTOR}.clip_ratio_low=null", f"{ACTOR}.clip_ratio=-0.2"])
    assert f"{ACTOR}.clip_ratio=-0.2 must be a number >= 0" in str(_refusal(_build_actor, cfg))


def test_a_value_that_is_not_a_number():
    cfg = _compose("gmpo", [f"{ACTOR}.clip_ratio_high=wide"])
    assert f"{ACTOR}.clip_ratio_high='wide' is not a number; it must be" in str(_refusal(_build_actor, cfg))


def test_a_value_from_a_recipe_variable_names_the_variable(monkeypatch):
    monkeypatch.setenv("SSPO_RECIPE_KNOBS", f"{ACTOR}.tau_pos=TAU_POS;{ACTOR}.tau_neg=TAU_NEG")
    monkeypatch.setenv("TAU_NEG", "-1.05")
    error = _refusal(_build_actor, _compose("sapo", [f"{ACTOR}.tau_neg=-1.05"]))
    assert re.search(r"tau_neg=-1\.05 must be .*environment variable TAU_NEG='-1\.05': set TAU_NEG instead", str(error))


@pytest.mark.parametrize("mode,key,value", [
    ("vanilla", "clip_ratio_low", 0.0), ("vanilla", "clip_ratio_high", INF), ("vanilla", "clip_ratio_low", 1.5),
    ("vanilla", "clip_ratio_c", INF), ("gspo", "clip_ratio_low", 0.0), ("geo_mean", "clip_ratio_high", 2.0),
    ("sapo", "tau_pos", 1e-6), ("sapo", "tau_neg", 100.0),
])
def test_legitimate_extremes_pass_and_verls_loss_computes_with_them(mode, key, value):
    cfg = _compose(METHOD[mode], [f"{ACTOR}.{key}={value}"])
    assert getattr(_build_actor(cfg), key) == value
    loss, grad = _verl_loss(mode, key, value)
    assert torch.isfinite(loss) and torch.isfinite(grad).all() and (grad[[0, 1, 3]] != 0).any()


def test_only_the_settings_a_loss_reads_are_checked():
    cfg = _compose("sspo", [f"{ACTOR}.clip_ratio_low=-1", f"{ACTOR}.clip_ratio_c=0.5"])  # SSPO reads no clip ratio
    _build_actor(cfg)
    cfg = _compose("grpo", [f"{ACTOR}.tau_pos=-1"])  # vanilla reads no temperature
    _build_actor(cfg)
    assert set(KNOB_RULES) == {"vanilla", "gspo", "geo_mean", "sapo"}
