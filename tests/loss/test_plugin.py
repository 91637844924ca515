"""The loss modes inside verl: registry, ppo_loss contract, global_batch_info invariances, config errors."""

import logging
import math
import sys

import pytest
import torch
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, get_policy_loss_fn
from verl.utils import tensordict_utils as tu
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

import sspo_verl
from sspo_verl.loss import plugin
from sspo_verl.loss.gates import GATES
from sspo_verl.verl_on_cpu import harness

from ..helpers import PAPER_AGG, SSPO_MODES, Batch, actor_config, call_loss, random_batch

AGG_MODES = ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum", "token-sum"]


def test_every_gate_has_a_registered_loss_mode():
    assert set(SSPO_MODES) <= set(POLICY_LOSS_REGISTRY)
    assert {f"sspo_{g}" for g in GATES} | {"sspo_sapo"} <= set(plugin.registered_loss_modes())
    assert get_policy_loss_fn("sspo").__name__ == "compute_policy_loss_sspo"
    # the built-in verl modes are untouched
    assert {"vanilla", "gspo", "geo_mean", "sapo"} <= set(POLICY_LOSS_REGISTRY)
    assert POLICY_LOSS_REGISTRY["sapo"].__module__ == "verl.trainer.ppo.core_algos"


def _global_info(batch: Batch, dp_size=1) -> dict:
    # what verl's engine puts into data before ppo_loss: global token count and global batch size
    return {"dp_size": dp_size, "batch_num_tokens": int(batch.mask.sum()), "global_batch_size": batch.mask.shape[0],
            "loss_scale_factor": None}


def _split_loss_and_grad(mode, batch, agg, splits, dp_size=1):
    """Micro-batches of one mini-batch (dp ranks are chunks too): summed loss, gradient as DDP would average it."""
    info = _global_info(batch, dp_size)
    cfg = actor_config(mode, 0.8, 1.3, loss_agg_mode=agg, global_batch_info=info)
    grad = torch.zeros_like(batch.log_prob)
    total = 0.0
    for idx in torch.arange(batch.mask.shape[0]).chunk(splits * dp_size):
        part = batch.rows(idx)
        loss, metrics = call_loss(mode, part, cfg)
        (g,) = torch.autograd.grad(loss, part.log_prob)
        grad[idx] += g / dp_size  # DDP/FSDP average gradients over ranks
        total += loss.item() / dp_size
    return total, grad, metrics


@pytest.mark.parametrize("mode", ["sspo", "sspo_softsign", "sspo_sapo"])
@pytest.mark.parametrize("agg", AGG_MODES)
def test_micro_batch_split_and_dp_size_do_not_change_loss_or_gradient(mode, agg):
    batch = random_batch(B=16, T=13, seed=20, scale=1.0)
    batch.mask[5] = False  # a fully masked row
    whole_loss, whole_grad, metrics = _split_loss_and_grad(mode, batch, agg, splits=1)
    for splits, dp_size in [(2, 1), (8, 1), (1, 2), (4, 2)]:
        loss, grad, m = _split_loss_and_grad(mode, batch, agg, splits, dp_size)
        assert loss == pytest.approx(whole_loss, rel=1e-10), (splits, dp_size)
        torch.testing.assert_close(grad, whole_grad, rtol=1e-10, atol=1e-14)
        assert m.keys() == metrics.keys()


def test_verl_geo_mean_gradient_grows_with_micro_batch_count_but_sspo_does_not():
    # Why the project never aggregates with torch.mean: verl's geo_mean does, so its accumulated gradient
    # is multiplied by the number of micro-batches.
    batch = random_batch(B=8, T=10, seed=21, scale=0.1)
    norms = {}
    for mode in ("geo_mean", "sspo"):
        for splits in (1, 4):
            _, grad, _ = _split_loss_and_grad(mode, batch, PAPER_AGG, splits)
            norms[mode, splits] = grad.norm().item()
    assert norms["geo_mean", 4] == pytest.approx(4 * norms["geo_mean", 1], rel=1e-9)
    assert norms["sspo", 4] == pytest.approx(norms["sspo", 1], rel=1e-10)


