"""The SSPO loss on plain tensors: the reference function, then verl's registered loss mode, which must agree.

    python examples/loss_on_tensors.py
"""

import torch
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import FSDPActorConfig, PolicyLossConfig

import sspo_verl

torch.set_printoptions(precision=4, sci_mode=False)
B, T, TAU_POS, TAU_NEG, AGG = 3, 4, 1.0, 1.05, "seq-mean-token-mean"  # AGG: the paper's eq. 10
g = torch.Generator().manual_seed(0)
mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)  # (B, T) right-padded responses
old_log_prob = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3  # (B, T) log pi_old, from the rollout
log_prob = (old_log_prob + torch.randn(B, T, generator=g, dtype=torch.float64)).requires_grad_()  # (B, T) log pi
advantages = torch.tensor([[1.0], [-0.5], [2.0]], dtype=torch.float64).expand(B, T)  # (B, T) one A per response (GRPO)


def reference(log_prob):
    """sspo_token_loss gives the per-token surrogate (B, T); the seq-mean-token-mean average is ours to take."""
    gate = sspo_verl.get_gate("arctan")  # the gate of loss mode `sspo`
    loss_mat, stats = sspo_verl.sspo_token_loss(log_prob, old_log_prob, advantages, mask, gate, TAU_POS, TAU_NEG)
    per_seq = (loss_mat * mask).sum(-1) / mask.sum(-1)  # (B,) token-mean within each response
    return per_seq.mean(), stats  # value -1/N sum_i s_i A_i


loss, stats = reference(log_prob)
(grad,) = torch.autograd.grad(loss, log_prob)  # (B, T) d loss / d log pi, 0 at padding
print("reference loss", f"{loss.item():.6f}")
print("stats", {k: round(v, 4) for k, v in stats.as_floats().items()})  # s_i: sequence weights, w: token gates
print("gradient\n", grad)

# verl's actor calls the registered mode by keyword, with a bool mask and its ActorConfig; verl's engine fills
# global_batch_info so that the loss is the same under any micro-batch split and data-parallel size. The mode
# runs the fused implementation (one autograd function; SSPO_VERL_IMPL=reference switches), same math.
config = FSDPActorConfig(strategy="fsdp2", rollout_n=1, ppo_mini_batch_size=B, ppo_micro_batch_size_per_gpu=B,
                         use_torch_compile=False, policy_loss=PolicyLossConfig(loss_mode="sspo"),
                         loss_agg_mode=AGG, tau_pos=TAU_POS, tau_neg=TAU_NEG)
config.global_batch_info.update(dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=B)
verl_loss, metrics = get_policy_loss_fn("sspo")(
    old_log_prob=old_log_prob, log_prob=log_prob, advantages=advantages, response_mask=mask,
    loss_agg_mode=AGG, config=config, rollout_is_weights=None)
(verl_grad,) = torch.autograd.grad(verl_loss, log_prob)
print("verl registry loss", f"{verl_loss.item():.6f}", "metrics:", {k: round(v, 4) for k, v in metrics.items()})
torch.testing.assert_close(verl_loss, loss, rtol=1e-6, atol=1e-9)  # verl's agg_loss adds 1e-8 to the lengths
torch.testing.assert_close(verl_grad, grad, rtol=1e-6, atol=1e-9)
print("reference == verl registry: loss and gradient agree")

# On-policy (log pi = log pi_old, r = 1) every gate is open, w = s = 1: SSPO is the plain policy gradient,
# whose surrogate -A * log pi has the gradient -A / (N |y_i|) per valid token.
on_policy = old_log_prob.clone().requires_grad_()
on_loss, on_stats = reference(on_policy)
(on_grad,) = torch.autograd.grad(on_loss, on_policy)
pg = (-(advantages * on_policy * mask).sum(-1) / mask.sum(-1)).mean()  # plain policy-gradient surrogate
(pg_grad,) = torch.autograd.grad(pg, on_policy)
assert on_stats.as_floats()["s_min"] == on_stats.as_floats()["s_max"] == 1.0
torch.testing.assert_close(on_grad, pg_grad)
print(f"on-policy: loss {on_loss.item():.6f} = -mean(A) {-advantages[:, 0].mean().item():.6f}; gradient == plain "
      f"policy gradient\n", on_grad)
