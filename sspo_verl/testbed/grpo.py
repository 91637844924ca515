"""GRPO-style RL on the arithmetic task, every update through verl's FSDP2 engine and `ppo_loss`.

One step of `GRPOTrainer`, as verl's trainer does it:
  1. rollout: G samples for each of P prompts from the current policy (a copy synced from the engine with
     verl's `get_per_tensor_param`, as verl syncs its rollout engine);
  2. reward from the verifier, group-normalized advantages from verl's `compute_grpo_outcome_advantage`;
  3. old log-probs (and entropy) recomputed by the engine, as verl's actor does;
  4. the batch split in order into M mini-batches, one optimizer step each: mini-batch k > 0 is trained by a
     policy that has already moved k times, the off-policy regime the losses differ in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..methods import actor_settings
from . import cpu_harness as h
from . import policy as pol
from .arithmetic import ArithmeticTask


@dataclass(frozen=True)
class RLConfig:
    steps: int = 12  # rollout batches
    prompts: int = 16  # P prompts per rollout batch
    group_size: int = 8  # G samples per prompt
    mini_batches: int = 8  # M optimizer steps per rollout batch (M = 1: on-policy)
    lr: float = 1e-3
    eval_every: int = 2  # held-out accuracy every this many steps (and at the end)
    heldout: int = 256  # held-out problems, greedy decoding

    def __post_init__(self):
        if self.mini_batches < 1 or self.prompts % self.mini_batches:
            # verl counts ppo_mini_batch_size in prompts: a group is never split across mini-batches
            raise ValueError(f"mini_batches={self.mini_batches} must divide prompts={self.prompts} (a mini-batch holds "
                             f"whole groups of {self.group_size} samples)")
        if self.group_size < 2:
            raise ValueError(f"group_size={self.group_size}: GRPO needs at least 2 samples per prompt")

    @property
    def mini_batch_size(self) -> int:
        return self.prompts * self.group_size // self.mini_batches


def _value(metric) -> float:
    """A metric from the engine's output (a verl Metric, a list over micro-batches, or a number) as a float."""
    if hasattr(metric, "aggregate"):
        metric = metric.aggregate()
    if isinstance(metric, (list, tuple)):
        metric = float(np.mean([_value(m) for m in metric]))
    return float(metric.item() if hasattr(metric, "item") else metric)


def importance_weight_metrics(model_output, data) -> dict:
    """Variance of token ratios r_t = pi/pi_old and of sequence ratios exp(mean_t log r_t) in a micro-batch."""
    from verl.utils.metric import AggregationType, Metric
    from verl.workers.utils.padding import no_padding_2_padding

    log_prob = no_padding_2_padding(model_output["log_probs"], data).detach()  # (B, R)
    padded = data.select("response_mask", "old_log_probs").to_padded_tensor()
    mask = padded["response_mask"].bool()  # (B, R)
    log_ratio = (log_prob - padded["old_log_probs"]).masked_fill(~mask, 0.0)  # (B, R)
    token_ratio = log_ratio[mask].exp()  # (N,)
    seq_ratio = (log_ratio.sum(1) / mask.sum(1).clamp(min=1))[mask.any(1)].exp()  # (B',)
    var = lambda x: float(x.var(unbiased=False)) if x.numel() > 1 else 0.0  # noqa: E731
    return {"testbed/token_iw_var": Metric(value=var(token_ratio), aggregation=AggregationType.MEAN),
            "testbed/seq_iw_var": Metric(value=var(seq_ratio), aggregation=AggregationType.MEAN)}


_RECORD_KEYS = {  # engine metric -> record key, averaged over the M mini-batch steps
    "actor/pg_loss": "pg_loss", "actor/ppo_kl": "ppo_kl", "actor/pg_clipfrac": "pg_clipfrac",
    "grad_norm": "grad_norm", "testbed/token_iw_var": "token_iw_var", "testbed/seq_iw_var": "seq_iw_var",
}  # note: mini-batch 0 is on-policy (variance 0) and is in the average, as it is in verl's own metrics