def test_fully_masked_rows_change_nothing():
    batch = random_batch(B=6, T=8, seed=22)
    padded = Batch(*(torch.cat([t.detach(), t.detach()[:2]]) for t in (batch.old_log_prob, batch.log_prob, batch.advantages)),
                   torch.cat([batch.mask, torch.zeros(2, 8, dtype=torch.bool)]))
    padded.log_prob.requires_grad_(True)
    with torch.no_grad():
        padded.log_prob[6:] = float("nan")  # garbage in the masked rows
    for agg in AGG_MODES:
        info = _global_info(batch)  # the global batch counts only the 6 real rows... (local modes: see below)
        loss, _ = call_loss("sspo", batch, actor_config(global_batch_info=info, loss_agg_mode=agg))
        (grad,) = torch.autograd.grad(loss, batch.log_prob)
        loss_p, _ = call_loss("sspo", padded, actor_config(global_batch_info=info, loss_agg_mode=agg))
        (grad_p,) = torch.autograd.grad(loss_p, padded.log_prob)
        assert loss_p.item() == pytest.approx(loss.item(), rel=1e-12)
        torch.testing.assert_close(grad_p[:6], grad)
        assert (grad_p[6:] == 0).all()
        # ...and without global info, agg_loss itself excludes fully masked rows from the sequence count
        loss_local, _ = call_loss("sspo", batch, actor_config(loss_agg_mode=agg))
        loss_local_p, _ = call_loss("sspo", padded, actor_config(loss_agg_mode=agg))
        assert loss_local_p.item() == pytest.approx(loss_local.item(), rel=1e-12)


def test_rollout_is_weights_scale_each_tokens_term():
    batch = random_batch(B=5, T=7, seed=23)
    cfg = actor_config()
    weights = torch.rand(5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    loss, _ = call_loss("sspo", batch, cfg)
    (grad,) = torch.autograd.grad(loss, batch.log_prob)
    loss_w, _ = call_loss("sspo", batch, cfg, rollout_is_weights=weights)
    (grad_w,) = torch.autograd.grad(loss_w, batch.log_prob)
    torch.testing.assert_close(grad_w, grad * weights)  # the weights are constants per token
    loss_2, _ = call_loss("sspo", batch, cfg, rollout_is_weights=torch.full((5, 7), 2.0, dtype=torch.float64))
    assert loss_2.item() == pytest.approx(2 * loss.item(), rel=1e-12)


def test_through_verls_own_ppo_loss():
    """verl's real caller: nested (no-padding) TensorDict, bool mask, global_batch_info filled from the data."""
    B, P, R = 4, 6, 10
    td = harness.rollout_batch(B, P, R, vocab_size=64, seed=24)  # left-padded prompts, right-padded responses
    padded = lambda t: t.to_padded_tensor(0) if t.is_nested else t  # noqa: E731
    response_mask = padded(td["response_mask"]).bool()  # (B, R)
    assert not response_mask.all()  # some responses are short
    tu.assign_non_tensor(td, dp_size=1, batch_num_tokens=int(response_mask.sum()))
    g = torch.Generator().manual_seed(24)
    n_tokens = td["input_ids"].values().numel() if td["input_ids"].is_nested else td["input_ids"].numel()
    flat_log_probs = (-torch.rand(n_tokens, generator=g) * 3).requires_grad_(True)  # model output, (total_nnz,)

    cfg = actor_config("sspo", loss_agg_mode=PAPER_AGG)
    loss, metrics = ppo_loss(cfg, {"log_probs": flat_log_probs}, td)
    loss.backward()
    assert cfg.global_batch_info["batch_num_tokens"] == int(response_mask.sum())

    log_prob = no_padding_2_padding(flat_log_probs.detach(), td).requires_grad_(True)  # (B, R)
    direct = Batch(padded(td["old_log_probs"]), log_prob, padded(td["advantages"]), response_mask)
    expected, _ = call_loss("sspo", direct, actor_config("sspo", loss_agg_mode=PAPER_AGG))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["actor/pg_loss"].aggregate() == pytest.approx(expected.item(), rel=1e-6)
    for key in ("actor/ppo_kl", "actor/pg_clipfrac", "actor/sspo/token_w_mean", "actor/sspo/seq_s_max", "actor/sspo/log_ratio_abs_max"):
        assert math.isfinite(metrics[key].aggregate()), key
    assert flat_log_probs.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------
# Errors and warnings
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["tau_pos", "tau_neg"])
@pytest.mark.parametrize("value,match", [(0.0, "must be a finite number > 0"), (-1.0, "must be a finite number > 0"),
                                         (float("nan"), "must be a finite number > 0"), ("warm", "is not a number"),
                                         (0.001, "too small for the arctan gate")])
