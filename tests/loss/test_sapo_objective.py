"""sspo_sapo, the paper's first objective: SAPO's gate f(r) = (4/tau) sigmoid(tau (r - 1)) inside SSPO's geometric
mean (docs/GATES.md, "sspo_sapo"). Against hand-derived values, autograd of the plain formula, verl's own `sapo` loss
(they coincide for one-token responses), and under extreme ratios."""

import math

import pytest
import torch

from sspo_verl.loss import plugin
from sspo_verl.loss.gates import SAPO_GATE, Gate, get_gate
from sspo_verl.loss.objective import sspo_token_loss

from ..helpers import Batch, actor_config, call_loss, eq10_objective, eq13_gradient, random_batch

MODE = "sspo_sapo"

# Hand-derived from f(r) = (4/tau) / (1 + exp(-tau (r - 1))) and w = r f'(r) / f(r) = tau r / (1 + exp(tau (r - 1))):
# e.g. tau = 1, r = 0.5: f = 4 sigmoid(-0.5) = 4 * 0.377541 = 1.510163, w = 0.5 sigmoid(0.5) = 0.5 * 0.622459 = 0.311230.
HAND = {  # (tau, r): (f, w)
    (1.0, 0.5): (1.5101626751925816, 0.3112296656009273),
    (1.0, 1.0): (2.0, 0.5),  # on-policy: f = 2 / tau, w = tau / 2
    (1.0, 1.28): (2.278184895756916, 0.5509808333577868),
    (1.0, 3.0): (3.5231883119115293, 0.3576087660663526),
    (2.0, 0.5): (0.5378828427399902, 0.7310585786300049),
    (2.0, 1.0): (1.0, 1.0),  # tau = 2: f(1) = w(1) = 1
    (2.0, 1.28): (1.2729050805631328, 0.9306814968791902),
    (2.0, 3.0): (1.964027580075817, 0.10791725977254935),
}


def _plain_log_f(x: torch.Tensor, tau) -> torch.Tensor:
    """log of verl's SAPO gate written as verl writes it (core_algos.compute_policy_loss_sapo), for autograd."""
    return torch.log(torch.sigmoid(tau * (torch.exp(x) - 1.0)) * (4.0 / tau))


PLAIN = Gate("plain", _plain_log_f, lambda x, t: torch.full_like(x, float("nan")), SAPO_GATE.bound, "")


@pytest.mark.parametrize("tau_r", list(HAND))
def test_gate_value_and_weight_against_hand_derived_values(tau_r):
    tau, r = tau_r
    f, w = HAND[tau_r]
    sigmoid = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    assert f == pytest.approx(4.0 / tau * sigmoid(tau * (r - 1.0)), rel=1e-15)  # the table is the formula
    assert w == pytest.approx(tau * r * sigmoid(-tau * (r - 1.0)), rel=1e-15)
    x = torch.tensor([math.log(r)], dtype=torch.float64, requires_grad=True)
    log_f = SAPO_GATE.log_g(x, tau)
    (w_autograd,) = torch.autograd.grad(log_f.sum(), x)
    assert math.exp(log_f.item()) == pytest.approx(f, rel=1e-14)
    assert SAPO_GATE.weight(x.detach(), tau).item() == pytest.approx(w, rel=1e-14)
    assert w_autograd.item() == pytest.approx(w, rel=1e-14)


