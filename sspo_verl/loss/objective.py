"""The SSPO objective as pure tensor functions: the readable reference implementation.

Paper eq. 10 (docs/GATES.md, "SSPO in equations"), for response y_i with token log-ratios x_it = log r_it:

    J = 1/N sum_i s_i A_i,      s_i = exp( 1/|y_i| sum_t log g_tau_i(x_it) )      (eq. 10)
    grad J = 1/N sum_i A_i s_i 1/|y_i| sum_t w_tau_i(x_it) grad log pi(y_it)      (eq. 13)

verl aggregates a (B, T) loss matrix with `agg_loss`, so we return the per-token surrogate

    L_it = - sg[s_i] * exp(log g_it - sg[log g_it]) * A_it                        (docs/METRICS.md, the surrogate)

whose value is -s_i A_it and whose gradient is -s_i A_it w_it grad log pi_it. Aggregated with
seq-mean-token-mean it is eq. 10 in value and eq. 13 in gradient. With sequence-constant advantages
(GRPO family) A_it = A_i; with token-level advantages each token keeps its own A_it, so on-policy
(s = w = 1) the update is the plain token-level policy gradient for any advantage estimator.

Temperature per token: tau_pos where A_it > 0, else tau_neg (as in verl's SAPO).

The same function runs `sspo_sapo` (gates.SAPO_GATE: f(1) = 2/tau, w(1) = tau/2, so s_i w = 1 on-policy). Its
diagnostics are normalized so that 1 means on-policy for every mode: the token weight w f(1) = w 2/tau, the sequence
weight s_i / f(1) = s_i tau/2 (their product is s_i w, the real per-token factor); "clipped" is w f(1) < 1/2.

Nothing here knows verl. No ratio clamp: every gate's log g is bounded (gates.py, requirement iv).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SSPOError
from .gates import Gate

# Token weights below this count as "soft-clipped": the gate passes less than half of their gradient.
CLIP_WEIGHT = 0.5


# The stats of a micro-batch with no valid token (all padding): those of an untouched policy, so the min, max and
# mean of a weight agree (w = s = 1) and the rates are 0. verl averages the metrics over micro-batches.
NO_TOKEN_STATS = {"ppo_kl": 0.0, "w_mean": 1.0, "w_min": 1.0, "w_frac_clipped": 0.0, "clipfrac_pos": 0.0,
                  "clipfrac_neg": 0.0, "s_mean": 1.0, "s_min": 1.0, "s_max": 1.0, "log_ratio_abs_max": 0.0, "n_bad": 0.0}


class SSPOInputError(SSPOError):
    """Inputs the loss cannot be computed from (NaN or inf at a valid token)."""


@dataclass
class SSPOStats:
    """Diagnostics of one call, as 0-dim tensors (no host sync until `as_floats`)."""

    ppo_kl: torch.Tensor  # masked mean of -log r, verl's definition
    w_mean: torch.Tensor  # token weight w over valid tokens
    w_min: torch.Tensor
    w_frac_clipped: torch.Tensor  # fraction of valid tokens with w < CLIP_WEIGHT
    clipfrac_pos: torch.Tensor  # ... among them, tokens with A > 0 (verl's pg_clipfrac slot)
    clipfrac_neg: torch.Tensor  # ... and tokens with A <= 0, gated with tau_neg (verl's pg_clipfrac_lower slot)
    s_mean: torch.Tensor  # sequence weight s_i over sequences with >= 1 valid token
    s_min: torch.Tensor
    s_max: torch.Tensor
    log_ratio_abs_max: torch.Tensor  # max |log r| over valid tokens
    n_bad: torch.Tensor  # valid tokens with a non-finite log-ratio or advantage

    def as_floats(self) -> dict[str, float]:
        """All stats in one device-to-host copy."""
        names = list(self.__dataclass_fields__)
        values = torch.stack([getattr(self, n).float() for n in names]).tolist()
        return dict(zip(names, values))


def sequence_log_weight(
    log_g: torch.Tensor,  # (B, T) log g_it, 0 at invalid tokens
    mask: torch.Tensor,  # (B, T) bool
) -> torch.Tensor:
    """log s_i = 1/|y_i| sum_t log g_it (eq. 10); 0 for a fully masked row."""
    n_tokens = mask.sum(-1).clamp(min=1)  # (B,)
    return log_g.sum(-1) / n_tokens  # (B,)


def sspo_token_loss(
    log_prob: torch.Tensor,  # (B, T) log pi_theta, carries the gradient
    old_log_prob: torch.Tensor,  # (B, T) log pi_old
    advantages: torch.Tensor,  # (B, T)
    response_mask: torch.Tensor,  # (B, T) bool or {0, 1}
    gate: Gate,
    tau_pos: float,
    tau_neg: float,
) -> tuple[torch.Tensor, SSPOStats]:
    """Per-token SSPO surrogate L_it (value -s_i A_it) and its diagnostics.

    The math runs in float32 at least (float64 stays float64): bf16 log-probs are upcast, the
    gradient flows back in their dtype. Invalid tokens may hold anything (NaN too); they are
    replaced before any arithmetic, so they reach neither the value nor the gradient.
    """
    mask = response_mask.bool()  # (B, T)
    dtype = torch.promote_types(log_prob.dtype, torch.float32)
    raw_log_ratio = log_prob.to(dtype) - old_log_prob.to(dtype)  # (B, T)
    adv = advantages.to(dtype)  # (B, T)

    zero = raw_log_ratio.new_zeros(())
    x = torch.where(mask, raw_log_ratio, zero)  # (B, T) x = log r, 0 at invalid tokens
    adv = torch.where(mask, adv, zero)  # (B, T)
    tau = torch.where(adv > 0, adv.new_tensor(tau_pos), adv.new_tensor(tau_neg))  # (B, T)

    log_g = torch.where(mask, gate.log_g(x, tau), zero)  # (B, T) bounded, so no clamp
    log_s = sequence_log_weight(log_g, mask)  # (B,)
    s = torch.exp(log_s.detach())  # (B,) sg[s_i]
    loss_mat = -s.unsqueeze(-1) * torch.exp(log_g - log_g.detach()) * adv  # (B, T) value -s_i A_it

    stats = _stats(raw_log_ratio.detach(), x.detach(), adv, tau, mask, log_s.detach(), gate)
    return loss_mat, stats


@torch.no_grad()
def _stats(
    raw_log_ratio: torch.Tensor,  # (B, T) before masking, to find NaN/inf at valid tokens
    x: torch.Tensor,  # (B, T)
    adv: torch.Tensor,  # (B, T)
    tau: torch.Tensor,  # (B, T)
    mask: torch.Tensor,  # (B, T) bool
    log_s: torch.Tensor,  # (B,)
    gate: Gate,
) -> SSPOStats:
    n_tok = mask.sum().clamp(min=1)
    seq_valid = mask.any(-1)  # (B,)
    n_seq = seq_valid.sum().clamp(min=1)
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    has_tok, has_seq = mask.any(), seq_valid.any()
    one = torch.ones((), dtype=x.dtype, device=x.device)

    w = gate.weight(x, tau)  # (B, T)
    if gate.log_g_at_one is not None:  # an unnormalized gate (sspo_sapo): report w g(1) and s / g(1), 1 = on-policy
        log_at_one = gate.log_g_at_one(tau)  # (B, T)
        w = w * torch.exp(log_at_one)
        log_s = log_s - sequence_log_weight(torch.where(mask, log_at_one, 0), mask)
    clipped = (w < CLIP_WEIGHT) & mask  # (B, T)
    s = torch.exp(log_s)  # (B,)
    bad = mask & ~(torch.isfinite(raw_log_ratio) & torch.isfinite(adv))  # (B, T)
    masked_mean = lambda t: torch.where(mask, t, 0).sum() / n_tok  # noqa: E731
    return SSPOStats(  # nothing valid: an untouched policy's values (w = s = 1, the rest 0), as NO_TOKEN_STATS says
        ppo_kl=masked_mean(-x),
        w_mean=torch.where(has_tok, masked_mean(w), one),
        w_min=torch.where(has_tok, torch.where(mask, w, inf).amin(), one),
        w_frac_clipped=clipped.sum() / n_tok,
        clipfrac_pos=(clipped & (adv > 0)).sum() / n_tok,
        clipfrac_neg=(clipped & (adv <= 0)).sum() / n_tok,
        s_mean=torch.where(has_seq, torch.where(seq_valid, s, 0).sum() / n_seq, one),
        s_min=torch.where(has_seq, torch.where(seq_valid, s, inf).amin(), one),
        s_max=torch.where(has_seq, torch.where(seq_valid, s, -inf).amax(), one),
        log_ratio_abs_max=torch.where(mask, x.abs(), 0).amax(),
        n_bad=bad.sum(),
    )


def describe_bad_inputs(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, response_mask: torch.Tensor
) -> str:
    """A message naming which input holds NaN/inf at a valid token, where, and what to do."""
    mask = response_mask.bool()
    parts = []
    for name, t in (("log_prob", log_prob), ("old_log_prob", old_log_prob), ("advantages", advantages)):
        bad = mask & ~torch.isfinite(t)
        if bad.any():
            b, j = (int(v) for v in bad.nonzero()[0])
            parts.append(f"{name} has {int(bad.sum())} non-finite value(s) at valid tokens, first {t[b, j].item()} at [{b}, {j}]")
    return (
        "SSPO loss got non-finite inputs: " + "; ".join(parts) + ". "
        "These come from the model or the reward pipeline, not from the loss: check the rollout's log-probs "
        "(e.g. a bf16 overflow or an empty vocabulary row) and the reward/advantage computation "
        "(e.g. a group whose std is NaN). Masked (padding) positions may hold anything; valid ones may not."
    )