def test_bad_temperatures_fail_at_config_time_and_at_the_first_call(key, value, match):
    # config time: verl builds its ActorConfig (main_ppo does on the driver, before any worker starts)
    with pytest.raises(ValueError, match=rf"actor_rollout_ref.actor.{key}.*{match}"):
        actor_config("sspo", **{key: value})
    # first call: a config that skipped validation
    cfg = actor_config("sspo")
    object.__setattr__(cfg, key, value)  # verl configs are frozen; bypass, as a hand-built config could
    with pytest.raises(ValueError, match=rf"actor_rollout_ref.actor.{key}.*{match}"):
        call_loss("sspo", random_batch(B=2, T=3), cfg)


def test_too_small_tau_error_names_the_smallest_allowed():
    with pytest.raises(ValueError, match=r"tau_pos >= 0\.0316"):
        actor_config("sspo_arctan", tau_pos=0.01)
    actor_config("sspo_arctan", tau_pos=0.0316)  # pi / (2 * 0.0316) < 60: accepted


def test_other_loss_modes_are_not_validated_by_the_plugin():
    actor_config("vanilla", tau_pos=-1.0)  # verl does not use tau for vanilla; the plugin stays out of the way


def test_unknown_gate_fails_in_main_ppos_validation_with_the_known_modes():
    known = r"loss_mode=sspo_cosine names gate 'cosine', which is not registered.*sspo_arctan.*register_gate"
    with pytest.raises(ValueError, match=known):
        _validate(["actor_rollout_ref.actor.policy_loss.loss_mode=sspo_cosine"])
    with pytest.raises(ValueError, match=known.replace("registered", "registered after importing external_lib=sspo_verl")):
        _validate(["actor_rollout_ref.actor.policy_loss.loss_mode=sspo_cosine", "actor_rollout_ref.model.external_lib=sspo_verl"])
    cfg = actor_config("sspo_cosine")  # building the actor config leaves it to the launch check (external_lib) ...
    with pytest.raises(ValueError, match=known):
        plugin.check_actor_config(cfg)  # ... the check itself refuses it


