"""The testbed's RL step through verl's engine: on-policy equivalence (M = 1), off-policy drift (M > 1), advantages."""

import pytest
import torch

from sspo_verl.testbed import cpu_harness as h
from sspo_verl.testbed import policy as pol
from sspo_verl.testbed.arithmetic import ArithmeticTask, build_tokenizer
from sspo_verl.testbed.grpo import GRPOTrainer, RLConfig

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
    cfg = RLConfig(steps=1, prompts=2, group_size=4, mini_batches=1)
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
