"""A short demonstration of the SSPO loss modes on real verl objects (`make demo`; the main job is the testbed).

It builds verl's own FSDPActorConfig for each loss mode, calls the registered policy-loss function the way
verl's `ppo_loss` does, and prints two things:

1. the per-token gradient weight d loss / d log pi_t for one token whose ratio r = pi_theta / pi_old moves
   away from 1, for a positive and a negative advantage: hard clipping (vanilla, GMPO) cuts it to 0 at the
   clip edge, SAPO and SSPO fade it out smoothly;
2. an off-policy mini-batch (random log-ratios of growing spread) through every mode: loss and metrics.

    python -m sspo_verl.tools.demo
"""

from __future__ import annotations

import argparse
import logging

import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn

import sspo_verl  # noqa: F401  (also loaded by verl's entry point; explicit for readers)
from sspo_verl.loss.methods import METHODS
from sspo_verl.verl_on_cpu import harness

# the paper's baselines with their usual hyperparameters, by loss mode (sspo_verl.loss.methods)
BASELINES = {s["loss_mode"]: {k: v for k, v in s.items() if k not in ("loss_mode", "loss_agg_mode")}
             for s in (METHODS[m] for m in ("grpo_dapo", "gspo", "gmpo", "sapo"))}
SSPO_MODES = ["sspo", "sspo_sigmoid", "sspo_erf", "sspo_softsign"]


def actor_config(mode: str, agg: str = "seq-mean-token-mean", **overrides):
    """verl's FSDPActorConfig for `mode`, with the baseline's usual hyperparameters."""
    return harness.actor_config(mode, 8, 8, loss_agg_mode=agg, **{**BASELINES.get(mode, {}), **overrides})


def token_gradient_weight(mode: str, log_ratios: torch.Tensor, advantage: float) -> torch.Tensor:
    """-d loss / d log pi / A for single-token sequences with the given log-ratios: 1 means the plain PG."""
    n = log_ratios.numel()
    old = torch.full((n, 1), -1.0, dtype=torch.float64)
    log_prob = (old + log_ratios.view(n, 1)).requires_grad_(True)
    adv = torch.full((n, 1), advantage, dtype=torch.float64)
    loss, _ = get_policy_loss_fn(mode)(
        old_log_prob=old, log_prob=log_prob, advantages=adv, response_mask=torch.ones(n, 1, dtype=torch.bool),
        loss_agg_mode="seq-mean-token-mean", config=actor_config(mode), rollout_is_weights=None,
    )
    (grad,) = torch.autograd.grad(loss, log_prob)
    return (-grad.view(n) * n / advantage).float()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.getLogger("sspo_verl.loss.plugin").setLevel(logging.ERROR)  # the demo sets the aggregation on purpose
    modes = list(BASELINES) + SSPO_MODES

    ratios = torch.tensor([0.25, 0.5, 0.8, 1.0, 1.25, 1.5, 2.0, 4.0], dtype=torch.float64)
    for advantage in (1.0, -1.0):
        print(f"\nPer-token gradient weight (1 = plain policy gradient), single-token sequences, A = {advantage:+.0f}")
        print(f"{'ratio r':>12} " + " ".join(f"{r:>6.2f}" for r in ratios.tolist()))
        for mode in modes:
            w = token_gradient_weight(mode, ratios.log(), advantage)
            print(f"{mode:>12} " + " ".join(f"{v:>6.3f}" for v in w.tolist()))

    print("\nOff-policy mini-batch (64 sequences x 256 tokens, log-ratio spread grows with the row), via verl's loss contract")
    g = torch.Generator().manual_seed(args.seed)
    B, T = 64, 256
    old = -torch.rand(B, T, generator=g) * 4
    spread = torch.linspace(0.01, 1.0, B).unsqueeze(1)  # (B, 1) later mini-batches drift further
    log_prob = old + spread * torch.randn(B, T, generator=g)
    adv = torch.randn(B, 1, generator=g).expand(B, T)
    mask = torch.arange(T).unsqueeze(0) < torch.randint(16, T + 1, (B, 1), generator=g)
    keys = ["actor/ppo_kl", "actor/pg_clipfrac", "actor/sspo/token_w_mean", "actor/sspo/seq_s_min", "actor/sspo/seq_s_max"]
    print(f"{'mode':>12} {'loss':>9} {'grad norm':>10} " + " ".join(f"{k.split('/')[-1]:>14}" for k in keys))
    for mode in modes:
        lp = log_prob.clone().requires_grad_(True)
        loss, metrics = get_policy_loss_fn(mode)(
            old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask, loss_agg_mode="seq-mean-token-mean",
            config=actor_config(mode), rollout_is_weights=None,
        )
        loss.backward()
        cells = " ".join(f"{metrics[k]:>14.4f}" if k in metrics else f"{'-':>14}" for k in keys)
        print(f"{mode:>12} {loss.item():>9.4f} {lp.grad.norm().item():>10.5f} {cells}")
    print("\npg_clipfrac for SSPO modes: share of all valid tokens that have A > 0 and w < 0.5 (the gate passes less "
          "than half their gradient); pg_clipfrac_lower the same for A <= 0.")


if __name__ == "__main__":
    main()
