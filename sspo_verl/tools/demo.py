"""A short demonstration of the SSPO loss modes on real verl objects (`make demo`; the main job is the testbed).

It builds verl's own FSDPActorConfig for each loss mode, calls the registered policy-loss function the way
verl's `ppo_loss` does, and prints two things:

1. the per-token gradient factor -d loss / d log pi_t / A of a one-token response whose ratio r = pi_theta / pi_old
   moves away from 1, for a positive and a negative advantage. 1 is the plain policy gradient (on-policy, r = 1,
   every mode gives 1). The factor includes the importance weight, so it exceeds 1 where r > 1: PPO's unclipped
   factor is r itself (vanilla shows 1.25 at r = 1.25), and an SSPO mode's is s_i w, the sequence weight times the
   token weight, with s_i = g(r) for a one-token response (sspo_sigmoid at r = 4: s = 3.32, w = 0.64, 2.12).
   Hard clipping (vanilla, GMPO) cuts the factor to 0 past the clip edge, SAPO and SSPO fade it out smoothly;
   sspo_sapo equals sapo here (on one-token responses the two objectives coincide);
2. an off-policy mini-batch (random log-ratios of growing spread) through every mode: loss and metrics.

    python -m sspo_verl.tools.demo
"""

from __future__ import annotations

import logging
import sys

import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn

import sspo_verl  # noqa: F401  (also loaded by verl's entry point; explicit for readers)
from sspo_verl import cli
from sspo_verl.loss.methods import METHODS
from sspo_verl.verl_on_cpu import harness

# the paper's baselines with their usual hyperparameters, by loss mode (sspo_verl.loss.methods)
BASELINES = {s["loss_mode"]: {k: v for k, v in s.items() if k not in ("loss_mode", "loss_agg_mode")}
             for s in (METHODS[m] for m in ("grpo_dapo", "gspo", "gmpo", "sapo"))}
SSPO_MODES = ["sspo", "sspo_sigmoid", "sspo_erf", "sspo_softsign", "sspo_sapo"]
FACTOR_LABEL = ("Per-token gradient factor -d loss / d log pi / A, one-token responses (1 = the plain policy "
                "gradient; it includes the importance weight, so it exceeds 1 where r > 1: r for PPO's unclipped "
                "loss, s_i * w for SSPO's)")


def actor_config(mode: str, agg: str = "seq-mean-token-mean", **overrides):
    """verl's FSDPActorConfig for `mode`, with the baseline's usual hyperparameters."""
    return harness.actor_config(mode, 8, 8, loss_agg_mode=agg, **{**BASELINES.get(mode, {}), **overrides})


def token_gradient_factor(mode: str, log_ratios: torch.Tensor, advantage: float) -> torch.Tensor:
    """-d loss / d log pi / A for one-token responses with the given log-ratios: 1 means the plain policy gradient.
    For an SSPO mode it is s_i w (s_i = g(r) for one token); for vanilla inside its clip band it is r."""
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


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="python -m sspo_verl.tools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the off-policy mini-batch (default 0)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small tensors: more threads only contend on a loaded machine
    logging.getLogger("sspo_verl.loss.plugin").setLevel(logging.ERROR)  # the demo sets the aggregation on purpose
    modes = list(BASELINES) + SSPO_MODES

    ratios = torch.tensor([0.25, 0.5, 0.8, 1.0, 1.25, 1.5, 2.0, 4.0], dtype=torch.float64)
    for advantage in (1.0, -1.0):
        print(f"\n{FACTOR_LABEL}, A = {advantage:+.0f}")
        print(f"{'ratio r':>12} " + " ".join(f"{r:>6.2f}" for r in ratios.tolist()))
        for mode in modes:
            w = token_gradient_factor(mode, ratios.log(), advantage)
            print(f"{mode:>12} " + " ".join(f"{v + 0.0:>6.3f}" for v in w.tolist()))  # + 0.0: no "-0.000"

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
          "than half their gradient); pg_clipfrac_lower the same for A <= 0. token_w and seq_s are 1 on-policy for "
          "every SSPO mode (sspo_sapo's are normalized: w 2 / tau and s tau / 2, docs/METRICS.md).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
