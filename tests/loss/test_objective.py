"""The SSPO loss against hand-derived values, eq. 10 / eq. 13, and under extreme inputs."""

import math

import pytest
import torch

from sspo_verl.loss.gates import GATES, Gate
from sspo_verl.loss.objective import SSPOInputError, sspo_token_loss
from sspo_verl.loss.plugin import gate_for_loss_mode

from ..helpers import PAPER_AGG, SSPO_MODES, Batch, actor_config, call_loss, eq10_objective, eq13_gradient, random_batch

TAUS = [(1.0, 1.05), (0.7, 1.9), (3.0, 0.5)]


def _hand_batch() -> Batch:
    # Row 0: 2 tokens, x = log r = (0.5, -1.0), A = +2 -> tau_pos. Row 1: 1 token, x = 0.3, A = -1 -> tau_neg.
    old = torch.tensor([[-1.0, -2.0], [-0.5, -9.0]], dtype=torch.float64)
    x = torch.tensor([[0.5, -1.0], [0.3, 0.0]], dtype=torch.float64)
    adv = torch.tensor([[2.0, 2.0], [-1.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False]])
    return Batch(old, (old + x).requires_grad_(True), adv, mask)


# Computed by hand from the equations (docs/GATES.md) with tau_pos = 1.0, tau_neg = 1.5:
#   s_0 = exp((log g(0.5) + log g(-1)) / 2), s_1 = exp(log g(0.3)), loss = -(2 s_0 - s_1) / 2,
#   dloss/dlog pi_0t = -(1/2) * 2 * s_0 * w(x_0t) / 2,   dloss/dlog pi_10 = -(1/2) * (-1) * s_1 * w(0.3).
HAND = {  # gate: (s_0, s_1, loss, (w(0.5; 1), w(-1; 1), w(0.3; 1.5)))
    "arctan": (0.8513982532608368, 1.3256496185233484, -0.18857344399916265, (0.8, 0.5, 0.8316008316008316)),
    "sigmoid": (0.8047702107025672, 1.3431773409668781, -0.1331815402191281, (0.940014848806378, 0.7864477329659275, 0.9510358396445171)),
    "erf": (0.8669520900383297, 1.324351803841336, -0.20477618811766174, (0.7788007830714049, 0.36787944117144233, 0.8166864825981108)),
    "softsign": (0.9200444146293233, 1.229855338785492, -0.3051167452365773, (4 / 9, 0.25, 0.4756242568370987)),
}