class GRPOTrainer:
    """One method, one seed: a verl engine started from the cold-start checkpoint, stepped by `step()`."""

    def __init__(self, method: str, seed: int, checkpoint: str | Path, task: ArithmeticTask, cfg: RLConfig,
                 device: str = "cpu", **method_overrides):
        self.method, self.seed, self.cfg, self.device = method, seed, cfg, device
        settings = actor_settings(method, **method_overrides)
        torch.manual_seed(seed)
        self.engine = h.make_engine(checkpoint, micro_batch_size=cfg.mini_batch_size, lr=cfg.lr)
        self.actor_cfg = h.actor_config(settings.pop("loss_mode"), cfg.mini_batch_size, cfg.mini_batch_size,
                                        **settings)
        self.rollout = pol.load_policy(checkpoint, device)
        self.tokenizer = self.engine.model_config.tokenizer
        self.prompt_len = task.max_prompt_chars
        self.response_len = task.response_len
        self.heldout = task.heldout(cfg.heldout)
        self.train_stream = task.problems(cfg.steps * cfg.prompts, seed=100 + seed)  # same prompts for every method
        self.samples = 0

    def evaluate(self) -> float:
        return pol.accuracy(self.rollout, self.tokenizer, self.heldout, self.prompt_len, self.response_len)

    def step(self, k: int) -> dict:
        """Rollout batch k and its M updates. Returns the step's record (metrics averaged over mini-batches)."""
        cfg, tok = self.cfg, self.tokenizer
        t0 = time.perf_counter()
        record = {"method": self.method, "seed": self.seed, "step": k}
        if k % cfg.eval_every == 0:
            record["val_acc"] = self.evaluate()

        problems = [p for p in self.train_stream[k * cfg.prompts:(k + 1) * cfg.prompts] for _ in range(cfg.group_size)]
        prompts, prompt_mask = pol.encode_prompts(tok, problems, self.prompt_len)  # (B, P)
        # the sampling seed depends on (seed, step) only: every method sees the same first rollout batch
        gen = torch.Generator(self.device).manual_seed(1_000_003 * self.seed + k)
        responses, response_mask = pol.sample(self.rollout, prompts.to(self.device), prompt_mask.to(self.device),
                                              self.response_len, tok.eos_token_id, tok.pad_token_id, generator=gen)
        responses, response_mask = responses.cpu(), response_mask.cpu()  # (B, R)
        scores = pol.rewards_of(tok, problems, responses, response_mask)  # (B,)
        advantages = self._advantages(scores, response_mask)  # (B, R)

        attention = torch.cat([prompt_mask, response_mask], 1)  # (B, P + R)
        td = h.make_batch(prompts, responses, attention, torch.zeros(responses.shape), advantages,
                          cfg.mini_batch_size)
        old_log_probs, entropy = (t.cpu() for t in h.policy_log_probs(self.engine, td, with_entropy=True))  # (B, R)
        mask = response_mask.bool()
        record.update(reward=scores.mean().item(), entropy=entropy[mask].mean().item(),
                      response_len=response_mask.sum(1).float().mean().item())

        sums: dict[str, float] = {}
        mb = cfg.mini_batch_size
        # in order, as verl's actor splits a batch (actor.shuffle=False); verl's trainer may first reorder the batch
        # by length (trainer.balance_batch), which the testbed, with its short responses, does not
        for m in range(cfg.mini_batches):
            rows = slice(m * mb, (m + 1) * mb)
            mini = h.make_batch(prompts[rows], responses[rows], attention[rows], old_log_probs[rows],
                                advantages[rows], mb)
            out = h.train_step(self.engine, mini, self.actor_cfg, extra_metrics=importance_weight_metrics)
            for name, metric in out["metrics"].items():
                key = _RECORD_KEYS.get(name) or (name.removeprefix("actor/") if name.startswith("actor/sspo/") else None)
                if key is not None:
                    sums[key] = sums.get(key, 0.0) + _value(metric)
        record.update({key: total / cfg.mini_batches for key, total in sums.items()})
        self._sync_rollout()
        self.samples += len(problems)
        record.update(samples=self.samples, time_s=time.perf_counter() - t0)
        return record

    def final_record(self) -> dict:
        """The held-out accuracy after the last step."""
        return {"method": self.method, "seed": self.seed, "step": self.cfg.steps, "samples": self.samples,
                "val_acc": self.evaluate()}

    def parameters(self) -> torch.Tensor:
        """The engine's weights as one flat vector (for tests)."""
        gen, _ = self.engine.get_per_tensor_param()
        return torch.cat([t.detach().float().reshape(-1).cpu() for _, t in gen])

    def _advantages(self, scores: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

        token_rewards = torch.zeros(response_mask.shape)
        last = response_mask.sum(1).long() - 1  # (B,) index of each response's last token
        token_rewards[torch.arange(len(scores)), last] = scores
        group = np.repeat(np.arange(self.cfg.prompts), self.cfg.group_size)  # uid of each sample's prompt
        advantages, _ = compute_grpo_outcome_advantage(token_rewards, response_mask.float(), group)
        return advantages  # (B, R)

    def _sync_rollout(self) -> None:
        """Load the engine's current weights into the rollout copy (verl's actor -> rollout weight sync)."""
        gen, _ = self.engine.get_per_tensor_param()
        self.rollout.load_state_dict({name: t.to(self.device) for name, t in gen})
