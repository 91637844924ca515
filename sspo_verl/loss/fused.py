"""The fast path of the SSPO loss: the same per-token surrogate as `objective.sspo_token_loss`, computed in a
custom autograd function that saves one (B, T) tensor instead of a chain of intermediates.

Why it is faster and leaner (the loss is memory-bound):
- The surrogate's Jacobian is diagonal: d L_it / d log pi_it = -s_i A_it w_it (eq. 13 per token), so the
  backward is one multiply by a saved coefficient; autograd of the reference keeps ~6 (B, T) tensors alive.
- The forward works in place where it can: every fresh (B, T) buffer on CPU costs page faults that dominate
  the arithmetic. One transcendental per token (atan / tanh / erf; none for softsign) and w is derived from
  the same intermediate.
- Diagnostics come from cheap reductions of tensors the forward already has (w at padding is w(0) = 1, so
  min / sum need no mask), and a NaN/inf check folded into two sums.

It stays equal to the reference (tests/loss/test_fused.py, float64). Gates without a fused kernel fall back to
their `log_g` / `weight` functions, still inside the one-tensor autograd function.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .gates import GATES, SAPO_GATE, Gate, sapo_log_f_and_weight
from .objective import CLIP_WEIGHT, SSPOStats

_SQRT_PI_2 = math.sqrt(math.pi) / 2.0


# Per gate: (x, tau) -> (log g, w), allocating two (B, T) buffers and reusing them in place.
def _arctan(x: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u = tau * x  # (B, T)
    log_g = torch.atan(u).div_(tau)
    return log_g, u.square_().add_(1.0).reciprocal_()  # w = 1 / (1 + u^2)


def _sigmoid(x: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = torch.mul(tau, x).mul_(0.5).tanh_()  # tanh(tau x / 2)
    log_g = torch.div(h, tau).mul_(2.0)
    return log_g, h.square_().neg_().add_(1.0)  # w = 1 - tanh^2


def _erf(x: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    u = tau * x
    log_g = torch.erf(u).mul_(_SQRT_PI_2).div_(tau)
    return log_g, u.square_().neg_().exp_()  # w = exp(-u^2)


def _softsign(x: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = torch.abs(x).mul_(tau).add_(1.0)  # 1 + tau |x|
    log_g = torch.div(x, d)
    return log_g, d.square_().reciprocal_()  # w = 1 / (1 + tau |x|)^2


FUSED_GATES: dict[str, Callable] = {"arctan": _arctan, "sigmoid": _sigmoid, "erf": _erf, "softsign": _softsign,
                                    "sapo": sapo_log_f_and_weight}  # sspo_sapo: its own one-pass function


_BUILTIN = {**GATES, "sapo": SAPO_GATE}  # the gate objects the kernels above implement


def _log_g_and_weight(gate: Gate, x: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if _BUILTIN.get(gate.name) is gate:
        return FUSED_GATES[gate.name](x, tau)
    return gate.log_g(x, tau), gate.weight(x, tau)  # a user gate: its own functions


class _SSPOTokenLoss(torch.autograd.Function):
    """log_prob (B, T) -> loss_mat (B, T) with value -s_i A_it; backward multiplies by -s_i A_it w_it."""

    @staticmethod
    def forward(ctx, log_prob, old_log_prob, advantages, mask, gate, tau_pos, tau_neg):
        dtype = torch.promote_types(log_prob.dtype, torch.float32)
        zero = torch.zeros((), dtype=dtype, device=log_prob.device)
        x = log_prob.to(dtype, copy=True).sub_(old_log_prob)  # (B, T) log r; bf16 `old` is upcast on the fly
        torch.where(mask, x, zero, out=x)  # padding may hold NaN: select, never multiply
        adv = torch.where(mask, advantages, zero.to(advantages.dtype))  # (B, T) input dtype; exact in products
        pos = adv > 0  # (B, T) bool: tau_pos tokens
        tau = torch.where(pos, torch.tensor(tau_pos, dtype=dtype), torch.tensor(tau_neg, dtype=dtype))  # (B, T)

        log_g, w = _log_g_and_weight(gate, x, tau)  # (B, T) each; log g(0) = 0, w(0) = 1 at padding (SSPO gates)
        del tau
        n_tok_row = torch.count_nonzero(mask, dim=-1)  # (B,) no int64 copy of the mask, unlike sum
        if gate.log_g_at_one is not None:  # sspo_sapo: log f(1) = log(2 / tau) != 0 at padding
            log_g.masked_fill_(~mask, 0.0)
        log_s = log_g.sum(-1) / n_tok_row.clamp(min=1)  # (B,) eq. 10
        s = torch.exp(log_s)  # (B,)
        loss_mat = torch.mul(adv, s.neg().unsqueeze(-1), out=log_g)  # (B, T) value -s_i A_it, reuses log_g

        w_stat, s_stat = _normalized(gate, w, s, pos, mask, n_tok_row, tau_pos, tau_neg)
        stats = _fused_stats(x, adv, pos, w_stat, mask, n_tok_row, s_stat)
        del w_stat
        coef = w.mul_(loss_mat)  # (B, T) d L_it / d log pi_it = -s_i A_it w_it, reuses w
        ctx.save_for_backward(coef)
        ctx.in_dtype = log_prob.dtype
        ctx.mark_non_differentiable(stats)
        return loss_mat, stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_stats):
        (coef,) = ctx.saved_tensors
        return (grad_loss * coef).to(ctx.in_dtype), None, None, None, None, None, None


_STAT_FIELDS = list(SSPOStats.__dataclass_fields__)


def _normalized(gate, w, s, pos, mask, n_tok_row, tau_pos, tau_neg):
    """(w, s) as the stats report them: unchanged for an SSPO gate; for an unnormalized one (sspo_sapo) w g(1) and
    s / g(1), so that 1 means on-policy (objective.py), with w = 1 exactly at padding as _fused_stats assumes."""
    if gate.log_g_at_one is None:
        return w, s
    c_pos, c_neg = gate.log_g_at_one(tau_pos), gate.log_g_at_one(tau_neg)  # log g(1), two scalars
    log_at_one = torch.where(pos, torch.tensor(c_pos, dtype=w.dtype), torch.tensor(c_neg, dtype=w.dtype))  # (B, T)
    w_stat = torch.where(mask, w * log_at_one.exp(), 1.0)  # (B, T)
    log_s_at_one = log_at_one.masked_fill_(~mask, 0.0).sum(-1) / n_tok_row.clamp(min=1)  # (B,)
    return w_stat, s * torch.exp(-log_s_at_one)


@torch.no_grad()
def _fused_stats(x, adv, pos, w, mask, n_tok_row, s) -> torch.Tensor:
    """SSPOStats as one stacked tensor (fields in SSPOStats order); no (B, T) temporaries but two bool ones."""
    n_valid = n_tok_row.sum()
    n_tok = n_valid.clamp(min=1).to(x.dtype)
    seq_valid = n_tok_row > 0  # (B,)
    n_seq = seq_valid.sum().clamp(min=1).to(x.dtype)
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    one = torch.ones((), dtype=x.dtype, device=x.device)
    x_sum = x.sum()  # padding is 0
    w_sum_valid = w.sum() - (mask.numel() - n_valid)  # padding holds w = 1
    clipped = w < CLIP_WEIGHT  # padding has w = 1: never clipped
    n_clip = torch.count_nonzero(clipped)
    n_clip_pos = torch.count_nonzero(clipped.logical_and_(pos))
    s_valid = torch.where(seq_valid, s, inf)
    has_seq = seq_valid.any()
    values = [  # with nothing valid: objective.NO_TOKEN_STATS
        -x_sum / n_tok,  # ppo_kl
        torch.where(n_valid > 0, w_sum_valid / n_tok, one),  # w_mean
        w.amin(),  # w_min (1 when nothing is valid, like the reference)
        n_clip / n_tok,  # w_frac_clipped
        n_clip_pos / n_tok,  # clipfrac_pos
        (n_clip - n_clip_pos) / n_tok,  # clipfrac_neg (A <= 0 tokens)
        torch.where(has_seq, torch.where(seq_valid, s, 0).sum() / n_seq, one),  # s_mean
        torch.where(has_seq, s_valid.amin(), one),  # s_min
        torch.where(has_seq, torch.where(seq_valid, s, -inf).amax(), one),  # s_max
        torch.maximum(x.amax(), -x.amin()),  # log_ratio_abs_max (padding is 0)
        (~torch.isfinite(x_sum + adv.sum())).to(x.dtype),  # n_bad as a flag: NaN/inf anywhere valid
    ]
    return torch.stack([v.to(x.dtype) for v in values])


def sspo_token_loss_fused(
    log_prob: torch.Tensor,  # (B, T)
    old_log_prob: torch.Tensor,  # (B, T)
    advantages: torch.Tensor,  # (B, T)
    response_mask: torch.Tensor,  # (B, T) bool or {0, 1}
    gate: Gate,
    tau_pos: float,
    tau_neg: float,
) -> tuple[torch.Tensor, SSPOStats]:
    """Drop-in for `objective.sspo_token_loss` (same value, gradient and stats; n_bad is a 0/1 flag)."""
    loss_mat, stats = _SSPOTokenLoss.apply(
        log_prob, old_log_prob.detach(), advantages.detach(), response_mask.bool(), gate, float(tau_pos), float(tau_neg)
    )
    return loss_mat, SSPOStats(*stats.unbind())
