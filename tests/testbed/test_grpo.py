"""The testbed's RL step through verl's engine: on-policy equivalence (M = 1), off-policy drift (M > 1), advantages."""

import math

import pytest
import torch

from sspo_verl.verl_on_cpu import harness as h
from sspo_verl.testbed import policy as pol
from sspo_verl.testbed.arithmetic import ArithmeticTask, build_tokenizer
from sspo_verl.testbed.grpo import GRPOTrainer, RLConfig, _value

pytestmark = pytest.mark.slow
TASK = ArithmeticTask(n_operands=2, max_operand=9)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A cold start that is right some of the time, so groups have mixed rewards."""
    h.use_cpu_platform()
    h.init_single_process_group()
    path = tmp_path_factory.mktemp("sft")
    tok = build_tokenizer()
    model = pol.load_policy(pol.make_policy(path, tok, "small", seed=0))
    pol.cold_start(model, tok, TASK, steps=60, batch_size=48, lr=3e-3, seed=0,
                   prompt_len=TASK.max_prompt_chars, response_len=TASK.response_len)
    model.save_pretrained(path)
    return path


def _first_update(checkpoint, method, mini_batches):
    cfg = RLConfig(steps=1, prompts=8, group_size=4, mini_batches=mini_batches, lr=1e-3, eval_every=10, heldout=8)
    trainer = GRPOTrainer(method, 0, checkpoint, TASK, cfg)
    before = trainer.parameters()
    record = trainer.step(0)
    return record, trainer.parameters() - before


def test_on_policy_soft_and_hard_losses_give_the_same_first_update(checkpoint):
    """M = 1: every ratio is 1, so clipping and gates are inactive and every paper-aggregated loss is the plain
    policy gradient. Adam's first step moves each weight by about lr * sign(g): one flipped sign shows as 2e-3."""
    ref_record, ref_update = _first_update(checkpoint, "gspo", 1)
    assert 0 < ref_record["reward"] < 1 and ref_record["grad_norm"] > 0  # mixed groups: a real gradient
    assert ref_record["ppo_kl"] == pytest.approx(0, abs=1e-6) and ref_record["token_iw_var"] < 1e-10
    for method in ["gmpo", "sapo", "sspo", "sspo_erf", "sspo_softsign"]:
        record, update = _first_update(checkpoint, method, 1)
        assert record["reward"] == ref_record["reward"]  # the same rollout batch
        assert record["grad_norm"] == pytest.approx(ref_record["grad_norm"], rel=1e-5), method
        torch.testing.assert_close(update, ref_update, rtol=0, atol=2e-5, msg=method)
    # token-mean methods agree with each other (clip-higher is inactive at r = 1 too)
    _, grpo = _first_update(checkpoint, "grpo", 1)
    _, dapo = _first_update(checkpoint, "grpo_dapo", 1)
    torch.testing.assert_close(grpo, dapo, rtol=0, atol=2e-5)


def test_mini_batches_make_later_updates_off_policy(checkpoint):
    record, _ = _first_update(checkpoint, "sspo", 4)
    assert record["token_iw_var"] > 1e-6 and record["seq_iw_var"] > 0
    assert 0 < record["sspo/token_w_mean"] <= 1 and record["sspo/seq_s_min"] > 0


def test_advantages_are_group_normalized(checkpoint):
    cfg = RLConfig(steps=1, prompts=2, group_size=4, mini_batches=1, heldout=8)
    trainer = GRPOTrainer("sspo", 0, checkpoint, TASK, cfg)
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    mask = torch.zeros(8, 5)
    mask[:, :3] = 1
    adv = trainer._advantages(scores, mask)  # (8, 5)
    assert (adv[:, 3:] == 0).all()
    first = adv[:4, 0]
    assert first[0] > 0 and (first[1:] < 0).all() and first.sum().abs() < 1e-5  # (x - mean) / std in its group
    assert first[0] == pytest.approx(0.75 / 0.5, rel=1e-4)  # std of [1, 0, 0, 0] (unbiased) is 0.5
    assert (adv[4:] == 0).all()  # a group that is all right carries no signal


def test_lr_warmup_follows_the_scheduler_once_per_rollout_batch(checkpoint):
    """verl's warm-up starts at lr 0 and its worker steps the scheduler after each rollout batch; a loop that never
    steps it trains at lr 0 for ever (the testbed did, before it called lr_scheduler_step)."""
    cfg = RLConfig(steps=3, prompts=8, group_size=4, mini_batches=2, lr=1e-3, warmup_steps=2, eval_every=10, heldout=8)
    trainer = GRPOTrainer("grpo_dapo", 0, checkpoint, TASK, cfg)
    lrs, moved = [], []
    for k in range(3):
        before = trainer.parameters()
        lrs.append(trainer.step(k)["lr"])
        moved.append((trainer.parameters() - before).abs().max().item())
    assert lrs == [0.0, pytest.approx(5e-4), pytest.approx(1e-3)]
    assert moved[0] == 0.0 and moved[1] > 0 and moved[2] > 0


