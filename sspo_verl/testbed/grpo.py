"""GRPO-style RL on the arithmetic task, every update through verl's FSDP2 engine and `ppo_loss`.

One step of `GRPOTrainer`, as verl's trainer does it:
  1. rollout: G samples for each of P prompts from the current policy (a copy synced from the engine with
     verl's `get_per_tensor_param`, as verl syncs its rollout engine);
  2. reward from the verifier, group-normalized advantages from verl's `compute_grpo_outcome_advantage`;
  3. old log-probs (and entropy) recomputed by the engine, as verl's actor does;
  4. the batch split in order into M mini-batches, one optimizer step each: mini-batch k > 0 is trained by a
     policy that has already moved k times, the off-policy regime the losses differ in;
  5. the lr scheduler stepped once, as verl's worker does after a rollout batch (so lr warm-up works).

A step's record holds the drift of each mini-batch index (lists of M values, `DRIFT_KEYS`), besides averages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..tools.calibrate import weight_function
from ..loss.methods import actor_settings
from ..verl_on_cpu import harness as h
from . import policy as pol
from .arithmetic import ArithmeticTask


@dataclass(frozen=True)
class RLConfig:
    steps: int = 12  # rollout batches
    prompts: int = 16  # P prompts per rollout batch
    group_size: int = 8  # G samples per prompt
    mini_batches: int = 8  # M optimizer steps per rollout batch (M = 1: on-policy)
    lr: float = 1e-3
    warmup_steps: int = 0  # verl's linear lr warm-up, in rollout batches (lr 0 at the first one, as in verl)
    eval_every: int = 2  # held-out accuracy every this many steps (and at the end)
    heldout: int = 256  # problems in each held-out split (val and test), greedy decoding

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


def drift_metrics(model_output, data, soft_weight=None, tau_pos: float = 1.0, tau_neg: float = 1.0,
                  band: tuple[float, float] = (0.2, 0.28)) -> dict:
    """How far a mini-batch's policy has drifted from the rollout policy, per token (N tokens):

    abs_log_ratio       mean |log r|
    outside_clip_band   share of tokens a token clip with `band` = (eps_low, eps_high) cuts off: A > 0 and
                        r > 1 + eps_high, or A <= 0 and r < 1 - eps_low (the same yardstick for every method)
    w_below_half        share of tokens whose soft-gate weight soft_weight(log r, tau) is below 1/2
                        (soft methods only; tau = tau_pos where A > 0, else tau_neg)
    max_abs_log_ratio   the largest |log r| (0 exactly when the update is exactly on-policy)"""
    from verl.utils.metric import AggregationType, Metric
    from verl.workers.utils.padding import no_padding_2_padding

    log_prob = no_padding_2_padding(model_output["log_probs"], data).detach()  # (B, R)
    padded = data.select("response_mask", "old_log_probs", "advantages").to_padded_tensor()
    mask = padded["response_mask"].bool()  # (B, R)
    log_ratio = (log_prob - padded["old_log_probs"])[mask]  # (N,)
    positive = padded["advantages"][mask] > 0  # (N,)
    low, high = band
    outside = torch.where(positive, log_ratio > np.log1p(high), log_ratio < np.log1p(-low))
    mean = lambda x: float(x.float().mean()) if x.numel() else 0.0  # noqa: E731
    out = {"abs_log_ratio": mean(log_ratio.abs()), "outside_clip_band": mean(outside),
           "max_abs_log_ratio": float(log_ratio.abs().max()) if log_ratio.numel() else 0.0}
    if soft_weight is not None:
        tau = torch.where(positive, torch.full_like(log_ratio, tau_pos), torch.full_like(log_ratio, tau_neg))
        out["w_below_half"] = mean(soft_weight(log_ratio.double(), tau.double()) < 0.5)
    return {f"testbed/{k}": Metric(value=v, aggregation=AggregationType.MAX if k.startswith("max") else
                                   AggregationType.MEAN) for k, v in out.items()}


_RECORD_KEYS = {  # engine metric -> record key, averaged over the M mini-batch steps
    "actor/pg_loss": "pg_loss", "actor/ppo_kl": "ppo_kl", "actor/pg_clipfrac": "pg_clipfrac",
    "grad_norm": "grad_norm", "testbed/token_iw_var": "token_iw_var", "testbed/seq_iw_var": "seq_iw_var",
    "testbed/abs_log_ratio": "abs_log_ratio", "testbed/outside_clip_band": "outside_clip_band",
    "testbed/w_below_half": "w_below_half", "testbed/max_abs_log_ratio": "max_abs_log_ratio",
}  # note: mini-batch 0 is on-policy (variance 0) and is in the average, as it is in verl's own metrics
# kept per mini-batch index as well, record key "<key>_mb" (a list of M values): where in the step the drift grows
DRIFT_KEYS = ("abs_log_ratio", "ppo_kl", "pg_clipfrac", "w_below_half", "outside_clip_band")
CLIP_METHODS = ("vanilla", "gspo", "geo_mean")  # loss modes whose pg_clipfrac is a hard clip's


class _PhaseClock:
    """Seconds spent in each phase of a step (the testbed's profile: time_<phase> in every record)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = self.laps.get(phase, 0.0) + now - self._last
        self._last = now

    def total(self) -> float:
        return self._last - self._start


class GRPOTrainer:
    """One method, one seed: a verl engine started from the cold-start checkpoint, stepped by `step()`."""

    def __init__(self, method: str, seed: int, checkpoint: str | Path, task: ArithmeticTask, cfg: RLConfig,
                 device: str = "cpu", **method_overrides):
        self.method, self.seed, self.cfg, self.device = method, seed, cfg, device
        settings = actor_settings(method, **method_overrides)
        torch.manual_seed(seed)
        # foreach Adam: the same update as torch's per-tensor loop (bitwise, on CPU), 17% less time per optimizer step
        self.engine = h.make_engine(checkpoint, micro_batch_size=cfg.mini_batch_size, lr=cfg.lr,
                                    lr_warmup_steps=cfg.warmup_steps, total_training_steps=cfg.steps,
                                    optimizer_overrides={"foreach": True})
        loss_mode = settings.pop("loss_mode")
        self.actor_cfg = h.actor_config(loss_mode, cfg.mini_batch_size, cfg.mini_batch_size, **settings)
        self.rollout = pol.load_policy(checkpoint, device)
        self.tokenizer = self.engine.model_config.tokenizer
        self.prompt_len = task.max_prompt_chars
        self.response_len = task.response_len
        self.heldout = {split: task.heldout(cfg.heldout, split) for split in ("val", "test")}
        self.train_stream = task.problems(cfg.steps * cfg.prompts, seed=100 + seed)  # same prompts for every method
        self.samples = 0
        soft = "tau_pos" in settings
        weight = weight_function(loss_mode) if soft else None
        self._drift = partial(drift_metrics, soft_weight=weight, tau_pos=settings.get("tau_pos", 1.0),
                              tau_neg=settings.get("tau_neg", 1.0))
        self._hard_clip = loss_mode in CLIP_METHODS

    def evaluate(self, split: str = "val") -> float:
        """Greedy accuracy on the held-out `split` (val: where a sweep chooses, test: what it reports)."""
        return pol.accuracy(self.rollout, self.tokenizer, self.heldout[split], self.prompt_len, self.response_len)

    def _extra_metrics(self, model_output, data) -> dict:
        return {**importance_weight_metrics(model_output, data), **self._drift(model_output, data)}

    def step(self, k: int) -> dict:
        """Rollout batch k and its M updates. Returns the step's record (metrics averaged over mini-batches)."""
        cfg, tok = self.cfg, self.tokenizer
        clock = _PhaseClock()
        record = {"method": self.method, "seed": self.seed, "step": k, "lr": self._lr()}
        if k % cfg.eval_every == 0:
            record.update(val_acc=self.evaluate("val"), test_acc=self.evaluate("test"))
        clock.lap("eval")

        problems = [p for p in self.train_stream[k * cfg.prompts:(k + 1) * cfg.prompts] for _ in range(cfg.group_size)]
        prompts, prompt_mask = pol.encode_prompts(tok, problems, self.prompt_len)  # (B, P)
        # the sampling seed depends on (seed, step) only: every method sees the same first rollout batch
        gen = torch.Generator(self.device).manual_seed(1_000_003 * self.seed + k)
        responses, response_mask = pol.sample(self.rollout, prompts.to(self.device), prompt_mask.to(self.device),
                                              self.response_len, tok.eos_token_id, tok.pad_token_id, generator=gen)
        responses, response_mask = responses.cpu(), response_mask.cpu()  # (B, R)
        clock.lap("sample")
        scores = pol.rewards_of(tok, problems, responses, response_mask)  # (B,)
        advantages = self._advantages(scores, response_mask)  # (B, R)
        clock.lap("reward")

        attention = torch.cat([prompt_mask, response_mask], 1)  # (B, P + R)
        # the whole batch in one forward (verl sizes this pass by log_prob_micro_batch_size, apart from training's)
        td = h.make_batch(prompts, responses, attention, torch.zeros(responses.shape), advantages, len(problems))
        old_log_probs, entropy = (t.cpu() for t in h.policy_log_probs(self.engine, td, with_entropy=True))  # (B, R)
        mask = response_mask.bool()
        record.update(reward=scores.mean().item(), entropy=entropy[mask].mean().item(),
                      response_len=response_mask.sum(1).float().mean().item())
        clock.lap("old_log_prob")

        per_mb: dict[str, list[float]] = {}
        mb = cfg.mini_batch_size
        # in order, as verl's actor splits a batch (actor.shuffle=False); verl's trainer may first reorder the batch
        # by length (trainer.balance_batch), which the testbed, with its short responses, does not
        for m in range(cfg.mini_batches):
            rows = slice(m * mb, (m + 1) * mb)
            mini = h.make_batch(prompts[rows], responses[rows], attention[rows], old_log_probs[rows],
                                advantages[rows], mb)
            out = h.train_step(self.engine, mini, self.actor_cfg, extra_metrics=self._extra_metrics)
            for name, metric in out["metrics"].items():
                key = _RECORD_KEYS.get(name) or (name.removeprefix("actor/") if name.startswith("actor/sspo/") else None)
                if key is not None:
                    per_mb.setdefault(key, []).append(_value(metric))
        clock.lap("update")
        if not self._hard_clip:
            per_mb.pop("pg_clipfrac", None)  # sapo and sspo report 0: they have no hard clip
        record.update({key: float(np.mean(v)) for key, v in per_mb.items()})
        record["max_abs_log_ratio"] = max(per_mb["max_abs_log_ratio"])
        record.update({f"{key}_mb": per_mb[key] for key in DRIFT_KEYS if key in per_mb})
        self.engine.lr_scheduler_step()  # once per rollout batch, as verl's worker does
        self._sync_rollout()
        clock.lap("sync")
        self.samples += len(problems)
        record.update(samples=self.samples, time_s=clock.total(), **{f"time_{k}": v for k, v in clock.laps.items()})
        return record

    def final_record(self) -> dict:
        """The held-out accuracies after the last step."""
        return {"method": self.method, "seed": self.seed, "step": self.cfg.steps, "samples": self.samples,
                "val_acc": self.evaluate("val"), "test_acc": self.evaluate("test")}

    def _lr(self) -> float:
        """The lr this rollout batch's updates use (the scheduler's current value)."""
        return float(self.engine.optimizer.param_groups[0]["lr"])

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
