"""Shared test helpers: real verl actor configs, random batches, the eq. 10 / eq. 13 references."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn

from sspo_verl.loss.gates import Gate
from sspo_verl.verl_on_cpu import harness

# GSM8K jsonl (MIT) in the workspace's shared data, beside the repository (CI clones it with shared/ beside it)
GSM8K_DIR = Path(os.environ.get("SSPO_GSM8K_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"))


def require_gsm8k() -> Path:
    """The GSM8K folder; skips the test locally when it is absent, fails it in CI (CI=true)."""
    import pytest

    if not (GSM8K_DIR / "test.jsonl").is_file():
        message = f"GSM8K jsonl not found in {GSM8K_DIR} (set SSPO_GSM8K_DIR)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    return GSM8K_DIR


SSPO_MODES = ["sspo", "sspo_arctan", "sspo_sigmoid", "sspo_erf", "sspo_softsign"]
PAPER_AGG = "seq-mean-token-mean"


def actor_config(loss_mode="sspo", tau_pos=1.0, tau_neg=1.05, loss_agg_mode=PAPER_AGG, global_batch_info=None, **kw):
    """A real verl FSDPActorConfig, as ppo_loss receives it."""
    cfg = harness.actor_config(loss_mode, 4, 2, loss_agg_mode=loss_agg_mode, tau_pos=tau_pos, tau_neg=tau_neg, **kw)
    cfg.global_batch_info.update(global_batch_info or {})
    return cfg


@dataclass
class Batch:
    old_log_prob: torch.Tensor  # (B, T)
    log_prob: torch.Tensor  # (B, T) leaf, requires grad
    advantages: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T) bool

    def rows(self, idx) -> "Batch":
        lp = self.log_prob.detach()[idx].clone().requires_grad_(True)
        return Batch(self.old_log_prob[idx], lp, self.advantages[idx], self.mask[idx])


def random_batch(B=6, T=9, seed=0, dtype=torch.float64, scale=0.8, token_adv=False, min_len=1) -> Batch:
    """Mixed-sign sequence advantages, random right-padded lengths, log-ratios of size ~scale."""
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 4  # (B, T)
    lp = old + scale * torch.randn(B, T, generator=g, dtype=torch.float64)  # (B, T)
    if token_adv:
        adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    else:
        adv = torch.randn(B, 1, generator=g, dtype=torch.float64).expand(B, T).contiguous()
    lengths = torch.randint(min_len, T + 1, (B,), generator=g)
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T) bool
    return Batch(old.to(dtype), lp.to(dtype).requires_grad_(True), adv.to(dtype), mask)


def call_loss(mode: str, batch: Batch, cfg, loss_agg_mode=None, rollout_is_weights=None):
    """Call a registered policy loss exactly as verl's ppo_loss does (keywords, bool mask)."""
    return get_policy_loss_fn(mode)(
        old_log_prob=batch.old_log_prob, log_prob=batch.log_prob, advantages=batch.advantages,
        response_mask=batch.mask, loss_agg_mode=loss_agg_mode or cfg.loss_agg_mode, config=cfg,
        rollout_is_weights=rollout_is_weights,
    )


def eq10_objective(batch: Batch, gate: Gate, tau_pos: float, tau_neg: float) -> torch.Tensor:
    """Paper eq. 10 written out per sequence, with no surrogate: J = 1/N sum_i s_i A_i (N = valid rows)."""
    terms = []
    for i in range(batch.mask.shape[0]):
        m = batch.mask[i]
        if not m.any():
            continue
        x = batch.log_prob[i][m] - batch.old_log_prob[i][m]
        a = batch.advantages[i][m][0]
        tau = tau_pos if a > 0 else tau_neg
        s = torch.exp(gate.log_g(x, tau).mean())
        terms.append(s * a)
    return torch.stack(terms).mean()


def eq13_gradient(batch: Batch, gate: Gate, tau_pos: float, tau_neg: float) -> torch.Tensor:
    """Paper eq. 13 in closed form (uses gate.weight, no autograd): dJ/d log pi_it = A_i s_i w_it / (N |y_i|)."""
    x = (batch.log_prob.detach() - batch.old_log_prob).double()
    a = batch.advantages.double()
    m = batch.mask
    tau = torch.where(a > 0, torch.tensor(tau_pos, dtype=torch.float64), torch.tensor(tau_neg, dtype=torch.float64))
    n = m.sum(-1, keepdim=True).clamp(min=1).double()  # (B, 1)
    log_g = torch.where(m, gate.log_g(x, tau), 0.0)
    s = torch.exp(log_g.sum(-1, keepdim=True) / n)  # (B, 1)
    w = gate.weight(x, tau)
    n_seq = m.any(-1).sum()
    return torch.where(m, a * s * w / (n * n_seq), 0.0)  # (B, T)


def assert_one_error_line(out, prog: str, *parts: str) -> None:
    """A user error of command `prog` (a finished subprocess): exit 2, nothing on stdout, one line on stderr that
    starts with the tool's name and contains each of `parts`."""
    assert out.returncode == 2 and out.stdout == "", (out.returncode, out.stdout, out.stderr[-2000:])
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), out.stderr[-2000:]
    for part in parts:
        assert part in lines[0], lines[0]