def test_records_keep_drift_per_mini_batch_index(checkpoint):
    record, _ = _first_update(checkpoint, "grpo_dapo", 4)
    for key in ("abs_log_ratio", "ppo_kl", "pg_clipfrac", "outside_clip_band"):
        assert len(record[f"{key}_mb"]) == 4, key
    assert record["abs_log_ratio_mb"][0] == 0.0 and record["abs_log_ratio_mb"][3] > 0  # k = 0 is on-policy
    assert "w_below_half_mb" not in record
    soft, _ = _first_update(checkpoint, "sspo_erf", 4)
    assert len(soft["w_below_half_mb"]) == 4 and "pg_clipfrac_mb" not in soft and "pg_clipfrac" not in soft
    assert {"val_acc", "test_acc", "lr"} <= set(record)


def test_drift_metrics_measure_known_log_ratios(checkpoint):
    """Old log-probs set to the policy's own minus a known offset delta: verl's engine then sees log r = delta, and
    the drift metrics must equal the hand-computed shares."""
    from functools import partial

    from sspo_verl.loss.gates import GATES
    from sspo_verl.testbed.grpo import drift_metrics, importance_weight_metrics

    tok = build_tokenizer()
    problems = TASK.problems(16, seed=5)
    prompts, prompt_mask = pol.encode_prompts(tok, problems, TASK.max_prompt_chars)
    responses, response_mask = pol.sample(pol.load_policy(checkpoint), prompts, prompt_mask, TASK.response_len,
                                          tok.eos_token_id, tok.pad_token_id, generator=torch.Generator().manual_seed(0))
    attention = torch.cat([prompt_mask, response_mask], 1)
    adv = torch.tensor([1.0, -1.0] * 8)[:, None].expand_as(response_mask).contiguous()  # (16, R)
    engine = h.make_engine(checkpoint, micro_batch_size=16, lr=0.0)
    td = h.make_batch(prompts, responses, attention, torch.zeros(responses.shape), adv, 16)
    current = h.policy_log_probs(engine, td)  # (16, R)
    delta = torch.tensor([0.0, 0.3, 0.3, -0.1, 0.1, -0.5, 0.5, 0.2])[torch.arange(16) % 8][:, None]
    delta = delta.expand_as(current) * response_mask  # (16, R): log r per token, 0 at padding
    td = h.make_batch(prompts, responses, attention, current - delta, adv, 16)
    # no token at tau |log r| = 1 exactly, where w = 1/2 and rounding would decide (tau_neg 5 with delta 0.2 did)
    extra = partial(drift_metrics, soft_weight=GATES["arctan"].weight, tau_pos=4.0, tau_neg=4.5)
    metrics = h.train_step(engine, td, h.actor_config("vanilla", 16, 16),
                           extra_metrics=lambda o, d: {**extra(o, d), **importance_weight_metrics(o, d)})["metrics"]
    value = lambda name: _value(metrics[name])  # noqa: E731
    mask = response_mask.bool()
    x, pos = delta[mask], adv[mask] > 0
    outside = torch.where(pos, x > math.log(1.28), x < math.log(0.8))
    w = GATES["arctan"].weight(x, torch.where(pos, torch.tensor(4.0), torch.tensor(4.5)))
    assert value("testbed/abs_log_ratio") == pytest.approx(x.abs().mean().item(), abs=1e-5)
    assert value("testbed/outside_clip_band") == pytest.approx(outside.float().mean().item(), abs=1e-6)
    assert value("testbed/w_below_half") == pytest.approx((w < 0.5).float().mean().item(), abs=1e-6)
    assert value("testbed/max_abs_log_ratio") == pytest.approx(0.5, abs=1e-5)
    assert 0 < outside.float().mean() < (w < 0.5).float().mean() < 1  # the cases differ: the check can fail


@pytest.mark.parametrize("method, knobs", [
    ("grpo_dapo", [dict(clip_ratio_low=0.1, clip_ratio_high=0.14), dict(clip_ratio_low=0.4, clip_ratio_high=0.56)]),
    ("gspo", [dict(clip_ratio_low=1e-4, clip_ratio_high=1e-4), dict(clip_ratio_low=1e-2, clip_ratio_high=1e-2)]),
    ("gmpo", [dict(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.2),
              dict(clip_ratio=0.8, clip_ratio_low=0.8, clip_ratio_high=0.8)]),
    ("sspo_softsign", [dict(tau_pos=1.0, tau_neg=1.05), dict(tau_pos=8.0, tau_neg=9.0)]),
])
def test_at_m1_the_knob_cannot_change_the_run(checkpoint, method, knobs):
    """The sweep's premise for sharing M = 1 runs across knobs: every ratio is exactly 1 (log r = 0.0, not 1e-8),
    so the whole run is bitwise the same for any clip range or SSPO temperature."""
    cfg = RLConfig(steps=2, prompts=8, group_size=4, mini_batches=1, lr=1e-3, eval_every=10, heldout=8)
    runs = []
    for knob in knobs:
        trainer = GRPOTrainer(method, 0, checkpoint, TASK, cfg, **knob)
        records = [trainer.step(k) for k in range(2)]
        assert all(r["max_abs_log_ratio"] == 0.0 for r in records)
        runs.append((trainer.parameters(), [r["grad_norm"] for r in records]))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