@pytest.mark.parametrize("gate", list(HAND))
def test_hand_computed_case(gate):
    s0, s1, loss_expected, (w00, w01, w10) = HAND[gate]
    batch = _hand_batch()
    loss, metrics = call_loss(f"sspo_{gate}", batch, actor_config(f"sspo_{gate}", tau_pos=1.0, tau_neg=1.5))
    loss.backward()
    assert loss.item() == pytest.approx(loss_expected, abs=1e-7)  # agg_loss adds 1e-8 to token counts
    expected_grad = torch.tensor([[-s0 * w00 / 2, -s0 * w01 / 2], [s1 * w10 / 2, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(batch.log_prob.grad, expected_grad, rtol=1e-7, atol=1e-9)
    assert metrics["actor/sspo/seq_s_min"] == pytest.approx(s0)
    assert metrics["actor/sspo/seq_s_max"] == pytest.approx(s1)
    assert metrics["actor/sspo/seq_s_mean"] == pytest.approx((s0 + s1) / 2)
    assert metrics["actor/sspo/token_w_min"] == pytest.approx(min(w00, w01, w10))
    assert metrics["actor/sspo/token_w_mean"] == pytest.approx((w00 + w01 + w10) / 3)
    assert metrics["actor/sspo/log_ratio_abs_max"] == pytest.approx(1.0)
    assert metrics["actor/ppo_kl"] == pytest.approx(-(0.5 - 1.0 + 0.3) / 3)
    below = [w < 0.5 for w in (w00, w01, w10)]
    assert metrics["actor/sspo/token_w_frac_below_half"] == pytest.approx(sum(below) / 3)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(sum(below[:2]) / 3)  # A > 0 tokens
    assert metrics["actor/pg_clipfrac_lower"] == pytest.approx(below[2] / 3)  # A <= 0 tokens


@pytest.mark.parametrize("mode", SSPO_MODES)
@pytest.mark.parametrize("tau_pos,tau_neg", TAUS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_is_eq13_and_value_is_eq10(mode, tau_pos, tau_neg, seed):
    gate = GATES[gate_for_loss_mode(mode)]
    batch = random_batch(B=7, T=11, seed=seed, scale=1.5)
    batch.mask[3] = False  # a fully masked row, too
    loss, _ = call_loss(mode, batch, actor_config(mode, tau_pos, tau_neg))
    (grad,) = torch.autograd.grad(loss, batch.log_prob)

    # value: eq. 10, written per sequence with no surrogate
    assert loss.item() == pytest.approx(-eq10_objective(batch, gate, tau_pos, tau_neg).item(), rel=1e-7, abs=1e-9)
    # gradient: autograd of eq. 10, and eq. 13 in closed form (both are -dJ)
    (grad_eq10,) = torch.autograd.grad(-eq10_objective(batch, gate, tau_pos, tau_neg), batch.log_prob)
    torch.testing.assert_close(grad, grad_eq10, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(grad, -eq13_gradient(batch, gate, tau_pos, tau_neg), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("mode", SSPO_MODES)
@pytest.mark.parametrize("tau_pos,tau_neg", TAUS)
@pytest.mark.parametrize("token_adv", [False, True])
def test_on_policy_gradient_is_the_plain_policy_gradient(mode, tau_pos, tau_neg, token_adv):
    batch = random_batch(B=6, T=10, seed=3, token_adv=token_adv)
    with torch.no_grad():
        batch.log_prob.copy_(batch.old_log_prob)
    loss, metrics = call_loss(mode, batch, actor_config(mode, tau_pos, tau_neg))
    (grad,) = torch.autograd.grad(loss, batch.log_prob)
    # plain seq-mean-token-mean policy gradient: -1/N sum_i 1/|y_i| sum_t A_it grad log pi_it
    n_tok = batch.mask.sum(-1, keepdim=True).double()
    plain = -torch.where(batch.mask, batch.advantages, 0.0) / (n_tok * batch.mask.shape[0])
    torch.testing.assert_close(grad, plain, rtol=1e-7, atol=1e-12)
    assert loss.item() == pytest.approx((plain * torch.where(batch.mask, 1.0, 0.0)).sum().item(), abs=1e-9)
    assert metrics["actor/sspo/token_w_min"] == 1.0 and metrics["actor/sspo/seq_s_max"] == 1.0
    assert metrics["actor/pg_clipfrac"] == 0.0 and metrics["actor/ppo_kl"] == 0.0


def test_other_aggregations_reweight_sequences_by_length():
    # token-mean: -(sum_i |y_i| s_i A_i) / sum_i |y_i|, i.e. each sequence's eq. 10 term weighted by its length.
    gate = GATES["arctan"]
    batch = random_batch(B=5, T=8, seed=4)
    loss, _ = call_loss("sspo", batch, actor_config("sspo"), loss_agg_mode="token-mean")
    lengths = batch.mask.sum(-1).double()
    s = torch.stack([
        torch.exp(gate.log_g((batch.log_prob - batch.old_log_prob)[i][batch.mask[i]].detach(),
                             1.0 if batch.advantages[i, 0] > 0 else 1.05).mean()) for i in range(5)
    ])
    expected = -(lengths * s * batch.advantages[:, 0]).sum() / lengths.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)


# ---------------------------------------------------------------------------------------------------
# Relationships to the baselines (docs/GATES.md): ungated = GSPO's sequence ratio, hard gate = GMPO
# ---------------------------------------------------------------------------------------------------

UNGATED = Gate("ungated", lambda x, t: x, lambda x, t: torch.ones_like(x), lambda t: math.inf, "log g = x")


def test_ungated_sspo_is_unclipped_gspo():
    batch = random_batch(B=6, T=9, seed=5, scale=0.5)
    cfg = actor_config("gspo", clip_ratio_low=1e9, clip_ratio_high=1e9)  # GSPO with clipping switched off
    gspo_loss, _ = call_loss("gspo", batch, cfg, loss_agg_mode=PAPER_AGG)
    (gspo_grad,) = torch.autograd.grad(gspo_loss, batch.log_prob)
    loss_mat, stats = sspo_token_loss(batch.log_prob, batch.old_log_prob, batch.advantages, batch.mask, UNGATED, 1.0, 1.0)
    from verl.trainer.ppo.core_algos import agg_loss

    loss = agg_loss(loss_mat, batch.mask, PAPER_AGG)
    (grad,) = torch.autograd.grad(loss, batch.log_prob)
    assert loss.item() == pytest.approx(gspo_loss.item(), rel=1e-12)
    torch.testing.assert_close(grad, gspo_grad, rtol=1e-12, atol=1e-15)
    # and s_i is the length-normalized sequence ratio (pi_theta(y) / pi_old(y))^(1/|y|)
    x = (batch.log_prob - batch.old_log_prob).detach()
    gspo_ratio = torch.exp((x * batch.mask).sum(-1) / batch.mask.sum(-1))
    assert stats.s_max.item() == pytest.approx(gspo_ratio.max().item(), rel=1e-12)
    assert stats.s_min.item() == pytest.approx(gspo_ratio.min().item(), rel=1e-12)


def test_gmpo_is_sspo_with_a_hard_one_sided_gate():
    # GMPO (verl geo_mean, clip 0.4) clips log r from above for A > 0 and from below for A < 0: a hard gate
    # with w = 1 inside the trust region and 0 outside. We pass the sign through tau (2 -> A > 0, 0.5 -> A < 0).
    eps = 0.4
    hard = Gate("hard", lambda x, t: torch.where(t > 1, x.clamp(max=eps), x.clamp(min=-eps)),
                lambda x, t: torch.where(t > 1, x < eps, x > -eps).to(x.dtype), lambda t: math.inf, "")
    batch = random_batch(B=8, T=12, seed=6, scale=0.6)  # many tokens outside +-0.4
    gmpo_loss, gmpo_metrics = call_loss("geo_mean", batch, actor_config("geo_mean", clip_ratio=eps, clip_ratio_low=eps, clip_ratio_high=eps))
    (gmpo_grad,) = torch.autograd.grad(gmpo_loss, batch.log_prob)
    loss_mat, _ = sspo_token_loss(batch.log_prob, batch.old_log_prob, batch.advantages, batch.mask, hard, 2.0, 0.5)
    from verl.trainer.ppo.core_algos import agg_loss

    loss = agg_loss(loss_mat, batch.mask, PAPER_AGG)
    (grad,) = torch.autograd.grad(loss, batch.log_prob)
    assert gmpo_metrics["actor/pg_clipfrac"] + gmpo_metrics["actor/pg_clipfrac_lower"] > 0.2  # clipping is active
    assert loss.item() == pytest.approx(gmpo_loss.item(), rel=1e-7)
    torch.testing.assert_close(grad, gmpo_grad, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("tau", [1.0, 1.05])
def test_on_policy_sspo_equals_verl_sapo(tau):
    # Both are unbiased on-policy: SAPO's additive gate and SSPO's geometric one give the same first update.
    batch = random_batch(B=6, T=9, seed=7)
    with torch.no_grad():
        batch.log_prob.copy_(batch.old_log_prob)
    grads = []
    for mode in ("sapo", "sspo"):
        loss, _ = call_loss(mode, batch, actor_config(mode, tau, tau))
        grads.append(torch.autograd.grad(loss, batch.log_prob)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("tau", [0.25, 1.0, 4.0])
def test_soft_gates_approach_ungated_near_on_policy(tau):
    # w = 1 - O(x^2) for the smooth gates and 1 - O(|x|) for softsign (C1 only): for tiny log-ratios SSPO's
    # gradient tends to the ungated (GSPO) gradient at that order.
    batch = random_batch(B=4, T=6, seed=8, scale=1e-4)
    x_max = (batch.log_prob - batch.old_log_prob).abs().max().item()
    ref, _ = sspo_token_loss(batch.log_prob, batch.old_log_prob, batch.advantages, batch.mask, UNGATED, tau, tau)
    (g_ref,) = torch.autograd.grad(ref.sum(), batch.log_prob)
    for gate in GATES.values():
        order = 1 if gate.name == "softsign" else 2
        soft, _ = sspo_token_loss(batch.log_prob, batch.old_log_prob, batch.advantages, batch.mask, gate, tau, tau)
        (g,) = torch.autograd.grad(soft.sum(), batch.log_prob)
        torch.testing.assert_close(g, g_ref, rtol=2.5 * (tau * x_max) ** order, atol=0)
        if order == 1:  # and not better: the first-order term is really there
            assert not torch.allclose(g, g_ref, rtol=0.1 * tau * x_max, atol=0)


# ---------------------------------------------------------------------------------------------------
# Numerics: extreme ratios, long rows, bf16, masked garbage, NaN
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", SSPO_MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_extreme_log_ratios_stay_finite_without_a_clamp(mode, dtype):
    gate = GATES[gate_for_loss_mode(mode)]
    B, T = 4, 6
    old = torch.full((B, T), -2.0)
    x = torch.tensor([1e4, -1e4, 0.0, 50.0, -50.0, 1e-3]).repeat(B, 1)
    adv = torch.tensor([[1.0], [-1.0], [2.0], [-0.5]]).expand(B, T)
    batch = Batch(old.to(dtype), (old + x).to(dtype).requires_grad_(True), adv.to(dtype), torch.ones(B, T, dtype=torch.bool))
    tau_pos, tau_neg = 0.5, 0.6  # smallish taus: the widest gates, the largest sequence weights
    loss, metrics = call_loss(mode, batch, actor_config(mode, tau_pos, tau_neg))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(batch.log_prob.grad).all()
    assert batch.log_prob.grad.dtype == dtype
    bound = max(gate.bound(tau_pos), gate.bound(tau_neg))
    assert math.exp(-bound) <= metrics["actor/sspo/seq_s_min"] <= metrics["actor/sspo/seq_s_max"] <= math.exp(bound)
    # far-off tokens are gated to (almost) zero gradient, in every dtype
    assert batch.log_prob.grad[:, :2].abs().max().item() < 1e-6
    if dtype != torch.bfloat16:  # bf16 cannot represent the inputs exactly; fp32/fp64 must match eq. 10 exactly
        b64 = Batch(batch.old_log_prob.double(), batch.log_prob.detach().double().requires_grad_(True), batch.advantages.double(), batch.mask)
        assert loss.item() == pytest.approx(-eq10_objective(b64, gate, tau_pos, tau_neg).item(), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_32k_token_responses(dtype):
    B, T = 2, 32768
    g = torch.Generator().manual_seed(9)
    old = -torch.rand(B, T, generator=g) * 5
    lp = (old + 0.3 * torch.randn(B, T, generator=g)).to(dtype).requires_grad_(True)
    adv = torch.tensor([[1.3], [-0.7]]).expand(B, T).to(dtype)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 20000:] = False
    batch = Batch(old.to(dtype), lp, adv, mask)
    loss, metrics = call_loss("sspo", batch, actor_config("sspo"))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
    ref = eq10_objective(Batch(batch.old_log_prob.double(), lp.detach().double(), adv.double(), mask), GATES["arctan"], 1.0, 1.05)
    assert loss.item() == pytest.approx(-ref.item(), rel=1e-4)  # the math runs in float32 even for bf16 inputs


def test_masked_positions_may_hold_garbage():
    batch = random_batch(B=5, T=7, seed=10)
    cfg = actor_config("sspo")
    clean_loss, clean_metrics = call_loss("sspo", batch, cfg)
    (clean_grad,) = torch.autograd.grad(clean_loss, batch.log_prob)
    dirty = batch.rows(slice(None))
    pad = ~dirty.mask
    with torch.no_grad():
        dirty.log_prob[pad] = float("nan")
    dirty.old_log_prob = torch.where(pad, float("-inf"), dirty.old_log_prob)
    dirty.advantages = torch.where(pad, float("nan"), dirty.advantages)
    loss, metrics = call_loss("sspo", dirty, cfg, rollout_is_weights=torch.where(pad, float("nan"), 1.0).double())
    (grad,) = torch.autograd.grad(loss, dirty.log_prob)
    assert loss.item() == clean_loss.item() and metrics == clean_metrics
    assert torch.equal(grad, clean_grad)


@pytest.mark.parametrize("field", ["log_prob", "old_log_prob", "advantages"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_inputs_at_valid_tokens_raise_a_clear_error(field, value):
    batch = random_batch(B=3, T=5, seed=11)
    tensors = {"log_prob": batch.log_prob.detach().clone(), "old_log_prob": batch.old_log_prob.clone(), "advantages": batch.advantages.clone()}
    tensors[field][1, 0] = value
    bad = Batch(tensors["old_log_prob"], tensors["log_prob"].requires_grad_(True), tensors["advantages"], batch.mask)
    with pytest.raises(SSPOInputError, match=rf"{field} has 1 non-finite value\(s\) at valid tokens, first {value} at \[1, 0\]"):
        call_loss("sspo", bad, actor_config("sspo"))


def test_all_masked_micro_batch_gives_zero_loss_and_the_same_metric_keys():
    batch = random_batch(B=3, T=5, seed=12)
    _, full_metrics = call_loss("sspo", batch, actor_config("sspo"))
    batch.mask[:] = False
    loss, metrics = call_loss("sspo", batch, actor_config("sspo", global_batch_info={"dp_size": 1, "global_batch_size": 8}))
    loss.backward()
    assert loss.item() == 0.0 and (batch.log_prob.grad == 0).all()
    assert metrics.keys() == full_metrics.keys()
    assert all(math.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("implementation", ["fused", "reference"])
def test_all_masked_micro_batch_metrics_follow_one_convention(monkeypatch, implementation):
    """No valid token: an untouched policy's values (objective.NO_TOKEN_STATS), so w's mean, min and s agree."""
    from sspo_verl.loss import plugin
    from sspo_verl.loss.objective import NO_TOKEN_STATS

    monkeypatch.setattr(plugin, "IMPLEMENTATION", implementation)
    batch = random_batch(B=3, T=5, seed=13)
    batch.mask[:] = False
    _, metrics = call_loss("sspo", batch, actor_config("sspo"))
    expected = {"actor/ppo_kl": NO_TOKEN_STATS["ppo_kl"], "actor/pg_clipfrac": 0.0, "actor/pg_clipfrac_lower": 0.0,
                "actor/sspo/token_w_mean": 1.0, "actor/sspo/token_w_min": 1.0, "actor/sspo/token_w_frac_below_half": 0.0,
                "actor/sspo/seq_s_mean": 1.0, "actor/sspo/seq_s_min": 1.0, "actor/sspo/seq_s_max": 1.0,
                "actor/sspo/log_ratio_abs_max": 0.0}
    assert metrics == expected