@pytest.mark.parametrize("tau", [0.3, 1.0, 1.05, 2.0, 6.3, 40.0])
def test_log_f_and_its_gradient_equal_autograd_of_the_plain_formula(tau):
    x = torch.linspace(-3.0, 3.0, 121, dtype=torch.float64, requires_grad=True)
    ours, plain = SAPO_GATE.log_g(x, tau), _plain_log_f(x, tau)
    torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_plain,) = torch.autograd.grad(plain.sum(), x)
    torch.testing.assert_close(g_ours, g_plain, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(SAPO_GATE.weight(x.detach(), tau), g_plain, rtol=1e-10, atol=1e-14)
    tau_t = torch.full_like(x, tau)  # the loss passes tau as a tensor
    torch.testing.assert_close(SAPO_GATE.log_g(x, tau_t), ours)
    assert torch.autograd.gradcheck(lambda v: SAPO_GATE.log_g(v, tau), (x[::10].detach().clone().requires_grad_(),))


def test_gate_properties_the_docs_state():
    x = torch.linspace(-8.0, 8.0, 16001, dtype=torch.float64)
    r = x.exp()
    for tau in (0.5, 1.0, 1.05, 2.0, 8.81):
        log_f, w = SAPO_GATE.log_g(x, tau), SAPO_GATE.weight(x, tau)
        top, bottom = math.log(4 / tau), math.log(4 / tau) + math.log(1 / (1 + math.exp(tau)))
        assert bottom <= log_f.min().item() and log_f.max().item() <= top  # bounded: [log(4/tau) + logsigmoid(-tau), log(4/tau)]
        assert SAPO_GATE.bound(tau) == pytest.approx(max(abs(top), abs(bottom)))
        assert SAPO_GATE.max_log_g(tau) == pytest.approx(top)
        assert SAPO_GATE.log_g_at_one(tau) == pytest.approx(math.log(2 / tau))
        w_norm = w * 2 / tau  # the normalized weight 2 r sigmoid(-tau (r - 1)): 1 on-policy
        below = r < 0.999  # (the grid holds x = -2e-16, where w and r agree to rounding)
        assert (w_norm[below] > r[below]).all() and (w_norm[below] < 2 * r[below]).all()  # between r and 2 r
    # not bell-shaped in SSPO's sense: the normalized weight peaks above 1, at r > 1 for tau < 2 and at r < 1 for
    # tau > 2 (its slope at r = 1 is 1 - tau / 2); only tau = 2 peaks at r = 1 with 1
    for tau, peak_w, peak_r in ((1.0, 1.1343, 1.567), (2.0, 1.0, 1.0), (8.81, 1.3656, 0.796)):
        w_norm = SAPO_GATE.weight(x, tau) * 2 / tau
        peak = int(w_norm.argmax())
        assert w_norm[peak].item() == pytest.approx(peak_w, abs=1e-4) and r[peak].item() == pytest.approx(peak_r, abs=2e-3)


def _hand_batch() -> Batch:
    # Row 0: r = (1.28, 0.5), A = +2 -> tau_pos = 1. Row 1: r = 3, A = -1 -> tau_neg = 2; its second token is padding.
    old = torch.tensor([[-1.0, -2.0], [-0.5, -9.0]], dtype=torch.float64)
    x = torch.tensor([[math.log(1.28), math.log(0.5)], [math.log(3.0), 0.0]], dtype=torch.float64)
    adv = torch.tensor([[2.0, 2.0], [-1.0, -1.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True], [True, False]])
    return Batch(old, (old + x).requires_grad_(True), adv, mask)


@pytest.mark.parametrize("implementation", ["fused", "reference"])
def test_hand_computed_loss_gradient_and_normalized_metrics(monkeypatch, implementation):
    monkeypatch.setattr(plugin, "IMPLEMENTATION", implementation)
    f_hi, w_hi = HAND[1.0, 1.28]
    f_lo, w_lo = HAND[1.0, 0.5]
    f_3, w_3 = HAND[2.0, 3.0]
    s0, s1 = math.sqrt(f_hi * f_lo), f_3  # eq. 10: geometric mean of f over the response
    batch = _hand_batch()
    loss, metrics = call_loss(MODE, batch, actor_config(MODE, tau_pos=1.0, tau_neg=2.0))
    loss.backward()
    assert loss.item() == pytest.approx(-(2 * s0 - s1) / 2, abs=1e-7)  # agg_loss adds 1e-8 to token counts
    # dloss / dlog pi_0t = -(1/2) * 2 * s0 * w_t / 2;  dloss / dlog pi_10 = -(1/2) * (-1) * s1 * w
    expected = torch.tensor([[-s0 * w_hi / 2, -s0 * w_lo / 2], [s1 * w_3 / 2, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(batch.log_prob.grad, expected, rtol=1e-7, atol=1e-9)
    # metrics, normalized so that 1 means on-policy: w 2/tau and s tau/2
    w_norm = [w_hi * 2 / 1.0, w_lo * 2 / 1.0, w_3 * 2 / 2.0]  # 1.102, 0.622, 0.108
    assert metrics["actor/sspo/token_w_mean"] == pytest.approx(sum(w_norm) / 3)
    assert metrics["actor/sspo/token_w_min"] == pytest.approx(w_3)
    assert metrics["actor/sspo/seq_s_min"] == pytest.approx(s0 * 1.0 / 2)
    assert metrics["actor/sspo/seq_s_max"] == pytest.approx(s1 * 2.0 / 2)
    assert metrics["actor/sspo/seq_s_mean"] == pytest.approx((s0 / 2 + s1) / 2)
    assert metrics["actor/sspo/token_w_frac_below_half"] == pytest.approx(1 / 3)  # only w~(r = 3, tau = 2) < 1/2
    assert metrics["actor/pg_clipfrac"] == 0.0 and metrics["actor/pg_clipfrac_lower"] == pytest.approx(1 / 3)
    assert metrics["actor/sspo/log_ratio_abs_max"] == pytest.approx(math.log(3.0))


@pytest.mark.parametrize("implementation", ["fused", "reference"])
@pytest.mark.parametrize("tau_pos,tau_neg", [(1.0, 1.05), (0.7, 1.9), (6.3, 8.81)])
@pytest.mark.parametrize("seed", [0, 1])
def test_value_is_eq10_and_gradient_is_autograd_of_the_plain_formula(monkeypatch, implementation, tau_pos, tau_neg, seed):
    monkeypatch.setattr(plugin, "IMPLEMENTATION", implementation)
    batch = random_batch(B=7, T=11, seed=seed, scale=0.8)
    batch.mask[3] = False  # a fully masked row, too
    loss, _ = call_loss(MODE, batch, actor_config(MODE, tau_pos, tau_neg))
    (grad,) = torch.autograd.grad(loss, batch.log_prob)
    objective = eq10_objective(batch, PLAIN, tau_pos, tau_neg)  # J = 1/N sum_i s_i A_i with verl's gate formula
    assert loss.item() == pytest.approx(-objective.item(), rel=1e-7, abs=1e-9)
    (grad_plain,) = torch.autograd.grad(-objective, batch.log_prob)
    torch.testing.assert_close(grad, grad_plain, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(grad, -eq13_gradient(batch, SAPO_GATE, tau_pos, tau_neg), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("tau", [0.5, 1.0, 1.05, 6.3])
def test_one_token_responses_are_verls_sapo(tau):
    """s_i = f(r) and s_i w = r f'(r) for |y_i| = 1: verl's additive SAPO, in value and gradient."""
    g = torch.Generator().manual_seed(5)
    old = -torch.rand(12, 1, generator=g, dtype=torch.float64) * 3
    batch = Batch(old, (old + 0.7 * torch.randn(12, 1, generator=g, dtype=torch.float64)).requires_grad_(True),
                  torch.randn(12, 1, generator=g, dtype=torch.float64), torch.ones(12, 1, dtype=torch.bool))
    results = {}
    for mode in ("sapo", MODE):
        loss, _ = call_loss(mode, batch, actor_config(mode, tau, tau * 1.3))
        results[mode] = (loss.item(), torch.autograd.grad(loss, batch.log_prob)[0])
    assert results[MODE][0] == pytest.approx(results["sapo"][0], rel=1e-12)
    torch.testing.assert_close(results[MODE][1], results["sapo"][1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("tau_pos,tau_neg", [(1.0, 1.05), (0.3, 4.0), (2.0, 2.0)])
def test_on_policy_it_is_the_plain_policy_gradient(tau_pos, tau_neg):
    batch = random_batch(B=6, T=10, seed=3)
    with torch.no_grad():
        batch.log_prob.copy_(batch.old_log_prob)
    loss, metrics = call_loss(MODE, batch, actor_config(MODE, tau_pos, tau_neg))
    (grad,) = torch.autograd.grad(loss, batch.log_prob)
    n_tok = batch.mask.sum(-1, keepdim=True).double()
    plain = -torch.where(batch.mask, batch.advantages, 0.0) / (n_tok * batch.mask.shape[0])  # s w = (2/tau)(tau/2) = 1
    torch.testing.assert_close(grad, plain, rtol=1e-12, atol=1e-15)
    # the objective's value is not the plain one: s_i = 2 / tau_i
    s = torch.where(batch.advantages[:, 0] > 0, 2 / tau_pos, 2 / tau_neg)
    assert loss.item() == pytest.approx(-(s * batch.advantages[:, 0]).mean().item(), rel=1e-7)
    for key in ("token_w_mean", "token_w_min", "seq_s_min", "seq_s_max"):  # normalized: 1 on-policy
        assert metrics[f"actor/sspo/{key}"] == pytest.approx(1.0, rel=1e-12), key
    assert metrics["actor/pg_clipfrac"] == 0.0 and metrics["actor/pg_clipfrac_lower"] == 0.0


def test_on_policy_with_token_level_advantages_of_both_signs():
    """tau is per token (as in verl's SAPO), so a response mixing signs gets s_i = geometric mean of 2 / tau_t and a
    token factor s_i tau_t / 2, not exactly 1 (docs/GATES.md says so)."""
    tau_pos, tau_neg = 1.0, 2.0
    adv = torch.tensor([[1.0, -1.0, 0.5, -0.5]], dtype=torch.float64)
    old = torch.full((1, 4), -1.0, dtype=torch.float64)
    batch = Batch(old, old.clone().requires_grad_(True), adv, torch.ones(1, 4, dtype=torch.bool))
    loss, _ = call_loss(MODE, batch, actor_config(MODE, tau_pos, tau_neg))
    (grad,) = torch.autograd.grad(loss, batch.log_prob)
    taus = torch.where(adv > 0, tau_pos, tau_neg)
    s = math.sqrt(2 / tau_pos * 2 / tau_neg)  # geometric mean of 2 / tau over the 4 tokens
    torch.testing.assert_close(grad, -adv * s * taus / 2 / 4, rtol=1e-12, atol=1e-15)
    assert s * tau_pos / 2 == pytest.approx(1 / math.sqrt(2)) and s * tau_neg / 2 == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("implementation", ["fused", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_extreme_log_ratios_stay_finite(monkeypatch, implementation, dtype):
    monkeypatch.setattr(plugin, "IMPLEMENTATION", implementation)
    B, T = 4, 6
    old = torch.full((B, T), -2.0)
    x = torch.tensor([1e4, -1e4, 0.0, 50.0, -50.0, 1e-3]).repeat(B, 1)  # exp(1e4) is inf in every float type
    adv = torch.tensor([[1.0], [-1.0], [2.0], [-0.5]]).expand(B, T)
    batch = Batch(old.to(dtype), (old + x).to(dtype).requires_grad_(True), adv.to(dtype), torch.ones(B, T, dtype=torch.bool))
    tau_pos, tau_neg = 0.5, 0.6
    loss, metrics = call_loss(MODE, batch, actor_config(MODE, tau_pos, tau_neg))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(batch.log_prob.grad).all()
    assert batch.log_prob.grad.dtype == dtype
    assert all(math.isfinite(v) for v in metrics.values())
    assert batch.log_prob.grad[:, :2].abs().max().item() < 1e-6  # far-off tokens: w = tau r sigmoid(-u) -> 0
    assert metrics["actor/sspo/log_ratio_abs_max"] == pytest.approx(1e4, rel=1e-2)
    if dtype != torch.bfloat16:  # bf16 cannot represent the inputs exactly
        b64 = Batch(batch.old_log_prob.double(), batch.log_prob.detach().double().requires_grad_(True),
                    batch.advantages.double(), batch.mask)
        assert loss.item() == pytest.approx(-eq10_objective(b64, SAPO_GATE, tau_pos, tau_neg).item(), rel=1e-6)


def test_the_reference_loss_reuses_the_gate_contract():
    """No second loss: objective.sspo_token_loss runs SAPO_GATE through log_g / weight like any gate."""
    batch = random_batch(B=5, T=8, seed=9)
    loss_mat, stats = sspo_token_loss(batch.log_prob, batch.old_log_prob, batch.advantages, batch.mask, SAPO_GATE, 1.0, 1.05)
    assert get_gate("sapo") is SAPO_GATE and loss_mat.shape == batch.mask.shape
    assert stats.n_bad.item() == 0


def test_the_mode_is_registered_and_its_name_is_reserved():
    import sspo_verl
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY

    assert MODE in POLICY_LOSS_REGISTRY and MODE in sspo_verl.LOSS_MODES and MODE in plugin.registered_loss_modes()
    assert plugin.gate_for_loss_mode(MODE) == "sapo" and plugin.has_gate("sapo")
    plugin.check_actor_config(actor_config(MODE))  # a known gate, valid temperatures: no "unknown gate 'sapo'"
    before = POLICY_LOSS_REGISTRY[MODE]
    for replace in (False, True):
        with pytest.raises(ValueError, match=r"'sapo' is taken: the loss mode sspo_sapo is built in"):
            sspo_verl.register_gate("sapo", lambda x, t: torch.atan(t * x) / t, lambda x, t: 1 / (1 + (t * x) ** 2),
                                    lambda t: math.pi / (2 * t), replace=replace)
    assert POLICY_LOSS_REGISTRY[MODE] is before


def test_temperatures_are_checked_against_the_gates_own_ceiling():
    """s_i <= 4 / tau: a tiny tau could overflow float32; a large one only narrows the gate (s_i -> 0 is finite)."""
    with pytest.raises(ValueError, match=r"tau_pos=1e-30 is too small for the sapo gate.*Use tau_pos >= 1e-06"):
        actor_config(MODE, tau_pos=1e-30)
    for tau in (1e-6, 100.0, 1e4):
        actor_config(MODE, tau_pos=tau, tau_neg=tau)
    with pytest.raises(ValueError, match=r"tau_neg=0 must be a finite number > 0"):
        actor_config(MODE, tau_neg=0)