def test_a_users_gate_from_external_lib_passes_main_ppos_validation(tmp_path, monkeypatch):
    """main_ppo's driver builds the actor config before it imports the model's external_lib, where a user's gate
    registers: the gate and its temperatures are checked once that module is imported."""
    (tmp_path / "my_gates_v.py").write_text(
        "import torch, sspo_verl\n"
        "sspo_verl.register_gate('algebraic_v', lambda x, t: x / torch.sqrt(1 + (t * x) ** 2),\n"
        "                        lambda x, t: (1 + (t * x) ** 2) ** -1.5, lambda t: 1 / t)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    user = ["actor_rollout_ref.actor.policy_loss.loss_mode=sspo_algebraic_v", "actor_rollout_ref.model.external_lib=my_gates_v"]
    try:
        with pytest.raises(ValueError, match=r"tau_pos=-1(\.0)? must be a finite number > 0"):
            _validate(user + ["actor_rollout_ref.actor.tau_pos=-1"])  # the gate unknown at build time, registered here
        assert "sspo_algebraic_v" in POLICY_LOSS_REGISTRY
        assert _validate(user) == []
    finally:  # the gate must not leak into other tests
        GATES.pop("algebraic_v", None)
        POLICY_LOSS_REGISTRY.pop("sspo_algebraic_v", None)
        sys.modules.pop("my_gates_v", None)


def test_agg_mode_warning_is_emitted_once_per_process_and_mode(caplog):
    plugin._warned.clear()
    batch = random_batch(B=3, T=4)
    with caplog.at_level(logging.WARNING, logger="sspo_verl.loss.plugin"):
        cfg = actor_config("sspo_erf", loss_agg_mode="token-mean")
        for _ in range(3):
            call_loss("sspo_erf", batch, cfg)
        call_loss("sspo_erf", batch, actor_config("sspo_erf", loss_agg_mode=PAPER_AGG))
    msgs = [r.getMessage() for r in caplog.records if "loss_agg_mode=token-mean" in r.getMessage()]
    assert len(msgs) == 1 and "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean" in msgs[0]
    assert not [r for r in caplog.records if "loss_agg_mode=seq-mean-token-mean:" in r.getMessage()]


def test_missing_config_is_a_clear_error():
    batch = random_batch(B=2, T=3)
    with pytest.raises(ValueError, match="needs the actor config"):
        get_policy_loss_fn("sspo")(old_log_prob=batch.old_log_prob, log_prob=batch.log_prob, advantages=batch.advantages,
                                   response_mask=batch.mask)


def test_bad_implementation_switch_is_logged_loudly(monkeypatch, caplog):
    monkeypatch.setattr(plugin, "IMPLEMENTATION", "turbo")
    with caplog.at_level(logging.ERROR, logger="sspo_verl.loss.plugin"), pytest.raises(ValueError, match="SSPO_VERL_IMPL='turbo'"):
        plugin.register_loss_modes()
    assert "failed to register" in caplog.text


def test_registration_failure_is_logged_loudly(monkeypatch, caplog):
    def broken(name):
        raise AttributeError("register_policy_loss moved")

    monkeypatch.setattr(plugin, "register_policy_loss", broken)
    with caplog.at_level(logging.ERROR, logger="sspo_verl.loss.plugin"), pytest.raises(AttributeError):
        plugin.register_loss_modes()
    assert "failed to register" in caplog.text and "pip install" in caplog.text


# ---------------------------------------------------------------------------------------------------
# A gate of your own
# ---------------------------------------------------------------------------------------------------


def test_user_gate_is_checked_and_registered():
    mode = sspo_verl.register_gate(
        "algebraic",
        lambda x, t: x / torch.sqrt(1 + (t * x) ** 2),
        lambda x, t: (1 + (t * x) ** 2) ** -1.5,
        lambda t: 1 / t,
    )
    try:
        assert mode == "sspo_algebraic" and "sspo_algebraic" in POLICY_LOSS_REGISTRY
        batch = random_batch(B=4, T=6, seed=25)
        loss, metrics = call_loss(mode, batch, actor_config(mode, 1.0, 2.0))
        (grad,) = torch.autograd.grad(loss, batch.log_prob)
        from ..helpers import eq13_gradient

        torch.testing.assert_close(grad, -eq13_gradient(batch, GATES["algebraic"], 1.0, 2.0), rtol=1e-7, atol=1e-10)
    finally:
        GATES.pop("algebraic", None)
        POLICY_LOSS_REGISTRY.pop("sspo_algebraic", None)


def test_user_gate_that_breaks_a_requirement_is_not_registered():
    with pytest.raises(ValueError, match=r"\(ii\) g'\(1\) = 1"):
        sspo_verl.register_gate("steep", lambda x, t: 2 * torch.tanh(x), lambda x, t: 2 / torch.cosh(x) ** 2, lambda t: 2.0)
    assert "sspo_steep" not in POLICY_LOSS_REGISTRY and "steep" not in GATES


ALGEBRAIC = (lambda x, t: x / torch.sqrt(1 + (t * x) ** 2), lambda x, t: (1 + (t * x) ** 2) ** -1.5, lambda t: 1 / t)


def test_a_registered_gate_is_not_replaced_silently():
    before = POLICY_LOSS_REGISTRY["sspo_arctan"], POLICY_LOSS_REGISTRY["sspo"], GATES["arctan"]
    with pytest.raises(ValueError, match=r"'arctan' is already registered \(loss modes sspo_arctan, sspo\).*replace=True"):
        sspo_verl.register_gate("arctan", *ALGEBRAIC)
    assert (POLICY_LOSS_REGISTRY["sspo_arctan"], POLICY_LOSS_REGISTRY["sspo"], GATES["arctan"]) == before


def test_replacing_the_default_gate_keeps_sspo_and_sspo_arctan_one_loss():
    original = GATES["arctan"]
    batch = random_batch(B=6, T=7, seed=31, scale=1.2)
    try:
        assert sspo_verl.register_gate("arctan", *ALGEBRAIC, replace=True) == "sspo_arctan"
        losses = {mode: call_loss(mode, batch, actor_config(mode))[0].item() for mode in ("sspo", "sspo_arctan")}
        assert losses["sspo"] == losses["sspo_arctan"]
        assert losses["sspo"] != pytest.approx(call_loss("sspo_erf", batch, actor_config("sspo_erf"))[0].item())
    finally:
        sspo_verl.register_gate("arctan", original.log_g, original.weight, original.bound, original.formula,
                                replace=True)
        GATES["arctan"] = original  # the very object, so the fused kernel applies again
        plugin.register_loss_modes()
    reference = call_loss("sspo", batch, actor_config("sspo"))[0].item()
    assert reference == pytest.approx(call_loss("sspo_arctan", batch, actor_config("sspo_arctan"))[0].item())
    assert reference != pytest.approx(losses["sspo"])


@pytest.mark.parametrize("name", ["bad name!", "", "Arctan", "my-gate", "gate.v2", None])
def test_gate_names_are_identifiers(name):
    with pytest.raises(ValueError, match=r"lowercase letters, digits and '_' only"):
        sspo_verl.register_gate(name, *ALGEBRAIC)
    assert not [m for m in POLICY_LOSS_REGISTRY if m.startswith("sspo_") and not plugin.has_gate(m[5:])]


def test_a_gate_that_ignores_tau_is_refused():
    with pytest.raises(ValueError, match=r"\(v\) w does not depend on tau"):
        sspo_verl.register_gate("untempered", lambda x, t: torch.atan(x) + 0 * t, lambda x, t: 1 / (1 + x**2) + 0 * t,
                                lambda t: math.pi / 2)
    assert "untempered" not in GATES and "sspo_untempered" not in POLICY_LOSS_REGISTRY


# ---------------------------------------------------------------------------------------------------
# Launch checks: main_ppo's validate_config -> ActorConfig.validate (the dry run calls the same)
# ---------------------------------------------------------------------------------------------------


def _validate(overrides):
    """verl's validate_config on ppo_trainer.yaml with `overrides`, as main_ppo runs it before anything starts."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from sspo_verl.tools.dry_run import compose

    cfg = compose(["algorithm.adv_estimator=grpo", "data.train_batch_size=64", "actor_rollout_ref.actor.ppo_mini_batch_size=16",
                   "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4", "actor_rollout_ref.rollout.n=4",
                   "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
                   "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4", "trainer.n_gpus_per_node=4",
                   "actor_rollout_ref.actor.policy_loss.loss_mode=sspo",
                   "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean", *overrides])
    with plugin.collect_warnings() as warnings:
        validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    return warnings


@pytest.mark.parametrize("override,message", [
    ("actor_rollout_ref.actor.ppo_mini_batch_size=0", "ppo_mini_batch_size=0 must be a whole number >= 1; set "
     "actor_rollout_ref.actor.ppo_mini_batch_size to a divisor of data.train_batch_size=64, e.g. 32 (2 steps), "
     "16 (4 steps), 8 (8 steps), 4 (16 steps)."),  # used to be a bare ZeroDivisionError in the dry run only
    ("actor_rollout_ref.rollout.n=0", "actor_rollout_ref.rollout.n=0 must be a whole number >= 1"),  # used to pass
    ("actor_rollout_ref.actor.ppo_mini_batch_size=12", "ppo_mini_batch_size=12 does not divide data.train_batch_size=64"),
    ("actor_rollout_ref.actor.ppo_mini_batch_size=128", "ppo_mini_batch_size=128 is larger than data.train_batch_size=64"),
    ("actor_rollout_ref.actor.ppo_epochs=0", "actor_rollout_ref.actor.ppo_epochs=0 must be a whole number >= 1"),
    ("actor_rollout_ref.actor.policy_loss.loss_mode=vanila", "loss_mode=vanila is not registered; known: ["),
])
def test_main_ppos_validation_refuses_impossible_batch_settings(override, message):
    with pytest.raises(ValueError) as error:
        _validate([override])
    assert message in str(error.value)
    assert "STEPS_PER_BATCH" not in str(error.value)  # outside the recipes, only the Hydra key is the fix


def test_on_policy_sspo_warns_and_passes():
    (warning,) = _validate(["actor_rollout_ref.actor.ppo_mini_batch_size=64"])
    assert "= 1 optimizer step per rollout batch: on-policy, where every SSPO gate is open" in warning
    assert _validate(["actor_rollout_ref.actor.ppo_mini_batch_size=64", "actor_rollout_ref.actor.ppo_epochs=2"]) == []
    assert _validate(["actor_rollout_ref.actor.ppo_mini_batch_size=64",  # any other loss: on-policy is its business
                      "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"]) == []


def test_a_value_set_through_a_recipe_knob_names_the_knob(monkeypatch):
    monkeypatch.setenv("SSPO_RECIPE_KNOBS", "actor_rollout_ref.actor.tau_pos=TAU_POS;"
                                            "actor_rollout_ref.actor.ppo_mini_batch_size=STEPS_PER_BATCH")
    monkeypatch.setenv("TAU_POS", "-1")
    with pytest.raises(Exception, match=r"tau_pos=-1.0 must be .* environment variable TAU_POS='-1': set TAU_POS"):
        _validate(["actor_rollout_ref.actor.tau_pos=-1.0"])
    monkeypatch.setenv("STEPS_PER_BATCH", "5")
    with pytest.raises(ValueError, match=r"variable STEPS_PER_BATCH='5': set STEPS_PER_BATCH to one of the step counts"):
        _validate(["actor_rollout_ref.actor.ppo_mini_batch_size=12"])
